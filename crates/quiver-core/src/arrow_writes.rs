//! Arrow IPC file writes that can be sent to executors.
//!
//! `COPY ... STORED AS ARROW` and `INSERT INTO` an Arrow external table plan
//! a [`DataSinkExec`] over DataFusion's Arrow file sink. That sink is private
//! to its crate and DataFusion's plan format has no encoding of it, so on a
//! cluster the executors could not decode such a task. The scheduler's
//! planner ([`crate::scheduler_planner`]) therefore rewrites these writes with
//! [`arrow_writes_travel`] before planning them: they get an
//! [`ArrowWriteFormat`], whose writer plan carries an [`ArrowSink`] — the
//! same [`FileSinkConfig`] DataFusion built, which the plan codec
//! ([`crate::codec`]) encodes with DataFusion's own proto for it. On the
//! executor, [`ArrowSink`] asks DataFusion's Arrow format for its sink and
//! writes through it, so the files are the ones DataFusion writes.
//!
//! Single-process sessions keep DataFusion's sink; nothing is rewritten there.
//!
//! ```
//! # use datafusion::datasource::sink::DataSinkExec;
//! # use datafusion::prelude::SessionContext;
//! # use quiver_core::arrow_writes::{ArrowSink, arrow_writes_travel};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> datafusion::common::Result<()> {
//! let ctx = SessionContext::new();
//! let plan = ctx
//!     .sql("COPY (SELECT 1 AS x) TO '/tmp/x.arrow' STORED AS ARROW")
//!     .await?
//!     .into_optimized_plan()?;
//! let physical = ctx.state().create_physical_plan(&arrow_writes_travel(plan)?).await?;
//! let write = physical.downcast_ref::<DataSinkExec>().unwrap();
//! assert!(write.sink().downcast_ref::<ArrowSink>().is_some());
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::catalog::default_table_source::{provider_as_source, source_as_provider};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{GetExt, Result, Statistics, internal_datafusion_err};
use datafusion::datasource::TableProvider;
use datafusion::datasource::file_format::arrow::{ArrowFormat, ArrowFormatFactory};
use datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use datafusion::datasource::file_format::{FileFormat, FileFormatFactory, file_type_to_format, format_as_file_type};
use datafusion::datasource::listing::{ListingOptions, ListingTable};
use datafusion::datasource::physical_plan::{FileScanConfig, FileSinkConfig, FileSource};
use datafusion::datasource::sink::{DataSink, DataSinkExec};
use datafusion::datasource::table_schema::TableSchema;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{DmlStatement, LogicalPlan, WriteOp};
use datafusion::physical_expr::LexRequirement;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, SendableRecordBatchStream};
use datafusion_datasource::display::FileGroupDisplay;
use object_store::{ObjectMeta, ObjectStore};

use crate::tables;

/// Rewrites the Arrow file writes of `plan` so their physical plans can be
/// sent to executors; every other node is left as it is. See the
/// [module docs](self).
pub fn arrow_writes_travel(plan: LogicalPlan) -> Result<LogicalPlan> {
    plan.transform_up(|node| match node {
        LogicalPlan::Copy(mut copy) if is_arrow_factory(&file_type_to_format(&copy.file_type)?) => {
            copy.file_type = format_as_file_type(Arc::new(ArrowWriteFactory(ArrowFormatFactory::new())));
            Ok(Transformed::yes(LogicalPlan::Copy(copy)))
        }
        LogicalPlan::Dml(dml) if matches!(dml.op, WriteOp::Insert(_)) => match arrow_table(&dml)? {
            Some(table) => Ok(Transformed::yes(LogicalPlan::Dml(DmlStatement::new(
                dml.table_name,
                provider_as_source(table),
                dml.op,
                dml.input,
            )))),
            None => Ok(Transformed::no(LogicalPlan::Dml(dml))),
        },
        other => Ok(Transformed::no(other)),
    })
    .map(|t| t.data)
}

fn is_arrow_factory(factory: &Arc<dyn FileFormatFactory>) -> bool {
    factory.downcast_ref::<ArrowFormatFactory>().is_some()
}

/// The target of an INSERT as a listing table writing through
/// [`ArrowWriteFormat`], when it is a listing table of Arrow files.
fn arrow_table(dml: &DmlStatement) -> Result<Option<Arc<dyn TableProvider>>> {
    let Ok(provider) = source_as_provider(&dml.target) else {
        return Ok(None);
    };
    let Some(listing) = provider.downcast_ref::<ListingTable>() else {
        return Ok(None);
    };
    let options = listing.options();
    if options.format.downcast_ref::<ArrowFormat>().is_none() {
        return Ok(None);
    }
    let options = ListingOptions {
        format: Arc::new(ArrowWriteFormat::default()),
        ..options.clone()
    };
    tables::with_options(listing, options).map(Some)
}

/// DataFusion's Arrow file format factory, making [`ArrowWriteFormat`]s.
#[derive(Debug, Default)]
pub struct ArrowWriteFactory(ArrowFormatFactory);

impl GetExt for ArrowWriteFactory {
    fn get_ext(&self) -> String {
        self.0.get_ext()
    }
}

impl FileFormatFactory for ArrowWriteFactory {
    fn create(&self, state: &dyn Session, format_options: &HashMap<String, String>) -> Result<Arc<dyn FileFormat>> {
        Ok(Arc::new(ArrowWriteFormat(self.0.create(state, format_options)?)))
    }

    fn default(&self) -> Arc<dyn FileFormat> {
        Arc::new(ArrowWriteFormat(self.0.default()))
    }
}

/// DataFusion's Arrow file format whose writer plan carries an [`ArrowSink`].
#[derive(Debug)]
pub struct ArrowWriteFormat(Arc<dyn FileFormat>);

impl Default for ArrowWriteFormat {
    fn default() -> Self {
        Self(Arc::new(ArrowFormat))
    }
}

#[async_trait]
impl FileFormat for ArrowWriteFormat {
    fn get_ext(&self) -> String {
        self.0.get_ext()
    }

    fn get_ext_with_compression(&self, compression: &FileCompressionType) -> Result<String> {
        self.0.get_ext_with_compression(compression)
    }

    fn compression_type(&self) -> Option<FileCompressionType> {
        self.0.compression_type()
    }

    async fn infer_schema(
        &self,
        state: &dyn Session,
        store: &Arc<dyn ObjectStore>,
        objects: &[ObjectMeta],
    ) -> Result<SchemaRef> {
        self.0.infer_schema(state, store, objects).await
    }

    async fn infer_stats(
        &self,
        state: &dyn Session,
        store: &Arc<dyn ObjectStore>,
        table_schema: SchemaRef,
        object: &ObjectMeta,
    ) -> Result<Statistics> {
        self.0.infer_stats(state, store, table_schema, object).await
    }

    async fn create_physical_plan(&self, state: &dyn Session, conf: FileScanConfig) -> Result<Arc<dyn ExecutionPlan>> {
        self.0.create_physical_plan(state, conf).await
    }

    /// DataFusion's writer plan (with its checks), with the sink swapped
    /// for an [`ArrowSink`] of the same config.
    async fn create_writer_physical_plan(
        &self,
        input: Arc<dyn ExecutionPlan>,
        state: &dyn Session,
        conf: FileSinkConfig,
        order_requirements: Option<LexRequirement>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let plan = self
            .0
            .create_writer_physical_plan(input, state, conf.clone(), order_requirements)
            .await?;
        let exec = plan.downcast_ref::<DataSinkExec>().ok_or_else(|| {
            internal_datafusion_err!(
                "DataFusion's Arrow format planned a write without a DataSinkExec: {}",
                plan.name()
            )
        })?;
        Ok(Arc::new(DataSinkExec::new(
            Arc::clone(exec.input()),
            Arc::new(ArrowSink::new(conf)),
            exec.sort_order().clone(),
        )))
    }

    fn file_source(&self, table_schema: TableSchema) -> Arc<dyn FileSource> {
        self.0.file_source(table_schema)
    }
}

/// Writes Arrow IPC files through DataFusion's Arrow file sink, built where
/// it runs from the [`FileSinkConfig`] it carries.
#[derive(Debug)]
pub struct ArrowSink {
    config: FileSinkConfig,
}

impl ArrowSink {
    /// A sink writing as `config` says.
    pub fn new(config: FileSinkConfig) -> Self {
        Self { config }
    }

    /// Where and how it writes.
    pub fn config(&self) -> &FileSinkConfig {
        &self.config
    }

    /// DataFusion's Arrow sink for this config, built in `context`'s session.
    async fn datafusion_sink(&self, context: &Arc<TaskContext>) -> Result<Arc<dyn ExecutionPlan>> {
        let state = SessionStateBuilder::new()
            .with_config(context.session_config().clone())
            .with_runtime_env(context.runtime_env())
            .build();
        let input = Arc::new(EmptyExec::new(Arc::clone(self.config.output_schema())));
        ArrowFormat
            .create_writer_physical_plan(input, &state, self.config.clone(), None)
            .await
    }
}

impl DisplayAs for ArrowSink {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match t {
            DisplayFormatType::Default | DisplayFormatType::Verbose => {
                write!(f, "ArrowFileSink(file_groups=")?;
                FileGroupDisplay(&self.config.file_group).fmt_as(t, f)?;
                write!(f, ")")
            }
            DisplayFormatType::TreeRender => {
                writeln!(f, "format: arrow")?;
                write!(f, "file={}", self.config.original_url)
            }
        }
    }
}

#[async_trait]
impl DataSink for ArrowSink {
    fn schema(&self) -> &SchemaRef {
        self.config.output_schema()
    }

    async fn write_all(&self, data: SendableRecordBatchStream, context: &Arc<TaskContext>) -> Result<u64> {
        let plan = self.datafusion_sink(context).await?;
        let exec = plan.downcast_ref::<DataSinkExec>().ok_or_else(|| {
            internal_datafusion_err!("DataFusion's Arrow format planned a write without a DataSinkExec")
        })?;
        exec.sink().write_all(data, context).await
    }
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::SessionContext;

    use datafusion::logical_expr::dml::InsertOp;

    use super::*;

    async fn logical(ctx: &SessionContext, sql: &str) -> LogicalPlan {
        ctx.sql(sql).await.unwrap().into_optimized_plan().unwrap()
    }

    fn sink_of(plan: &Arc<dyn ExecutionPlan>) -> Option<&dyn DataSink> {
        plan.downcast_ref::<DataSinkExec>().map(|e| e.sink())
    }

    #[tokio::test]
    async fn copy_to_arrow_plans_a_sink_that_carries_its_config() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("{}/out.arrow", dir.path().display());
        let ctx = SessionContext::new();
        let plan = logical(&ctx, &format!("COPY (SELECT 1 AS x) TO '{url}' STORED AS ARROW")).await;
        let physical = ctx
            .state()
            .create_physical_plan(&arrow_writes_travel(plan).unwrap())
            .await
            .unwrap();
        let sink = sink_of(&physical).expect("a DataSinkExec");
        let sink = sink.downcast_ref::<ArrowSink>().expect("an ArrowSink");
        assert_eq!(sink.config().original_url, url);
        assert_eq!(sink.config().insert_op, InsertOp::Append);
    }
}
