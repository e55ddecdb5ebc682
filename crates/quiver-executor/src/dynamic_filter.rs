//! Reconnects dynamic filters that the trip from scheduler to executor cut.
//!
//! A hash join, a top-k sort or a min/max aggregate *produces* a dynamic
//! filter: once it has seen its build side (or its current top k), it writes
//! a predicate such as `l_orderkey IN (...)` into a shared
//! [`DynamicFilterPhysicalExpr`]. The scan under it *consumes* the same
//! filter and skips row groups, pages and rows that cannot match. That is
//! how single-process DataFusion reads 57 orders instead of 1.5 million in
//! TPC-H Q18.
//!
//! Producer and consumer must hold the same shared state. Ballista decodes a
//! task's plan with datafusion-proto's default converter, which builds a new
//! filter for every occurrence: the join then updates a filter nobody reads
//! and the scan waits on one nobody writes, so every row is read. Both copies
//! keep the filter's expression id, so [`relink_dynamic_filters`] finds the
//! consumer below each producer and hands the producer a filter that shares
//! the consumer's state, as datafusion-proto's deduplicating decoder would.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Result, internal_datafusion_err};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::DynamicFilterPhysicalExpr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::joins::HashJoinExec;
use datafusion::physical_plan::sorts::sort::SortExec;

/// `plan` with every dynamic-filter producer sharing state with its consumer.
///
/// Producers whose filter has no consumer below them, or whose consumer
/// already shares their state, are left as they are.
///
/// ```
/// # use std::sync::Arc;
/// # use datafusion::arrow::datatypes::{DataType, Field, Schema};
/// # use datafusion::physical_plan::{ExecutionPlan, empty::EmptyExec};
/// use quiver_executor::dynamic_filter::relink_dynamic_filters;
/// let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, false)]));
/// let plan: Arc<dyn ExecutionPlan> = Arc::new(EmptyExec::new(schema));
/// // A plan without producers comes back unchanged.
/// assert!(Arc::ptr_eq(&relink_dynamic_filters(Arc::clone(&plan)).unwrap(), &plan));
/// ```
pub fn relink_dynamic_filters(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        let produced = node.dynamic_expressions_produced();
        let [producer] = &produced[..] else {
            return Ok(Transformed::no(node));
        };
        let Some(producer) = as_dynamic_filter(producer) else {
            return Ok(Transformed::no(node));
        };
        let Some(id) = producer.expression_id() else {
            return Ok(Transformed::no(node));
        };
        let Some(consumer) = find_consumer(&node, id, &producer)? else {
            return Ok(Transformed::no(node));
        };
        // A filter derived from the consumer shares its state; with the
        // producer's children it reads and writes in the producer's columns.
        let children = producer.children().into_iter().cloned().collect();
        let linked = Arc::clone(&consumer).with_new_children(children)?;
        let linked = as_dynamic_filter(&linked)
            .ok_or_else(|| internal_datafusion_err!("a derived dynamic filter is no longer a dynamic filter"))?;
        let relinked: Arc<dyn ExecutionPlan> = if let Some(join) = node.downcast_ref::<HashJoinExec>() {
            Arc::new(join.builder().build()?.with_dynamic_filter_expr(linked)?)
        } else if let Some(sort) = node.downcast_ref::<SortExec>() {
            Arc::new(sort.clone().with_dynamic_filter_expr(linked)?)
        } else if let Some(aggregate) = node.downcast_ref::<AggregateExec>() {
            Arc::new(aggregate.clone().with_dynamic_filter_expr(linked)?)
        } else {
            return Ok(Transformed::no(node));
        };
        Ok(Transformed::yes(relinked))
    })
    .map(|t| t.data)
}

fn as_dynamic_filter(expr: &Arc<dyn PhysicalExpr>) -> Option<Arc<DynamicFilterPhysicalExpr>> {
    let any: Arc<dyn std::any::Any + Send + Sync> = Arc::clone(expr) as _;
    any.downcast::<DynamicFilterPhysicalExpr>().ok()
}

/// The first copy of filter `id` below `producer_node` that is a separate
/// object from `producer` (the producer's own reference is not a consumer).
fn find_consumer(
    producer_node: &Arc<dyn ExecutionPlan>,
    id: u64,
    producer: &Arc<DynamicFilterPhysicalExpr>,
) -> Result<Option<Arc<DynamicFilterPhysicalExpr>>> {
    let mut found = None;
    for child in producer_node.children() {
        child.apply(|node| {
            node.apply_expressions(&mut |root| {
                root.apply(|expr| {
                    if expr.expression_id() == Some(id)
                        && let Some(copy) = as_dynamic_filter(expr)
                        && !Arc::ptr_eq(&copy, producer)
                    {
                        found = Some(copy);
                        return Ok(TreeNodeRecursion::Stop);
                    }
                    Ok(TreeNodeRecursion::Continue)
                })
            })
        })?;
        if found.is_some() {
            break;
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::physical_plan::collect;
    use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
    use datafusion_proto::physical_plan::{AsExecutionPlan, DefaultPhysicalExtensionCodec};
    use datafusion_proto::protobuf::PhysicalPlanNode;

    /// Writes `probe.parquet` (keys 0..100_000 in row groups of 1,000) and
    /// a two-row `build` table, and plans a join of the two.
    async fn join_plan(dir: &std::path::Path) -> (SessionContext, Arc<dyn ExecutionPlan>) {
        let config = SessionConfig::new()
            .with_target_partitions(1)
            .set_usize("datafusion.execution.parquet.max_row_group_size", 1_000);
        let ctx = SessionContext::new_with_config(config);
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)]));
        let keys = RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from_iter_values(0..100_000))]).unwrap();
        let probe = dir.join("probe.parquet");
        ctx.read_batch(keys)
            .unwrap()
            .write_parquet(probe.to_str().unwrap(), Default::default(), None)
            .await
            .unwrap();
        ctx.register_parquet("probe", probe.to_str().unwrap(), ParquetReadOptions::default())
            .await
            .unwrap();
        ctx.sql("CREATE TABLE build AS VALUES (7::BIGINT), (90007::BIGINT)")
            .await
            .unwrap();
        let plan = ctx
            .sql("SELECT probe.k FROM build JOIN probe ON build.column1 = probe.k")
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        (ctx, plan)
    }

    /// Rows the plan's scans produced (the build side's two included).
    fn scanned_rows(plan: &Arc<dyn ExecutionPlan>) -> usize {
        let mut rows = 0;
        plan.apply(|node| {
            if node.name() == "DataSourceExec" {
                rows += node.metrics().and_then(|m| m.output_rows()).unwrap_or(0);
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .unwrap();
        rows
    }

    #[tokio::test]
    async fn a_decoded_join_filters_its_scan_once_relinked() {
        let dir = tempfile::tempdir().unwrap();
        let (ctx, plan) = join_plan(dir.path()).await;
        let codec = DefaultPhysicalExtensionCodec {};
        let roundtrip = || {
            let proto = PhysicalPlanNode::try_from_physical_plan(Arc::clone(&plan), &codec).unwrap();
            proto.try_into_physical_plan(&ctx.task_ctx(), &codec).unwrap()
        };

        let cut = roundtrip();
        let rows = collect(Arc::clone(&cut), ctx.task_ctx()).await.unwrap();
        assert_eq!(rows.iter().map(|b| b.num_rows()).sum::<usize>(), 2);
        assert!(scanned_rows(&cut) >= 100_000, "a decoded plan reads every row: {cut:?}");

        let relinked = relink_dynamic_filters(roundtrip()).unwrap();
        let rows = collect(Arc::clone(&relinked), ctx.task_ctx()).await.unwrap();
        assert_eq!(rows.iter().map(|b| b.num_rows()).sum::<usize>(), 2);
        assert!(
            scanned_rows(&relinked) <= 2_002,
            "the relinked join prunes all but two row groups, read {}",
            scanned_rows(&relinked)
        );
    }
}
