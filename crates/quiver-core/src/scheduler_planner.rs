//! How the scheduler turns a job's logical plan into the physical plan
//! Ballista cuts into stages: DataFusion's planner, then two repairs for
//! plans that run in one process and stalled once cut into stages.
//!
//! Before planning, Arrow file writes get a sink the executors can decode
//! ([`crate::arrow_writes`]); after it, writes to a directory run in every
//! task of the stage making their rows ([`crate::partition_writes`]).
//!
//! * Rows made from nothing under a union travel as in-memory scans, so
//!   every task of the union's stage reports the same operators
//!   ([`crate::union_leaves`]).
//! * A union whose partitions each hold one constant value gets a barrier
//!   above it, so a sort its order relies on is planned and kept across the
//!   stage boundary ([`crate::partition_constants`]).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::Result;
use datafusion::execution::context::QueryPlanner;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_planner::{DefaultPhysicalPlanner, PhysicalPlanner};

use crate::arrow_writes::arrow_writes_travel;
use crate::options::QuiverOptions;
use crate::partition_constants::guard_partition_constants;
use crate::partition_writes::distribute_writes;
use crate::union_leaves::union_leaves_as_scans;

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
        let logical_plan = arrow_writes_travel(logical_plan.clone())?;
        let plan = DefaultPhysicalPlanner::default()
            .create_physical_plan(&logical_plan, session)
            .await?;
        let plan = guard_partition_constants(union_leaves_as_scans(plan)?)?;
        let options = session.config_options().extensions.get::<QuiverOptions>();
        match options.is_none_or(|o| o.distributed_writes) {
            true => distribute_writes(plan),
            false => Ok(plan),
        }
    }
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
}
