//! Logical optimizer rules Quiver adds to DataFusion's.
//!
//! [`PushSemiJoinBelowJoins`] moves an `IN (subquery)` semi join down to the
//! join input its keys come from. DataFusion leaves it on top of the joins
//! the `WHERE` clause listed, which costs little in one process: the semi
//! join's dynamic filter reaches the scans below while they run. A cluster
//! runs those scans as earlier stages and shuffles everything they read
//! before the semi join has seen a row. In TPC-H Q18 the semi join keeps 57
//! of 1.5 million orders; below the joins, the orders are filtered in the
//! stage that scans them and 57 rows are shuffled instead of 1.5 million.

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::common::tree_node::Transformed;
use datafusion::common::{Column, Result};
use datafusion::logical_expr::{Expr, Join, JoinType, LogicalPlan, Projection};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

/// Rewrites `(A ⋈ B) ⋉ C` into `(A ⋉ C) ⋈ B` when the semi join's keys are
/// columns of `A` alone (through a projection that passes them on, if one
/// sits between the joins).
///
/// The two are equal for an inner join: the semi join keeps or drops each
/// row by `A`'s columns only, and the inner join neither changes nor
/// duplicates them differently. Semi joins with a non-equi filter (TPC-H
/// Q21's `EXISTS` with `<>`) stay where they are, since their filter may
/// reach the other input's columns and pushing them under a selective join
/// can make them do more work.
///
/// ```
/// use datafusion::prelude::SessionContext;
/// use datafusion::execution::SessionStateBuilder;
/// use std::sync::Arc;
/// use quiver_core::optimizer::PushSemiJoinBelowJoins;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> datafusion::common::Result<()> {
/// let state = SessionStateBuilder::new()
///     .with_default_features()
///     .with_optimizer_rule(Arc::new(PushSemiJoinBelowJoins))
///     .build();
/// let ctx = SessionContext::new_with_state(state);
/// ctx.sql("CREATE TABLE o (k INT, c INT) AS VALUES (1, 10), (2, 20)").await?;
/// ctx.sql("CREATE TABLE c (c INT) AS VALUES (10), (20)").await?;
/// ctx.sql("CREATE TABLE s (k INT) AS VALUES (2)").await?;
/// let plan = ctx
///     .sql("SELECT o.k FROM o, c WHERE o.c = c.c AND o.k IN (SELECT k FROM s)")
///     .await?
///     .into_optimized_plan()?;
/// // The semi join now sits under the inner join, on `o`'s side.
/// let text = plan.display_indent().to_string();
/// assert!(text.find("Inner Join").unwrap() < text.find("LeftSemi Join").unwrap(), "{text}");
/// # Ok(()) }
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct PushSemiJoinBelowJoins;

impl OptimizerRule for PushSemiJoinBelowJoins {
    fn name(&self) -> &str {
        "quiver_push_semi_join_below_joins"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        // Top-down: a semi join pushed one level is visited again as a child
        // and keeps going down while its keys stay on one side.
        Some(ApplyOrder::TopDown)
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(&self, plan: LogicalPlan, _config: &dyn OptimizerConfig) -> Result<Transformed<LogicalPlan>> {
        let LogicalPlan::Join(semi) = &plan else {
            return Ok(Transformed::no(plan));
        };
        if semi.join_type != JoinType::LeftSemi || semi.filter.is_some() || semi.null_aware || semi.on.is_empty() {
            return Ok(Transformed::no(plan));
        }
        let keys: HashSet<&Column> = semi.on.iter().flat_map(|(left, _)| left.column_refs()).collect();
        // Projections that only pass the keys through may sit between the two joins.
        let (projection, inner) = match semi.left.as_ref() {
            LogicalPlan::Join(inner) => (None, inner),
            LogicalPlan::Projection(projection) => match projection.input.as_ref() {
                LogicalPlan::Join(inner) if keys.iter().all(|c| passes_through(&projection.expr, c)) => {
                    (Some(projection), inner)
                }
                _ => return Ok(Transformed::no(plan)),
            },
            _ => return Ok(Transformed::no(plan)),
        };
        if inner.join_type != JoinType::Inner {
            return Ok(Transformed::no(plan));
        }
        let within = |side: &LogicalPlan| keys.iter().all(|c| side.schema().has_column(c));
        let push = |side: &Arc<LogicalPlan>| -> Result<Arc<LogicalPlan>> {
            Ok(Arc::new(LogicalPlan::Join(Join::try_new(
                Arc::clone(side),
                Arc::clone(&semi.right),
                semi.on.clone(),
                None,
                JoinType::LeftSemi,
                semi.join_constraint,
                semi.null_equality,
                false,
            )?)))
        };
        let (left, right) = if within(&inner.left) {
            (push(&inner.left)?, Arc::clone(&inner.right))
        } else if within(&inner.right) {
            (Arc::clone(&inner.left), push(&inner.right)?)
        } else {
            return Ok(Transformed::no(plan));
        };
        let rewritten = Join::try_new(
            left,
            right,
            inner.on.clone(),
            inner.filter.clone(),
            JoinType::Inner,
            inner.join_constraint,
            inner.null_equality,
            inner.null_aware,
        )?;
        let rewritten = LogicalPlan::Join(rewritten);
        Ok(Transformed::yes(match projection {
            None => rewritten,
            Some(p) => LogicalPlan::Projection(Projection::try_new_with_schema(
                p.expr.clone(),
                Arc::new(rewritten),
                Arc::clone(&p.schema),
            )?),
        }))
    }
}

/// Whether `exprs` (a projection's) output `column` unchanged.
fn passes_through(exprs: &[Expr], column: &Column) -> bool {
    exprs.iter().any(|e| matches!(e, Expr::Column(c) if c == column))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::execution::SessionStateBuilder;
    use datafusion::prelude::SessionContext;

    async fn context(with_rule: bool) -> SessionContext {
        let mut builder = SessionStateBuilder::new().with_default_features();
        if with_rule {
            builder = builder.with_optimizer_rule(Arc::new(PushSemiJoinBelowJoins));
        }
        let ctx = SessionContext::new_with_state(builder.build());
        for sql in [
            "CREATE TABLE cust (c_custkey INT, c_name VARCHAR) AS VALUES (1, 'a'), (2, 'b'), (3, NULL)",
            "CREATE TABLE ord (o_orderkey INT, o_custkey INT) AS VALUES (10, 1), (11, 1), (12, 2), (13, 3), (NULL, 3)",
            "CREATE TABLE item (l_orderkey INT, l_qty INT) AS VALUES (10, 5), (10, 7), (11, 1), (12, 9), (13, 2), (NULL, 4)",
        ] {
            ctx.sql(sql).await.unwrap();
        }
        ctx
    }

    async fn answer(ctx: &SessionContext, sql: &str) -> (String, String) {
        let df = ctx.sql(sql).await.unwrap();
        let plan = df.clone().into_optimized_plan().unwrap().display_indent().to_string();
        let rows = datafusion::arrow::util::pretty::pretty_format_batches(&df.collect().await.unwrap())
            .unwrap()
            .to_string();
        (plan, rows)
    }

    const Q18_SHAPE: &str = "SELECT c_name, o_orderkey, sum(l_qty) AS q FROM cust, ord, item \
        WHERE o_orderkey IN (SELECT l_orderkey FROM item GROUP BY l_orderkey HAVING sum(l_qty) > 8) \
        AND c_custkey = o_custkey AND o_orderkey = l_orderkey \
        GROUP BY c_name, o_orderkey ORDER BY o_orderkey";

    #[tokio::test]
    async fn pushes_the_semi_join_to_the_side_of_its_keys_with_the_same_answer() {
        let (before_plan, before) = answer(&context(false).await, Q18_SHAPE).await;
        let (after_plan, after) = answer(&context(true).await, Q18_SHAPE).await;
        assert_eq!(before, after);
        assert!(
            after.contains("| 10         | 12 |") && after.contains("| 12         | 9  |"),
            "{after}"
        );
        let first_semi = |plan: &str| plan.lines().position(|l| l.contains("LeftSemi Join")).unwrap();
        let last_inner = |plan: &str| {
            plan.lines()
                .collect::<Vec<_>>()
                .iter()
                .rposition(|l| l.contains("Inner Join"))
                .unwrap()
        };
        assert!(first_semi(&before_plan) < last_inner(&before_plan), "{before_plan}");
        assert!(first_semi(&after_plan) > last_inner(&after_plan), "{after_plan}");
    }

    #[tokio::test]
    async fn leaves_semi_joins_with_a_filter_and_anti_joins_alone() {
        let exists = "SELECT o_orderkey FROM cust, ord WHERE c_custkey = o_custkey AND EXISTS \
            (SELECT 1 FROM item WHERE l_orderkey = o_orderkey AND l_qty <> o_custkey) ORDER BY 1";
        let not_exists = "SELECT o_orderkey FROM cust, ord WHERE c_custkey = o_custkey AND NOT EXISTS \
            (SELECT 1 FROM item WHERE l_orderkey = o_orderkey) ORDER BY 1";
        for sql in [exists, not_exists] {
            assert_eq!(
                answer(&context(false).await, sql).await,
                answer(&context(true).await, sql).await
            );
        }
    }
}
