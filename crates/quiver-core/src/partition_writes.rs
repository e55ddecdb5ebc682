//! File writes that run in every task of a stage, as Spark's do.
//!
//! DataFusion's [`DataSinkExec`] writes its input's one partition: the
//! planner puts a `CoalescePartitionsExec` under it, and on a cluster that
//! is a stage boundary, so every row of a `COPY ... TO` or `INSERT INTO` a
//! listing table was shuffled to one task, which wrote all the files. The
//! scheduler's planner ([`crate::scheduler_planner`]) runs
//! [`distribute_writes`] on its plans: a write to a directory becomes a
//! [`PartitionWriteExec`] in the stage that makes the rows, where each task
//! writes its own partition's files through the same sink (DataFusion names
//! each write's files after a random id, so tasks never share a file), and
//! the rows each task wrote are summed into the one `count` row a write
//! returns.
//!
//! Writes that must stay in one task keep DataFusion's plan: a single output
//! file, an overwrite (the sink replaces what is there), a table declaring
//! an order (one sorted input), and sinks other than files. `SET
//! quiver.distributed_writes = false` keeps every write in one task.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use arrow::array::{RecordBatch, UInt64Array};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Result, internal_datafusion_err, internal_err};
use datafusion::datasource::file_format::csv::CsvSink;
use datafusion::datasource::file_format::json::JsonSink;
use datafusion::datasource::file_format::parquet::ParquetSink;
use datafusion::datasource::physical_plan::{FileSink, FileSinkConfig};
use datafusion::datasource::sink::{DataSink, DataSinkExec};
use datafusion::execution::TaskContext;
use datafusion::functions_aggregate::sum::sum_udaf;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::physical_expr::aggregate::AggregateExprBuilder;
use datafusion::physical_expr::expressions::col;
use datafusion::physical_expr::{EquivalenceProperties, Partitioning, PhysicalExpr};
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode, PhysicalGroupBy};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType, execute_input_stream};
use datafusion::physical_plan::metrics::MetricsSet;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties,
    ReplaceChildrenOptions, SendableRecordBatchStream,
};

use crate::arrow_writes::ArrowSink;

/// The file sink config of `sink`, when it is one of DataFusion's file
/// sinks or an [`ArrowSink`].
fn file_sink_config(sink: &dyn DataSink) -> Option<&FileSinkConfig> {
    if let Some(s) = sink.downcast_ref::<ParquetSink>() {
        return Some(s.config());
    }
    if let Some(s) = sink.downcast_ref::<CsvSink>() {
        return Some(s.config());
    }
    if let Some(s) = sink.downcast_ref::<JsonSink>() {
        return Some(s.config());
    }
    sink.downcast_ref::<ArrowSink>().map(ArrowSink::config)
}

/// Whether tasks may each write their own files of `exec`'s output.
fn splittable(exec: &DataSinkExec) -> bool {
    let Some(config) = file_sink_config(exec.sink()) else {
        return false;
    };
    let Some(base) = config.table_paths.first() else {
        return false;
    };
    config.insert_op == InsertOp::Append
        && exec.sort_order().is_none()
        && !config.file_output_mode.single_file_output(base)
}

/// `plan` with each write to a directory split across the tasks of the
/// stage making its rows; see the [module docs](self).
pub fn distribute_writes(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        let Some(exec) = node.downcast_ref::<DataSinkExec>() else {
            return Ok(Transformed::no(node));
        };
        if !splittable(exec) {
            return Ok(Transformed::no(node));
        }
        // Under the sink, the planner's merge of the rows into one partition.
        let rows = match exec.input().downcast_ref::<CoalescePartitionsExec>() {
            Some(merge) => Arc::clone(merge.input()),
            None => Arc::clone(exec.input()),
        };
        if rows.output_partitioning().partition_count() < 2 {
            return Ok(Transformed::no(node));
        }
        let sink = sink_alone(exec, &rows)?;
        let writes: Arc<dyn ExecutionPlan> = Arc::new(PartitionWriteExec::new(rows, sink));
        Ok(Transformed::yes(sum_counts(writes)?))
    })
    .map(|t| t.data)
}

/// `exec` over an empty input of `rows`' schema, sharing `exec`'s sink.
fn sink_alone(exec: &DataSinkExec, rows: &Arc<dyn ExecutionPlan>) -> Result<Arc<DataSinkExec>> {
    let empty: Arc<dyn ExecutionPlan> = Arc::new(EmptyExec::new(rows.schema()));
    let options = ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute);
    as_sink_exec(Arc::new(exec.clone()).replace_children(vec![empty], options)?)
}

/// `plan` as the [`DataSinkExec`] it is.
pub fn as_sink_exec(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<DataSinkExec>> {
    let any: Arc<dyn Any + Send + Sync> = plan;
    any.downcast::<DataSinkExec>()
        .map_err(|_| internal_datafusion_err!("a partitioned write's sink is not a DataSinkExec"))
}

/// One `count` row: the sum of the rows every task wrote.
fn sum_counts(writes: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    let merged: Arc<dyn ExecutionPlan> = Arc::new(CoalescePartitionsExec::new(writes));
    let schema = merged.schema();
    let sum = AggregateExprBuilder::new(sum_udaf(), vec![col("count", &schema)?])
        .schema(Arc::clone(&schema))
        .alias("count")
        .build()?;
    Ok(Arc::new(AggregateExec::try_new(
        AggregateMode::Single,
        PhysicalGroupBy::new_single(vec![]),
        vec![Arc::new(sum)],
        vec![None],
        merged,
        schema,
    )?))
}

/// Writes each partition of its input through a file sink, in the task
/// running that partition, and returns one `count` row per partition.
#[derive(Debug)]
pub struct PartitionWriteExec {
    input: Arc<dyn ExecutionPlan>,
    /// The sink, in a [`DataSinkExec`] over an empty input: how the plan
    /// format carries a sink.
    sink: Arc<DataSinkExec>,
    properties: Arc<PlanProperties>,
}

impl PartitionWriteExec {
    /// Writes each partition of `input` through `sink`'s sink.
    pub fn new(input: Arc<dyn ExecutionPlan>, sink: Arc<DataSinkExec>) -> Self {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(sink.schema()),
            Partitioning::UnknownPartitioning(input.output_partitioning().partition_count()),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        Self {
            input,
            sink,
            properties,
        }
    }

    /// The sink, in a [`DataSinkExec`] over an empty input.
    pub fn sink(&self) -> &Arc<DataSinkExec> {
        &self.sink
    }

    /// The same write with the sink replaced.
    pub fn with_sink(&self, sink: Arc<DataSinkExec>) -> Self {
        Self::new(Arc::clone(&self.input), sink)
    }
}

impl DisplayAs for PartitionWriteExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "PartitionWriteExec: sink=")?;
        self.sink.sink().fmt_as(t, f)
    }
}

impl ExecutionPlan for PartitionWriteExec {
    fn name(&self) -> &str {
        "PartitionWriteExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

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
            1 => Ok(Arc::new(Self::new(children.swap_remove(0), Arc::clone(&self.sink)))),
            n => internal_err!("PartitionWriteExec takes one input, got {n}"),
        }
    }

    /// The sink's own counts (rows and bytes written, where the sink keeps
    /// them), as [`DataSinkExec`] reports them.
    fn metrics(&self) -> Option<MetricsSet> {
        self.sink.sink().metrics()
    }

    /// Writes partition `partition` of the input, as [`DataSinkExec`]
    /// writes its one partition, and returns how many rows it wrote.
    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let sink_schema = Arc::clone(self.sink.sink().schema());
        let data = execute_input_stream(Arc::clone(&self.input), sink_schema, partition, Arc::clone(&context))?;
        let sink = Arc::clone(&self.sink);
        let schema = self.schema();
        let counted = Arc::clone(&schema);
        let stream = futures::stream::once(async move {
            let rows = sink.sink().write_all(data, &context).await?;
            Ok(RecordBatch::try_new(
                counted,
                vec![Arc::new(UInt64Array::from(vec![rows]))],
            )?)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}

#[cfg(test)]
mod tests {
    use datafusion::datasource::MemTable;
    use datafusion::execution::context::QueryPlanner;
    use datafusion::physical_plan::displayable;
    use datafusion::prelude::{SessionConfig, SessionContext};

    use super::*;
    use crate::scheduler_planner::SchedulerQueryPlanner;

    /// A session with a three-partition table `t(k, v)`.
    fn session(distributed: bool) -> SessionContext {
        let options = crate::options::QuiverOptions {
            distributed_writes: distributed,
            ..Default::default()
        };
        let config = SessionConfig::new()
            .with_target_partitions(3)
            .with_option_extension(options);
        let ctx = SessionContext::new_with_config(config);
        let batch = |k: &str, v: i64| {
            RecordBatch::try_from_iter(vec![
                ("k", Arc::new(arrow::array::StringArray::from(vec![k])) as _),
                ("v", Arc::new(arrow::array::Int64Array::from(vec![v])) as _),
            ])
            .unwrap()
        };
        let parts = vec![vec![batch("a", 1)], vec![batch("b", 2)], vec![batch("a", 3)]];
        let table = MemTable::try_new(parts[0][0].schema(), parts).unwrap();
        ctx.register_table("t", Arc::new(table)).unwrap();
        ctx
    }

    async fn plan(ctx: &SessionContext, sql: &str) -> String {
        let logical = ctx.sql(sql).await.unwrap().into_optimized_plan().unwrap();
        let plan = SchedulerQueryPlanner
            .create_physical_plan(&logical, &ctx.state())
            .await
            .unwrap();
        displayable(plan.as_ref()).indent(false).to_string()
    }

    #[tokio::test]
    async fn writes_to_a_directory_run_in_every_partition() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = session(true);
        for sql in [
            format!(
                "COPY t TO '{}/p/' STORED AS PARQUET PARTITIONED BY (k)",
                dir.path().display()
            ),
            format!("COPY t TO '{}/c/' STORED AS CSV", dir.path().display()),
            format!("COPY t TO '{}/a/' STORED AS ARROW", dir.path().display()),
        ] {
            let shown = plan(&ctx, &sql).await;
            assert!(shown.contains("PartitionWriteExec"), "{sql}:\n{shown}");
            assert!(!shown.contains("DataSinkExec"), "{sql}:\n{shown}");
            assert!(
                shown.contains("AggregateExec: mode=Single, gby=[], aggr=[count]"),
                "{shown}"
            );
        }
    }

    #[tokio::test]
    async fn writes_that_must_stay_in_one_task_keep_their_plan() {
        let dir = tempfile::tempdir().unwrap();
        let one_file = format!("COPY t TO '{}/one.parquet' STORED AS PARQUET", dir.path().display());
        let directory = format!("COPY t TO '{}/p/' STORED AS PARQUET", dir.path().display());
        for (ctx, sql) in [(session(true), &one_file), (session(false), &directory)] {
            let shown = plan(&ctx, sql).await;
            assert!(shown.contains("DataSinkExec"), "{sql}:\n{shown}");
            assert!(!shown.contains("PartitionWriteExec"), "{sql}:\n{shown}");
        }
    }

    #[tokio::test]
    async fn a_write_in_every_partition_reports_what_its_sink_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = session(true);
        let sql = format!("COPY t TO '{}/p/' STORED AS PARQUET", dir.path().display());
        let logical = ctx.sql(&sql).await.unwrap().into_optimized_plan().unwrap();
        let plan = SchedulerQueryPlanner
            .create_physical_plan(&logical, &ctx.state())
            .await
            .unwrap();
        datafusion::physical_plan::collect(Arc::clone(&plan), ctx.task_ctx())
            .await
            .unwrap();
        let mut found = None;
        plan.apply(|node| {
            if node.downcast_ref::<PartitionWriteExec>().is_some() {
                found = node.metrics();
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .unwrap();
        let metrics = found.expect("the write reports its sink's metrics");
        let rows = metrics.sum_by_name("rows_written").map(|m| m.as_usize());
        assert_eq!(rows, Some(3), "{metrics}");
    }
}
