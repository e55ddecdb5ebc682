//! How the scheduler turns a job's logical plan into the physical plan
//! Ballista cuts into stages: DataFusion's planner, then two repairs for
//! plans that run in one process and stalled once cut into stages.
//!
//! Before planning, Arrow file writes get a sink the executors can decode
//! ([`crate::arrow_writes`]) and window functions hold the flags the plan
//! format drops (`IGNORE NULLS`, reversal: [`crate::window_flags`]); after
//! it, writes to a directory run in every task of the stage making their
//! rows ([`crate::partition_writes`]).
//!
//! * Rows made from nothing under a union travel as in-memory scans, so
//!   every task of the union's stage reports the same operators
//!   ([`crate::union_leaves`]).
//! * A union whose partitions each hold one constant value gets a barrier
//!   above it, so a sort its order relies on is planned and kept across the
//!   stage boundary ([`crate::partition_constants`]).
//! * A recursive query runs whole in one task, its exchanges in-process
//!   ([`crate::local_plan`]); a job holding one is planned without
//!   Ballista's adaptive joins, which only stages can resolve.

use std::sync::Arc;

use async_trait::async_trait;
use ballista_core::config::{BALLISTA_ADAPTIVE_JOIN_ENABLED, BallistaConfig};
use datafusion::catalog::Session;
use datafusion::common::Result;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::execution::SessionState;
use datafusion::execution::context::QueryPlanner;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_planner::{DefaultPhysicalPlanner, PhysicalPlanner};

use crate::arrow_writes::arrow_writes_travel;
use crate::local_plan::one_task_recursive_queries;
use crate::options::QuiverOptions;
use crate::partition_constants::guard_partition_constants;
use crate::partition_writes::distribute_writes;
use crate::union_leaves::union_leaves_as_scans;
use crate::window_flags::carry_window_flags;

/// The scheduler's query planner; see the [module docs](self).
#[derive(Debug, Default)]
pub struct SchedulerQueryPlanner;

#[async_trait]
impl QueryPlanner for SchedulerQueryPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let logical_plan = carry_window_flags(arrow_writes_travel(logical_plan.clone())?)?;
        let planner = DefaultPhysicalPlanner::default();
        let plan = match without_adaptive_joins(&logical_plan, session)? {
            Some(state) => planner.create_physical_plan(&logical_plan, &state).await?,
            None => planner.create_physical_plan(&logical_plan, session).await?,
        };
        let plan = guard_partition_constants(union_leaves_as_scans(plan)?)?;
        let options = session.config_options().extensions.get::<QuiverOptions>();
        let plan = match options.is_none_or(|o| o.distributed_writes) {
            true => distribute_writes(plan)?,
            false => plan,
        };
        one_task_recursive_queries(plan, session.config_options())
    }
}

/// `session` with Ballista's adaptive joins off, when `plan` holds a
/// recursive query (and the session is Ballista's); `None` otherwise.
///
/// Adaptive joins are placeholders that Ballista's planner resolves into a
/// join once their inputs' stages have run; inside a recursive query, which
/// runs whole in one task ([`crate::local_plan`]), no stage resolves them.
fn without_adaptive_joins(plan: &LogicalPlan, session: &dyn Session) -> Result<Option<SessionState>> {
    let Some(state) = session.as_any().downcast_ref::<SessionState>() else {
        return Ok(None);
    };
    if state.config().options().extensions.get::<BallistaConfig>().is_none() {
        return Ok(None);
    }
    let recursive = holds_recursive_query(plan)?;
    if !recursive {
        return Ok(None);
    }
    let mut state = state.clone();
    state
        .config_mut()
        .options_mut()
        .set(BALLISTA_ADAPTIVE_JOIN_ENABLED, "false")?;
    Ok(Some(state))
}

/// Whether `plan` or any of its subqueries, at any depth, is or holds a
/// recursive query.
fn holds_recursive_query(plan: &LogicalPlan) -> Result<bool> {
    plan.exists(|node| {
        if matches!(node, LogicalPlan::RecursiveQuery(_)) {
            return Ok(true);
        }
        let mut found = false;
        node.apply_subqueries(|sub| {
            found = holds_recursive_query(sub)?;
            Ok(match found {
                true => TreeNodeRecursion::Stop,
                false => TreeNodeRecursion::Continue,
            })
        })?;
        Ok(found)
    })
}

#[cfg(test)]
mod tests {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::physical_plan::displayable;
    use datafusion::prelude::SessionContext;

    use super::*;
    use crate::partition_constants::PartitionConstantsBarrierExec;

    #[tokio::test]
    async fn a_union_of_different_constants_gets_a_barrier() {
        let ctx = SessionContext::new();
        let df = ctx.sql("SELECT 1 AS x UNION ALL SELECT 2 ORDER BY x").await.unwrap();
        let logical = df.into_optimized_plan().unwrap();
        let plan = SchedulerQueryPlanner
            .create_physical_plan(&logical, &ctx.state())
            .await
            .unwrap();
        let mut barriers = 0;
        plan.apply(|node| {
            barriers += usize::from(node.downcast_ref::<PartitionConstantsBarrierExec>().is_some());
            Ok(TreeNodeRecursion::Continue)
        })
        .unwrap();
        assert_eq!(barriers, 1, "{}", displayable(plan.as_ref()).indent(true));
    }

    #[tokio::test]
    async fn recursive_queries_are_found_in_subqueries_too() {
        let ctx = SessionContext::new();
        let holds = |sql: &'static str| {
            let ctx = ctx.clone();
            async move { holds_recursive_query(&ctx.sql(sql).await.unwrap().into_unoptimized_plan()).unwrap() }
        };
        let recursive = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 3) SELECT x FROM n";
        assert!(holds(recursive).await);
        assert!(
            holds(
                "SELECT 1 AS y WHERE 2 IN (SELECT x FROM (SELECT 1 AS x) WHERE x IN \
                 (WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 3) SELECT x FROM n))"
            )
            .await
        );
        assert!(!holds("WITH n(x) AS (SELECT 1) SELECT x FROM n").await);
    }
}
