//! A scalar subquery that returns more than one row is an error on a
//! cluster too, as in one process and in Spark.
//!
//! DataFusion runs an uncorrelated scalar subquery (`WHERE x > (SELECT v
//! FROM t)`) with its own operator, which fails when the subquery returns
//! more than one row. Ballista turns that off for its sessions
//! (`datafusion.optimizer.enable_physical_uncorrelated_scalar_subquery`)
//! because the operator cannot be cut into stages; the subquery then
//! becomes a left join, and a subquery returning several rows silently
//! multiplied the outer rows: `SELECT (SELECT v FROM t)` returned every `v`.
//!
//! [`SingleRowScalarSubqueries`], an analyzer rule, runs where that setting
//! is off: it puts each uncorrelated scalar subquery that may return more
//! than one row under an aggregate of [`SingleValue`], which gives the one
//! value (NULL for no rows) and fails with DataFusion's own error for a
//! second row. The join then sees one row, as the operator would have.
//!
//! ```
//! # #[tokio::main] async fn main() {
//! use std::sync::Arc;
//! use datafusion::execution::SessionStateBuilder;
//! use datafusion::prelude::{SessionConfig, SessionContext};
//! use quiver_core::scalar_subquery::SingleRowScalarSubqueries;
//!
//! let mut config = SessionConfig::new();
//! config.options_mut().optimizer.enable_physical_uncorrelated_scalar_subquery = false;
//! let state = SessionStateBuilder::new()
//!     .with_default_features()
//!     .with_config(config)
//!     .with_analyzer_rule(Arc::new(SingleRowScalarSubqueries))
//!     .build();
//! let ctx = SessionContext::new_with_state(state);
//! ctx.sql("CREATE TABLE t (v INT) AS VALUES (1), (2)").await.unwrap();
//! let err = ctx.sql("SELECT (SELECT v FROM t)").await.unwrap().collect().await.unwrap_err();
//! assert!(err.to_string().contains("Scalar subquery returned more than one row"), "{err}");
//! # }
//! ```

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, Field, FieldRef, UInt64Type};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Expr, LogicalPlan, LogicalPlanBuilder, Signature, Subquery, Volatility,
};
use datafusion::optimizer::AnalyzerRule;

/// The analyzer rule; see the [module docs](self).
#[derive(Debug, Default)]
pub struct SingleRowScalarSubqueries;

impl AnalyzerRule for SingleRowScalarSubqueries {
    fn analyze(&self, plan: LogicalPlan, config: &ConfigOptions) -> Result<LogicalPlan> {
        if config.optimizer.enable_physical_uncorrelated_scalar_subquery {
            // DataFusion's operator checks the rows itself.
            return Ok(plan);
        }
        plan.transform_up_with_subqueries(|node| {
            node.map_expressions(|expr| {
                expr.transform_up(|e| match e {
                    Expr::ScalarSubquery(subquery) if needs_check(&subquery) => {
                        Ok(Transformed::yes(Expr::ScalarSubquery(single_row(subquery)?)))
                    }
                    other => Ok(Transformed::no(other)),
                })
            })
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "quiver_single_row_scalar_subqueries"
    }
}

/// Uncorrelated, one column, and not known to return at most one row.
fn needs_check(subquery: &Subquery) -> bool {
    subquery.outer_ref_columns.is_empty()
        && subquery.subquery.schema().fields().len() == 1
        && subquery.subquery.max_rows().is_none_or(|rows| rows > 1)
}

/// `subquery` under an aggregate of [`SingleValue`], its column's name kept.
fn single_row(subquery: Subquery) -> Result<Subquery> {
    let plan = Arc::unwrap_or_clone(subquery.subquery);
    let (qualifier, field) = plan.schema().qualified_field(0);
    let column = Expr::Column(datafusion::common::Column::new(qualifier.cloned(), field.name()));
    let name = field.name().clone();
    let value = AggregateUDF::from(SingleValue::default())
        .call(vec![column])
        .alias(name);
    let plan = LogicalPlanBuilder::from(plan)
        .aggregate(Vec::<Expr>::new(), vec![value])?
        .build()?;
    Ok(Subquery {
        subquery: Arc::new(plan),
        ..subquery
    })
}

/// The aggregate of a scalar subquery's rows: the one value, NULL for no
/// rows, an error for more than one. Its partial states (the value and a
/// row count) merge across stages.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct SingleValue {
    signature: Signature,
}

impl Default for SingleValue {
    fn default() -> Self {
        Self {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

/// [`SingleValue`]'s name in plans.
pub const SINGLE_VALUE: &str = "__quiver_scalar_subquery_value";

impl AggregateUDFImpl for SingleValue {
    fn name(&self) -> &str {
        SINGLE_VALUE
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        Ok(args[0].clone())
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(SingleValueAccumulator {
            value: ScalarValue::try_from(args.return_field.data_type())?,
            rows: 0,
        }))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![
            Arc::new(Field::new("value", args.return_type().clone(), true)),
            Arc::new(Field::new("rows", DataType::UInt64, false)),
        ])
    }
}

#[derive(Debug)]
struct SingleValueAccumulator {
    value: ScalarValue,
    rows: u64,
}

impl SingleValueAccumulator {
    /// Counts `rows` more rows, the last of them holding `value`.
    fn add(&mut self, rows: u64, value: impl FnOnce() -> Result<ScalarValue>) -> Result<()> {
        if rows == 0 {
            return Ok(());
        }
        self.rows += rows;
        if self.rows > 1 {
            return exec_err!("Scalar subquery returned more than one row");
        }
        self.value = value()?;
        Ok(())
    }
}

impl Accumulator for SingleValueAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let column = &values[0];
        self.add(column.len() as u64, || ScalarValue::try_from_array(column, 0))
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let (values, rows) = (&states[0], states[1].as_primitive::<UInt64Type>());
        for i in 0..rows.len() {
            self.add(rows.value(i), || ScalarValue::try_from_array(values, i))?;
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![self.value.clone(), ScalarValue::UInt64(Some(self.rows))])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(self.value.clone())
    }

    fn size(&self) -> usize {
        size_of_val(self) + self.value.size() - size_of_val(&self.value)
    }
}

#[cfg(test)]
mod tests {
    use datafusion::execution::SessionStateBuilder;
    use datafusion::prelude::{SessionConfig, SessionContext};

    use super::*;

    fn context() -> SessionContext {
        let mut config = SessionConfig::new().with_target_partitions(4);
        config
            .options_mut()
            .optimizer
            .enable_physical_uncorrelated_scalar_subquery = false;
        let state = SessionStateBuilder::new()
            .with_default_features()
            .with_config(config)
            .with_analyzer_rule(Arc::new(SingleRowScalarSubqueries))
            .build();
        SessionContext::new_with_state(state)
    }

    async fn rows(ctx: &SessionContext, sql: &str) -> Result<String> {
        let batches = ctx.sql(sql).await?.collect().await?;
        Ok(arrow::util::pretty::pretty_format_batches(&batches)?.to_string())
    }

    #[tokio::test]
    async fn one_row_zero_rows_and_too_many() {
        let ctx = context();
        rows(&ctx, "CREATE TABLE t (v INT) AS VALUES (1), (2), (3)")
            .await
            .unwrap();
        rows(&ctx, "CREATE TABLE m (x INT) AS VALUES (10), (20)").await.unwrap();
        for sql in [
            "SELECT (SELECT v FROM t)",
            "SELECT x FROM m WHERE x > (SELECT v FROM t)",
            "SELECT x + (SELECT v FROM t WHERE v > 1) FROM m",
        ] {
            let err = rows(&ctx, sql).await.unwrap_err().to_string();
            assert!(
                err.contains("Scalar subquery returned more than one row"),
                "{sql}: {err}"
            );
        }
        let one = rows(&ctx, "SELECT x FROM m WHERE x > (SELECT v * 5 FROM t WHERE v = 3)")
            .await
            .unwrap();
        assert!(one.contains("| 20 |") && !one.contains("| 10 |"), "{one}");
        let none = rows(&ctx, "SELECT x, (SELECT v FROM t WHERE v > 5) AS s FROM m ORDER BY x")
            .await
            .unwrap();
        assert!(none.contains("| 10 |   |"), "{none}");
        // Known to return one row: left as it is.
        let plan = rows(&ctx, "EXPLAIN SELECT (SELECT max(v) FROM t)").await.unwrap();
        assert!(!plan.contains(SINGLE_VALUE), "{plan}");
    }
}
