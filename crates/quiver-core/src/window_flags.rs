//! Window functions keep `IGNORE NULLS` and their direction on the way to
//! the executors.
//!
//! DataFusion's plan format drops two flags of a window function
//! (`first_value`, `last_value`, `nth_value`, `lag`, `lead`):
//!
//! * `IGNORE NULLS`: an executor decoding `last_value(x) IGNORE NULLS OVER
//!   (...)` ran `last_value(x)`, so a Spark user's forward fill
//!   (`last(x, ignoreNulls = true)`) gave NULLs back.
//! * Its reversal: to share one sort between `OVER (ORDER BY n)` and `OVER
//!   (ORDER BY n DESC)`, DataFusion evaluates one of them backwards, `lead`
//!   as a reversed `lag`, `nth_value(x, 2)` counting from the frame's end.
//!   Decoded without the flag, `lead(x, 1)` answered `lag(x, 1)`.
//!
//! Before the scheduler plans a job, [`carry_window_flags`] wraps each such
//! function in [`FlaggedWindow`], a window function of the same name that
//! holds both flags itself and hands them to the function it wraps; reversing
//! it reverses the flag with it. It travels as a function of its own in the
//! plan codec ([`crate::codec`]), so the executors evaluate what the client
//! asked for.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> datafusion::common::Result<()> {
//! use datafusion::prelude::SessionContext;
//! use quiver_core::window_flags::carry_window_flags;
//!
//! let ctx = SessionContext::new();
//! let sql = "SELECT last_value(x) IGNORE NULLS OVER (ORDER BY n) FROM (VALUES (1, 7), (2, NULL)) t(n, x)";
//! let plan = ctx.sql(sql).await?.into_optimized_plan()?;
//! let carried = carry_window_flags(plan.clone())?;
//! assert_eq!(carried.schema(), plan.schema());
//! assert_ne!(carried, plan);
//! # Ok(())
//! # }
//! ```

use std::sync::Arc;

use arrow::compute::SortOptions;
use arrow::datatypes::{DataType, FieldRef};
use datafusion::common::Result;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::functions_window::all_default_window_functions;
use datafusion::logical_expr::expr::{NullTreatment, WindowFunction};
use datafusion::logical_expr::function::{PartitionEvaluatorArgs, WindowUDFFieldArgs};
use datafusion::logical_expr::{
    Expr, LimitEffect, LogicalPlan, PartitionEvaluator, ReversedUDWF, Signature, Window, WindowFunctionDefinition,
    WindowUDF, WindowUDFImpl,
};
use datafusion::physical_expr::PhysicalExpr;

/// A window function with the flags the plan format drops: `inner`, with
/// `IGNORE NULLS` or not, evaluated backwards or not, under `inner`'s name.
/// See the [module docs](self).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct FlaggedWindow {
    inner: Arc<WindowUDF>,
    ignore_nulls: bool,
    reversed: bool,
}

impl FlaggedWindow {
    /// `inner` with these flags.
    pub fn new(inner: Arc<WindowUDF>, ignore_nulls: bool, reversed: bool) -> Self {
        Self {
            inner,
            ignore_nulls,
            reversed,
        }
    }

    /// The function it runs.
    pub fn inner(&self) -> &Arc<WindowUDF> {
        &self.inner
    }

    /// Whether it ignores NULLs.
    pub fn ignore_nulls(&self) -> bool {
        self.ignore_nulls
    }

    /// Whether it is evaluated backwards.
    pub fn reversed(&self) -> bool {
        self.reversed
    }

    fn wrapped(inner: Arc<WindowUDF>, ignore_nulls: bool, reversed: bool) -> Arc<WindowUDF> {
        Arc::new(WindowUDF::new_from_impl(Self::new(inner, ignore_nulls, reversed)))
    }
}

impl WindowUDFImpl for FlaggedWindow {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn expressions(&self, expr_args: datafusion::logical_expr::function::ExpressionArgs) -> Vec<Arc<dyn PhysicalExpr>> {
        self.inner.expressions(expr_args)
    }

    /// `inner`'s evaluator with the flags held here: DataFusion's own are
    /// lost once the plan is decoded on an executor.
    fn partition_evaluator(&self, args: PartitionEvaluatorArgs) -> Result<Box<dyn PartitionEvaluator>> {
        self.inner.partition_evaluator_factory(PartitionEvaluatorArgs::new(
            args.input_exprs(),
            args.input_fields(),
            self.reversed,
            self.ignore_nulls || args.ignore_nulls(),
        ))
    }

    fn field(&self, field_args: WindowUDFFieldArgs) -> Result<FieldRef> {
        self.inner.field(field_args)
    }

    fn sort_options(&self) -> Option<SortOptions> {
        self.inner.sort_options()
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    /// The reverse of `lead` is a reversed `lag`: DataFusion turns its own
    /// flag over at the same time.
    fn reverse_expr(&self) -> ReversedUDWF {
        match self.inner.reverse_expr() {
            ReversedUDWF::Reversed(reversed) => {
                ReversedUDWF::Reversed(Self::wrapped(reversed, self.ignore_nulls, !self.reversed))
            }
            other => other,
        }
    }

    fn limit_effect(&self, args: &[Arc<dyn PhysicalExpr>]) -> LimitEffect {
        self.inner.inner().limit_effect(args)
    }
}

/// DataFusion's window function `name` (or one of its aliases), for a
/// wrapped function that travelled by name.
pub fn builtin(name: &str) -> Option<Arc<WindowUDF>> {
    all_default_window_functions()
        .into_iter()
        .find(|f| f.name() == name || f.aliases().iter().any(|a| a == name))
}

/// `plan` with every window function that ignores NULLs or can be
/// evaluated backwards wrapped in a [`FlaggedWindow`]; the plan's columns
/// and names stay as they were.
pub fn carry_window_flags(plan: LogicalPlan) -> Result<LogicalPlan> {
    plan.transform_up_with_subqueries(|node| {
        let LogicalPlan::Window(window) = &node else {
            return Ok(Transformed::no(node));
        };
        let mut changed = false;
        let exprs = window
            .window_expr
            .iter()
            .map(|expr| {
                expr.clone()
                    .transform_up(|e| match e {
                        Expr::WindowFunction(mut function) => match flagged(&function) {
                            Some(wrapped) => {
                                function.fun = WindowFunctionDefinition::WindowUDF(wrapped);
                                changed = true;
                                Ok(Transformed::yes(Expr::WindowFunction(function)))
                            }
                            None => Ok(Transformed::no(Expr::WindowFunction(function))),
                        },
                        other => Ok(Transformed::no(other)),
                    })
                    .map(|t| t.data)
            })
            .collect::<Result<Vec<_>>>()?;
        if !changed {
            return Ok(Transformed::no(node));
        }
        let rewritten = Window::try_new_with_schema(exprs, Arc::clone(&window.input), Arc::clone(&window.schema))?;
        Ok(Transformed::yes(LogicalPlan::Window(rewritten)))
    })
    .map(|t| t.data)
}

/// `function` wrapped, when it is a window function (not an aggregate, whose
/// flags travel) that ignores NULLs or can be reversed and is not wrapped yet.
fn flagged(function: &WindowFunction) -> Option<Arc<WindowUDF>> {
    let WindowFunctionDefinition::WindowUDF(udwf) = &function.fun else {
        return None;
    };
    if udwf.inner().downcast_ref::<FlaggedWindow>().is_some() {
        return None;
    }
    let ignore_nulls = function.params.null_treatment == Some(NullTreatment::IgnoreNulls);
    let reversible = matches!(udwf.reverse_expr(), ReversedUDWF::Reversed(_));
    (ignore_nulls || reversible).then(|| FlaggedWindow::wrapped(Arc::clone(udwf), ignore_nulls, false))
}

#[cfg(test)]
mod tests {
    use datafusion::common::tree_node::TreeNodeRecursion;
    use datafusion::prelude::SessionContext;

    use super::*;

    /// The window functions of `plan` by name, and whether each is wrapped.
    fn functions(plan: &LogicalPlan) -> Vec<(String, bool)> {
        let mut found = Vec::new();
        plan.apply(|node| {
            if let LogicalPlan::Window(w) = node {
                for e in &w.window_expr {
                    e.apply(|e| {
                        if let Expr::WindowFunction(f) = e
                            && let WindowFunctionDefinition::WindowUDF(u) = &f.fun
                        {
                            found.push((u.name().to_owned(), u.inner().downcast_ref::<FlaggedWindow>().is_some()));
                        }
                        Ok(TreeNodeRecursion::Continue)
                    })?;
                }
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .unwrap();
        found.sort();
        found
    }

    #[tokio::test]
    async fn reversible_and_null_ignoring_functions_are_wrapped_and_answer_alike() {
        let ctx = SessionContext::new();
        let sql = "SELECT n, last_value(x) IGNORE NULLS OVER (ORDER BY n) AS filled,
                          first_value(x) IGNORE NULLS OVER (ORDER BY n ROWS BETWEEN CURRENT ROW AND UNBOUNDED FOLLOWING) AS next,
                          lead(x, 1) OVER (ORDER BY n DESC) AS before,
                          row_number() OVER (ORDER BY n) AS r
                   FROM (VALUES (1, 7), (2, NULL), (3, NULL), (4, 9), (5, NULL)) t(n, x) ORDER BY n";
        let df = ctx.sql(sql).await.unwrap();
        let expected = arrow::util::pretty::pretty_format_batches(&df.clone().collect().await.unwrap())
            .unwrap()
            .to_string();
        let plan = carry_window_flags(df.into_optimized_plan().unwrap()).unwrap();
        assert_eq!(
            functions(&plan),
            [
                ("first_value".to_owned(), true),
                ("last_value".to_owned(), true),
                ("lead".to_owned(), true),
                ("row_number".to_owned(), false),
            ]
        );
        // That the wrapper holds the flags once the plan format has dropped
        // DataFusion's: `codec`'s tests run such plans where they are decoded.
        let answer = ctx.execute_logical_plan(plan).await.unwrap().collect().await.unwrap();
        assert_eq!(
            arrow::util::pretty::pretty_format_batches(&answer).unwrap().to_string(),
            expected
        );
        assert!(expected.contains("| 3 | 7      | 9    |        | 3 |"), "{expected}");
    }

    #[test]
    fn builtins_are_found_by_name() {
        assert_eq!(builtin("last_value").unwrap().name(), "last_value");
        assert!(builtin("no_such_function").is_none());
    }
}
