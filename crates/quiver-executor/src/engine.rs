//! The executor's execution engine: Ballista's, plus repairs to plans that
//! lost information on the way from the scheduler.
//!
//! datafusion-proto 55 does not carry a file scan's compression: a scan of
//! `orders.csv.gz` arrives as a plain CSV scan and reads gzip bytes as text.
//! DataFusion only lists compressed files whose names end in the compressed
//! extension (`.csv.gz`, `.json.bz2`, ...), so the compression can be read
//! back from the file names; [`restore_compression`] does that before a task
//! runs.
//!
//! Dynamic filters (a join's build-side keys, pushed into the scan of its
//! probe side) arrive with producer and consumer cut apart;
//! [`relink_dynamic_filters`] joins them again.
//!
//! Shuffle partitions read from other executors arrive over Arrow Flight
//! with their dictionaries hydrated (a partition column's
//! `Dictionary(UInt16, Utf8)` as `Utf8`); [`conform_shuffle_reads`] gives
//! them their declared types back ([`quiver_core::conform`]).
//!
//! An aggregate over the one empty grouping set (`GROUP BY GROUPING SETS
//! (())`) arrives with no grouping set at all: the plan format flattens the
//! sets' null masks into one list, and an empty set leaves nothing in it.
//! Such an aggregate yields no row, where it must yield one group over all
//! rows; [`restore_empty_grouping_set`] gives the set back.
//!
//! A `COPY ... TO` a CSV file arrives with its unset date and time formats
//! set to empty strings (the plan format writes "unset" so and reads it
//! back as a format), and wrote every date, time and timestamp as an empty
//! field; [`restore_csv_formats`] unsets them again.
//!
//! A one-row or empty leaf under a union becomes an in-memory scan
//! ([`quiver_core::union_leaves`]), so every task of the union's stage
//! reports the same operators, however Ballista split the branches between
//! them.
//!
//! Each stage's executor is wrapped in a [`TaskErrors`], so a failing
//! task's error reaches the client in a form it can rebuild.
//!
//! With a cluster secret, a task runs only when its settings carry the
//! scheduler's task proof ([`ClusterSecret::accepts_task`]): anyone else
//! who reaches the gRPC port and launches a task (a plan that reads the
//! executor's files or its S3 credentials' data, or writes) is refused
//! before the plan runs.
//!
//! Parquet scans of object stores read the next row group ahead while one
//! decodes and keep page indexes with cached footers ([`remote_parquet`]).
//!
//! [`compact_shuffle_input`] puts a [`CompactExec`] under the stage's
//! shuffle writer, so string views do not drag whole Parquet pages into
//! shuffle files and slices of large arrays do not make the sort shuffle
//! writer spill early.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use ballista_core::JobId;
use ballista_core::client::BallistaClient;
use ballista_core::client_pool::{BallistaClientPool, PooledClient};
use ballista_core::execution_plans::sort_shuffle::SortShuffleWriterExec;
use ballista_core::execution_plans::{ShuffleReaderExec, ShuffleWriterExec};
use ballista_core::extension::BallistaConfigGrpcEndpoint;
use ballista_core::utils::GrpcClientConfig;
use ballista_executor::execution_engine::{DefaultExecutionEngine, ExecutionEngine, QueryStageExecutor};
use datafusion::arrow::csv::WriterBuilder;
use datafusion::common::file_options::csv_writer::CsvWriterOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::file_format::csv::CsvSink;
use datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use datafusion::datasource::physical_plan::FileSink;
use datafusion::datasource::physical_plan::{FileScanConfig, FileScanConfigBuilder};
use datafusion::datasource::sink::DataSinkExec;
use datafusion::datasource::source::DataSourceExec;
use datafusion::physical_plan::aggregates::{AggregateExec, PhysicalGroupBy};
use datafusion::physical_plan::{ChildrenPropertiesMode, ExecutionPlan, ReplaceChildrenOptions};
use datafusion::prelude::SessionConfig;
use quiver_core::cluster_secret::ClusterSecret;
use quiver_core::conform::{ConformExec, has_dictionary};
use quiver_core::options::quiver_options;
use quiver_core::partition_writes::PartitionWriteExec;
use quiver_core::storage::remote_parquet::{ReadAhead, remote_parquet};

use crate::compact::CompactExec;
use crate::dynamic_filter::relink_dynamic_filters;
use crate::task_errors::TaskErrors;

/// Ballista's engine with Quiver's plan repairs.
pub struct QuiverExecutionEngine {
    inner: DefaultExecutionEngine,
    /// When set, tasks must prove they come from this cluster's scheduler.
    cluster_secret: Option<ClusterSecret>,
}

impl QuiverExecutionEngine {
    /// An engine whose shuffle clients stay open `client_ttl` when idle, and
    /// that runs only tasks stamped with `cluster_secret` when given.
    pub fn new(client_ttl: Duration, cluster_secret: Option<ClusterSecret>) -> Self {
        Self {
            inner: DefaultExecutionEngine::with_client_pool(ShuffleClientPool::new(client_ttl)),
            cluster_secret,
        }
    }
}

type PoolKey = (String, u16, GrpcClientConfig);
type Idle = parking_lot::Mutex<HashMap<PoolKey, Vec<(BallistaClient, Instant)>>>;

/// Reuses connections to other executors for shuffle reads, so a
/// shuffle-heavy query does not open (and leave in TIME_WAIT) one connection
/// per fetch. Connections idle longer than the TTL are closed.
pub struct ShuffleClientPool {
    idle: Arc<Idle>,
}

impl std::fmt::Debug for ShuffleClientPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShuffleClientPool")
            .field("endpoints", &self.idle.lock().len())
            .finish()
    }
}

impl ShuffleClientPool {
    /// A pool that closes connections idle for `ttl`; its sweeper stops when the pool is dropped.
    pub fn new(ttl: Duration) -> Arc<Self> {
        let idle: Arc<Idle> = Arc::default();
        let weak: Weak<Idle> = Arc::downgrade(&idle);
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let mut tick = tokio::time::interval(ttl.max(Duration::from_secs(3)) / 3);
                loop {
                    tick.tick().await;
                    let Some(idle) = weak.upgrade() else { break };
                    idle.lock().retain(|_, clients| {
                        clients.retain(|(_, since)| since.elapsed() < ttl);
                        !clients.is_empty()
                    });
                }
            });
        }
        Arc::new(Self { idle })
    }
}

#[async_trait::async_trait]
impl BallistaClientPool for ShuffleClientPool {
    async fn acquire(
        &self,
        host: &str,
        port: u16,
        config: &GrpcClientConfig,
        customize_endpoint: Option<Arc<BallistaConfigGrpcEndpoint>>,
    ) -> ballista_core::error::Result<PooledClient> {
        let key: PoolKey = (host.to_owned(), port, config.clone());
        let reused = self.idle.lock().get_mut(&key).and_then(Vec::pop).map(|(c, _)| c);
        let client = match reused {
            Some(c) => c,
            None => {
                BallistaClient::try_new(
                    host,
                    port,
                    config.max_message_size,
                    config.use_tls,
                    customize_endpoint,
                    config.io_retries_times,
                    config.io_retry_wait_time_ms,
                    config.initial_connection_window_size,
                    config.initial_stream_window_size,
                )
                .await?
            }
        };
        let idle = Arc::clone(&self.idle);
        Ok(PooledClient::new(
            client,
            Box::new(move |c| idle.lock().entry(key).or_default().push((c, Instant::now()))),
        ))
    }

    async fn evict_idle(&self) {}
}

impl ExecutionEngine for QuiverExecutionEngine {
    fn create_query_stage_exec(
        &self,
        job_id: JobId,
        stage_id: usize,
        task_id: usize,
        global_output_partition_ids: Vec<usize>,
        plan: Arc<dyn ExecutionPlan>,
        work_dir: &str,
        config: &SessionConfig,
    ) -> Result<Arc<dyn QueryStageExecutor>> {
        if let Some(secret) = &self.cluster_secret
            && !secret.accepts_task(config)
        {
            tracing::warn!(
                job = %job_id,
                stage = stage_id,
                "refused a task: it does not carry the cluster's task proof (it was not launched by this cluster's scheduler)"
            );
            return Err(DataFusionError::Execution(format!(
                "task of job {job_id} stage {stage_id} refused: it was not launched by this cluster's scheduler \
                 (the scheduler and executors need the same cluster secret)"
            )));
        }
        let plan = restore_compression(plan)?;
        // Every task of a union's stage reports the same operators.
        let plan = quiver_core::union_leaves::union_leaves_as_scans(plan)?;
        let plan = restore_csv_formats(restore_empty_grouping_set(plan)?)?;
        let plan = compact_shuffle_input(conform_shuffle_reads(relink_dynamic_filters(plan)?)?)?;
        let plan = remote_parquet(plan, ReadAhead::of(Some(&quiver_options(config))))?;
        let stage = self.inner.create_query_stage_exec(
            job_id,
            stage_id,
            task_id,
            global_output_partition_ids,
            plan,
            work_dir,
            config,
        )?;
        Ok(TaskErrors::wrap(stage))
    }
}

/// Puts a [`ConformExec`] above every shuffle reader whose rows hold a
/// dictionary, which Flight delivers hydrated.
///
/// A sort's range shuffle reader merges what it fetches (always over
/// Flight) before anything above it sees a row, so it cannot be helped from
/// outside: a dictionary column there still fails. Quiver's own tables keep
/// dictionaries out of partition columns ([`quiver_core::tables`]).
pub fn conform_shuffle_reads(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        if node.downcast_ref::<ShuffleReaderExec>().is_some() && has_dictionary(&node.schema()) {
            return Ok(Transformed::yes(
                Arc::new(ConformExec::new(node)) as Arc<dyn ExecutionPlan>
            ));
        }
        Ok(Transformed::no(node))
    })
    .map(|t| t.data)
}

/// `stage` (a shuffle writer over its input) with a [`CompactExec`]
/// between the writer and its input.
///
/// Only the hash and sort shuffle writers are wrapped: the range writer
/// looks at its input's operators to plan its output.
pub fn compact_shuffle_input(stage: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    if stage.downcast_ref::<ShuffleWriterExec>().is_none() && stage.downcast_ref::<SortShuffleWriterExec>().is_none() {
        return Ok(stage);
    }
    let [input] = stage.children()[..] else {
        return Ok(stage);
    };
    let compacted: Arc<dyn ExecutionPlan> = Arc::new(CompactExec::new(Arc::clone(input)));
    Arc::clone(&stage).replace_children(
        vec![compacted],
        ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
    )
}

/// A CSV writer's date and time formats: how to read one, how to set it.
type CsvFormat = (
    fn(&WriterBuilder) -> Option<&str>,
    fn(WriterBuilder, String) -> WriterBuilder,
);

/// Every date and time format of a CSV writer.
const CSV_FORMATS: [CsvFormat; 5] = [
    (WriterBuilder::date_format, WriterBuilder::with_date_format),
    (WriterBuilder::datetime_format, WriterBuilder::with_datetime_format),
    (WriterBuilder::time_format, WriterBuilder::with_time_format),
    (WriterBuilder::timestamp_format, WriterBuilder::with_timestamp_format),
    (
        WriterBuilder::timestamp_tz_format,
        WriterBuilder::with_timestamp_tz_format,
    ),
];

/// Unsets a CSV sink's date and time formats that arrived as empty strings
/// (see the [module docs](self)); the writer then uses Arrow's defaults, as
/// in one process.
pub fn restore_csv_formats(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        if let Some(write) = node.downcast_ref::<PartitionWriteExec>() {
            return Ok(match restored_csv_sink(write.sink()) {
                Some(sink) => Transformed::yes(Arc::new(write.with_sink(Arc::new(sink))) as Arc<dyn ExecutionPlan>),
                None => Transformed::no(node),
            });
        }
        let Some(exec) = node.downcast_ref::<DataSinkExec>() else {
            return Ok(Transformed::no(node));
        };
        Ok(match restored_csv_sink(exec) {
            Some(exec) => Transformed::yes(Arc::new(exec) as Arc<dyn ExecutionPlan>),
            None => Transformed::no(node),
        })
    })
    .map(|t| t.data)
}

/// `exec` with its CSV sink's empty date and time formats unset, when it
/// has such a sink.
fn restored_csv_sink(exec: &DataSinkExec) -> Option<DataSinkExec> {
    let csv = exec.sink().downcast_ref::<CsvSink>()?;
    let options = &csv.writer_options().writer_options;
    if !CSV_FORMATS.iter().any(|(format, _)| format(options) == Some("")) {
        return None;
    }
    let unformatted = WriterBuilder::new()
        .with_header(options.header())
        .with_delimiter(options.delimiter())
        .with_quote(options.quote())
        .with_escape(options.escape())
        .with_double_quote(options.double_quote())
        .with_null(options.null().to_owned())
        .with_ignore_leading_whitespace(options.ignore_leading_whitespace())
        .with_ignore_trailing_whitespace(options.ignore_trailing_whitespace())
        .with_quote_style(options.quote_style())
        .with_line_terminator(options.line_terminator().clone());
    let builder = CSV_FORMATS.iter().fold(unformatted, |builder, (format, with)| {
        match format(options).filter(|f| !f.is_empty()) {
            Some(f) => with(builder, f.to_owned()),
            None => builder,
        }
    });
    let writer_options = CsvWriterOptions {
        writer_options: builder,
        ..csv.writer_options().clone()
    };
    let sink = CsvSink::new(csv.config().clone(), writer_options);
    Some(DataSinkExec::new(
        Arc::clone(exec.input()),
        Arc::new(sink),
        exec.sort_order().clone(),
    ))
}

/// Gives back the one empty grouping set of `GROUP BY GROUPING SETS (())`
/// aggregates that lost it on the way (see the [module docs](self)).
///
/// A grouping-set aggregate without grouping expressions can only have come
/// from empty sets; with no set left it would emit no row, even over a
/// non-empty input. One set is restored: `GROUPING SETS ((), ())` is the
/// only query that loses more, and it loses its duplicate group either way.
pub fn restore_empty_grouping_set(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        let Some(agg) = node.downcast_ref::<AggregateExec>() else {
            return Ok(Transformed::no(node));
        };
        let group_by = agg.group_expr();
        if !(group_by.has_grouping_set() && group_by.expr().is_empty() && group_by.groups().is_empty()) {
            return Ok(Transformed::no(node));
        }
        let restored = PhysicalGroupBy::new(vec![], vec![], vec![vec![]], true);
        let repaired = AggregateExec::try_new(
            *agg.mode(),
            restored,
            agg.aggr_expr().to_vec(),
            agg.filter_expr().to_vec(),
            Arc::clone(agg.input()),
            agg.input_schema(),
        )?
        .with_limit_options(agg.limit_options());
        Ok(Transformed::yes(Arc::new(repaired) as Arc<dyn ExecutionPlan>))
    })
    .map(|t| t.data)
}

/// The compression a file name says it has.
fn compression_of(path: &str) -> Option<FileCompressionType> {
    let lower = path.to_ascii_lowercase();
    [
        (".gz", FileCompressionType::GZIP),
        (".bz2", FileCompressionType::BZIP2),
        (".xz", FileCompressionType::XZ),
        (".zst", FileCompressionType::ZSTD),
    ]
    .into_iter()
    .find(|(ext, _)| lower.ends_with(ext))
    .map(|(_, t)| t)
}

/// Sets the compression of uncompressed-looking file scans whose files are compressed.
pub fn restore_compression(plan: Arc<dyn ExecutionPlan>) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        let Some(exec) = node.downcast_ref::<DataSourceExec>() else {
            return Ok(Transformed::no(node));
        };
        let Some(config) = exec.data_source().downcast_ref::<FileScanConfig>() else {
            return Ok(Transformed::no(node));
        };
        if config.file_compression_type.is_compressed() {
            return Ok(Transformed::no(node));
        }
        let first = config
            .file_groups
            .iter()
            .flat_map(|g| g.files())
            .map(|f| f.object_meta.location.to_string())
            .next();
        let Some(compression) = first.as_deref().and_then(compression_of) else {
            return Ok(Transformed::no(node));
        };
        // Parquet compresses inside the file; only whole-file formats are affected.
        if config.file_source().file_type() == "parquet" {
            return Ok(Transformed::no(node));
        }
        let repaired = FileScanConfigBuilder::from(config.clone())
            .with_file_compression_type(compression)
            .build();
        Ok(Transformed::yes(
            DataSourceExec::from_data_source(repaired) as Arc<dyn ExecutionPlan>
        ))
    })
    .map(|t| t.data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_empty_grouping_set_survives_the_trip_to_an_executor() -> Result<()> {
        use datafusion::arrow::util::pretty::pretty_format_batches;
        use datafusion::physical_plan::collect;
        use datafusion::prelude::SessionContext;
        use datafusion_proto::bytes::{physical_plan_from_bytes, physical_plan_to_bytes};

        let ctx = SessionContext::new();
        let answer = |plan: Arc<dyn ExecutionPlan>| {
            let task = ctx.task_ctx();
            async move {
                Ok::<_, datafusion::error::DataFusionError>(
                    pretty_format_batches(&collect(plan, task).await?)?.to_string(),
                )
            }
        };
        for (sql, expected) in [
            (
                "SELECT count(*) AS n FROM (VALUES (1), (2)) t(x) GROUP BY GROUPING SETS (())",
                "| 2 |",
            ),
            (
                "SELECT sum(x) AS n FROM (VALUES (1), (2)) t(x) WHERE x > 5 GROUP BY GROUPING SETS (())",
                "|   |",
            ),
        ] {
            let plan = ctx.sql(sql).await?.create_physical_plan().await?;
            let bytes = physical_plan_to_bytes(Arc::clone(&plan))?;
            let shipped = || physical_plan_from_bytes(&bytes, &ctx.task_ctx());
            // What the plan format does to it, and what the repair gives back.
            assert!(!answer(shipped()?).await?.contains(expected), "{sql}: upstream fixed?");
            let repaired = answer(restore_empty_grouping_set(shipped()?)?).await?;
            assert_eq!(repaired, answer(plan).await?, "{sql}");
            assert!(repaired.contains(expected), "{sql}: {repaired}");
        }
        Ok(())
    }

    #[tokio::test]
    async fn csv_writes_keep_dates_and_times_after_the_trip_to_an_executor() -> Result<()> {
        use datafusion::physical_plan::collect;
        use datafusion::prelude::SessionContext;
        use datafusion_proto::bytes::{physical_plan_from_bytes, physical_plan_to_bytes};

        let dir = tempfile::tempdir().unwrap();
        let ctx = SessionContext::new();
        let written = |name: &str, plan: Arc<dyn ExecutionPlan>| {
            let task = ctx.task_ctx();
            let path = dir.path().join(name);
            async move {
                collect(plan, task).await?;
                Ok::<_, DataFusionError>(std::fs::read_to_string(path)?)
            }
        };
        let copy = |name: &str| {
            format!(
                "COPY (SELECT TIMESTAMP '2020-12-10T01:02:03' AS t, DATE '2020-12-10' AS d, TIME '04:05:06' AS tm) \
                 TO '{}' STORED AS CSV",
                dir.path().join(name).display()
            )
        };
        let expected = "t,d,tm\n2020-12-10T01:02:03,2020-12-10,04:05:06\n";
        let one_process = ctx.sql(&copy("local.csv")).await?.create_physical_plan().await?;
        assert_eq!(written("local.csv", one_process).await?, expected);

        let shipped = |name: &str| {
            let ctx = &ctx;
            let sql = copy(name);
            async move {
                let plan = ctx.sql(&sql).await?.create_physical_plan().await?;
                physical_plan_from_bytes(&physical_plan_to_bytes(plan)?, &ctx.task_ctx())
            }
        };
        // What the plan format does to it, and what the repair gives back.
        let lost = written("shipped.csv", shipped("shipped.csv").await?).await?;
        assert_eq!(lost, "t,d,tm\n,,\n", "upstream fixed?");
        let repaired = restore_csv_formats(shipped("repaired.csv").await?)?;
        assert_eq!(written("repaired.csv", repaired).await?, expected);
        Ok(())
    }

    #[test]
    fn compression_follows_the_extension() {
        assert_eq!(compression_of("a/b.csv.gz"), Some(FileCompressionType::GZIP));
        assert_eq!(compression_of("x.JSON.BZ2"), Some(FileCompressionType::BZIP2));
        assert_eq!(compression_of("x.csv"), None);
    }
}
