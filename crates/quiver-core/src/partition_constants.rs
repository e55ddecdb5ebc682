//! Orderings that hold on a cluster: no sort is left out because of a value
//! that is constant only within each partition.
//!
//! `SELECT x FROM t WHERE x = 5 UNION ALL SELECT x FROM t WHERE x = 7 ORDER
//! BY x` stalled on a cluster. Each branch of the union makes `x` constant,
//! so DataFusion knows that every partition of the union, taken alone, is
//! sorted by `x` (a *heterogeneous* constant: constant within a partition,
//! different across them) and plans no sort, only a merge of the sorted
//! partitions. Ballista cuts the plan into stages between the merge and the
//! union. Its stage boundary (`ExchangeExec`) forgets heterogeneous
//! constants, so when the union's stage finished and Ballista re-planned the
//! rest, the merge's input was no longer sorted. DataFusion then added a sort
//! above the boundary and pushed it down through it (the boundary says it
//! keeps its input's order) into the union's branches, where it was
//! satisfied and dropped again; the final check refused the plan, Ballista
//! logged the error and left the query waiting for a stage that would never
//! start. Quiver's watchdog failed it after 5 s.
//!
//! The scheduler's planner ([`crate::scheduler_planner`]) puts a
//! [`PartitionConstantsBarrierExec`] above every union whose output has
//! heterogeneous constants. The barrier passes its input through unchanged
//! but does not claim those constants and does not let a required order be
//! pushed below it, so the sort is planned above the union (a sort of rows
//! that are already in order, one pass) and its order survives the stage
//! boundary. Unions of branches without such constants are left alone.
//!
//! ```
//! # use std::sync::Arc;
//! # use datafusion::arrow::datatypes::{DataType, Field, Schema};
//! # use datafusion::physical_plan::ExecutionPlan;
//! # use datafusion::physical_plan::empty::EmptyExec;
//! use quiver_core::partition_constants::PartitionConstantsBarrierExec;
//!
//! let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)]));
//! let input: Arc<dyn ExecutionPlan> = Arc::new(EmptyExec::new(schema));
//! let barrier = PartitionConstantsBarrierExec::new(input);
//! assert_eq!(barrier.maintains_input_order(), vec![false]);
//! assert_eq!(barrier.properties().partitioning.partition_count(), 1);
//! ```

use std::fmt;
use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Result, Statistics};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::equivalence::AcrossPartitions;
use datafusion::physical_plan::filter_pushdown::{
    ChildPushdownResult, FilterDescription, FilterPushdownPhase, FilterPushdownPropagation,
};
use datafusion::physical_plan::statistics::{ChildStats, StatisticsArgs};
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, SendableRecordBatchStream,
};

/// Passes its input through without the constants that hold only within
/// each of its input's partitions; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct PartitionConstantsBarrierExec {
    input: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
}

impl PartitionConstantsBarrierExec {
    /// A barrier over `input`.
    pub fn new(input: Arc<dyn ExecutionPlan>) -> Self {
        let mut eq_properties = input.properties().eq_properties.clone();
        eq_properties.clear_per_partition_constants();
        let properties = Arc::new(PlanProperties::new(
            eq_properties,
            input.properties().partitioning.clone(),
            input.properties().emission_type,
            input.properties().boundedness,
        ));
        Self { input, properties }
    }
}

/// True when `plan`'s output has a value that is constant within each
/// partition but not across them.
fn has_partition_constants(plan: &dyn ExecutionPlan) -> bool {
    plan.properties()
        .eq_properties
        .constants()
        .iter()
        .any(|c| c.across_partitions == AcrossPartitions::Heterogeneous)
}

/// `plan` with a [`PartitionConstantsBarrierExec`] above each union whose
/// output has constants that hold only within each partition.
pub fn guard_partition_constants(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        if node.downcast_ref::<UnionExec>().is_some() && has_partition_constants(node.as_ref()) {
            let barrier: Arc<dyn ExecutionPlan> = Arc::new(PartitionConstantsBarrierExec::new(node));
            return Ok(Transformed::yes(barrier));
        }
        Ok(Transformed::no(node))
    })
    .map(|t| t.data)
}

impl DisplayAs for PartitionConstantsBarrierExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "PartitionConstantsBarrierExec")
    }
}

impl ExecutionPlan for PartitionConstantsBarrierExec {
    fn name(&self) -> &str {
        "PartitionConstantsBarrierExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    /// False, so a required order is met above the barrier, never pushed
    /// into the union's branches where the constants satisfy it.
    fn maintains_input_order(&self) -> Vec<bool> {
        vec![false]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(self: Arc<Self>, mut children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        match children.len() {
            1 => Ok(Arc::new(Self::new(children.swap_remove(0)))),
            n => datafusion::common::internal_err!("PartitionConstantsBarrierExec takes one input, got {n}"),
        }
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        self.input.execute(partition, context)
    }

    fn child_stats_requests(&self, partition: Option<usize>) -> Vec<ChildStats> {
        vec![ChildStats::At(partition)]
    }

    fn statistics_from_inputs(
        &self,
        input_stats: &[Arc<Statistics>],
        _args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        Ok(Arc::clone(&input_stats[0]))
    }

    fn gather_filters_for_pushdown(
        &self,
        _phase: FilterPushdownPhase,
        parent_filters: Vec<Arc<dyn PhysicalExpr>>,
        _config: &ConfigOptions,
    ) -> Result<FilterDescription> {
        FilterDescription::from_children(parent_filters, &self.children())
    }

    fn handle_child_pushdown_result(
        &self,
        _phase: FilterPushdownPhase,
        child_pushdown_result: ChildPushdownResult,
        _config: &ConfigOptions,
    ) -> Result<FilterPushdownPropagation<Arc<dyn ExecutionPlan>>> {
        Ok(FilterPushdownPropagation::if_all(child_pushdown_result))
    }
}
