//! Rows made from nothing under a union, as in-memory scans, so that every
//! task of a union's stage reports the same operators.
//!
//! `SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3` stalled on a cluster:
//! each branch reads a one-row `PlaceholderRowExec`. Ballista gives each task
//! of the union's stage only the branches its partitions come from and swaps
//! the other branches' leaves for empty in-memory scans. A placeholder (or an
//! `EmptyExec`) reports no metrics and an in-memory scan does, so two tasks
//! covering a different number of branches reported a different number of
//! operator metrics. Ballista refused the second task's report ("task metrics
//! array size 7 does not equal with the stage metrics array size 6"). The
//! query then either waited for that task's partition until Quiver's
//! watchdog failed it, or went on without the partition's rows: `SELECT c1,
//! sum(c2) FROM (SELECT 1 AS c1, 1::int AS c2 UNION SELECT 2, 2::int UNION
//! SELECT 3, count(1)) GROUP BY c1` answered two groups of three.
//!
//! [`union_leaves_as_scans`] turns those leaves into the same one-row (or
//! empty) in-memory scans from the start. The scheduler applies it when it
//! plans ([`crate::scheduler_planner`]), so its stage plans count the
//! operators the tasks report; executors apply it to each task, which
//! covers the leaves Ballista's re-planning made after that (an aggregate
//! answered from statistics becomes a placeholder row whose column refuses
//! NULLs).
//!
//! ```
//! # use std::sync::Arc;
//! # use datafusion::arrow::datatypes::Schema;
//! # use datafusion::physical_plan::ExecutionPlan;
//! # use datafusion::physical_plan::placeholder_row::PlaceholderRowExec;
//! # use datafusion::physical_plan::union::UnionExec;
//! use quiver_core::union_leaves::union_leaves_as_scans;
//!
//! let row = || -> Arc<dyn ExecutionPlan> { Arc::new(PlaceholderRowExec::new(Arc::new(Schema::empty()))) };
//! let union = UnionExec::try_new(vec![row(), row(), row()]).unwrap();
//! let plan = union_leaves_as_scans(union).unwrap();
//! for leaf in plan.children() {
//!     assert_eq!(leaf.name(), "DataSourceExec");
//! }
//! // A placeholder that is not under a union stays as it is.
//! assert_eq!(union_leaves_as_scans(row()).unwrap().name(), "PlaceholderRowExec");
//! ```

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions, new_null_array};
use datafusion::common::{Result, ScalarValue};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::placeholder_row::PlaceholderRowExec;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties, replace_children_if_necessary};

/// `plan` with every `PlaceholderRowExec` and `EmptyExec` below a union
/// replaced by an in-memory scan of the same rows and partitions.
pub fn union_leaves_as_scans(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    leaves_as_scans(plan, false)
}

fn leaves_as_scans(plan: Arc<dyn ExecutionPlan>, under_union: bool) -> Result<Arc<dyn ExecutionPlan>> {
    if under_union && let Some(scan) = as_memory_scan(plan.as_ref())? {
        return Ok(scan);
    }
    let under_union = under_union || plan.downcast_ref::<UnionExec>().is_some();
    let children = plan
        .children()
        .into_iter()
        .map(|child| leaves_as_scans(Arc::clone(child), under_union))
        .collect::<Result<Vec<_>>>()?;
    if children.is_empty() {
        return Ok(plan);
    }
    replace_children_if_necessary(plan, children)
}

/// The in-memory scan that yields what `plan` yields, when it is a
/// placeholder row (one row per partition) or an empty relation.
fn as_memory_scan(plan: &dyn ExecutionPlan) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let partitions = plan.output_partitioning().partition_count();
    let schema = plan.schema();
    let batches = if plan.downcast_ref::<EmptyExec>().is_some() {
        vec![]
    } else if plan.downcast_ref::<PlaceholderRowExec>().is_some() {
        // Nothing reads the placeholder's columns (its own row holds NULLs
        // under other names); a column that refuses NULLs gets its type's
        // default value.
        let columns = schema
            .fields()
            .iter()
            .map(|f| match f.is_nullable() {
                true => Ok(new_null_array(f.data_type(), 1)),
                false => ScalarValue::new_default(f.data_type())?.to_array_of_size(1),
            })
            .collect::<Result<Vec<ArrayRef>>>()?;
        let options = RecordBatchOptions::new().with_row_count(Some(1));
        vec![RecordBatch::try_new_with_options(
            Arc::clone(&schema),
            columns,
            &options,
        )?]
    } else {
        return Ok(None);
    };
    let scan: Arc<dyn ExecutionPlan> = MemorySourceConfig::try_new_exec(&vec![batches; partitions], schema, None)?;
    Ok(Some(scan))
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::physical_plan::collect;
    use datafusion::prelude::SessionContext;

    use super::*;

    #[tokio::test]
    async fn a_placeholder_under_a_union_still_yields_one_row_per_partition() {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)]));
        let row: Arc<dyn ExecutionPlan> = Arc::new(PlaceholderRowExec::new(Arc::clone(&schema)).with_partitions(2));
        let empty: Arc<dyn ExecutionPlan> = Arc::new(EmptyExec::new(schema));
        let plan = union_leaves_as_scans(UnionExec::try_new(vec![row, empty]).unwrap()).unwrap();
        assert_eq!(plan.output_partitioning().partition_count(), 3);
        let batches = collect(plan, SessionContext::new().task_ctx()).await.unwrap();
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        assert_eq!(rows, 2);
        assert!(batches.iter().all(|b| b.column(0).null_count() == b.num_rows()));
    }

    #[tokio::test]
    async fn a_placeholder_whose_column_refuses_nulls_becomes_a_scan_too() {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let row: Arc<dyn ExecutionPlan> = Arc::new(PlaceholderRowExec::new(Arc::clone(&schema)));
        let plan = union_leaves_as_scans(UnionExec::try_new(vec![Arc::clone(&row), row]).unwrap()).unwrap();
        assert!(plan.children().iter().all(|leaf| leaf.name() == "DataSourceExec"));
        let batches = collect(plan, SessionContext::new().task_ctx()).await.unwrap();
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 2);
    }
}
