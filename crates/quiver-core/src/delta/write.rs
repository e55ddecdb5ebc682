//! Writing Delta tables from a distributed query.
//!
//! `INSERT INTO t`, `INSERT OVERWRITE t` and `CREATE TABLE t USING delta ... AS`
//! plan as
//!
//! ```text
//! DeltaCommitExec            one task: a single commit to the log
//!   CoalescePartitionsExec   (a stage boundary on the cluster)
//!     DeltaWriteExec         one task per input partition: Parquet files, Add actions out
//!       <the query>
//! ```
//!
//! `DeltaWriteExec` writes the rows it receives as Parquet files (partitioned
//! by the table's partition columns, with statistics) and outputs one row per
//! file: its Delta `add` action as JSON. `DeltaCommitExec` gathers them and
//! commits once: it creates the table (CTAS), appends, or replaces every live
//! file (overwrite). Nothing reaches the log before that single commit.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result, internal_err};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties, SendableRecordBatchStream,
};
use deltalake::kernel::transaction::CommitBuilder;
use deltalake::kernel::{Action, Add};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use url::Url;

use super::table::TableVersion;
use super::{delta_err, open, register, storage_options};

/// How a commit treats the files already in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteMode {
    /// Keep them and add the new files.
    Append,
    /// Replace them with the new files.
    Overwrite,
}

fn add_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("add", DataType::Utf8, false)]))
}

fn count_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("count", DataType::UInt64, false)]))
}

fn properties(schema: SchemaRef, partitions: usize) -> Arc<PlanProperties> {
    Arc::new(PlanProperties::new(
        EquivalenceProperties::new(schema),
        Partitioning::UnknownPartitioning(partitions),
        EmissionType::Final,
        Boundedness::Bounded,
    ))
}

/// Writes its input partition as Parquet files of a Delta table; outputs their `add` actions.
#[derive(Debug)]
pub struct DeltaWriteExec {
    input: Arc<dyn ExecutionPlan>,
    url: Url,
    schema: SchemaRef,
    partition_cols: Vec<String>,
    properties: Arc<PlanProperties>,
}

impl DeltaWriteExec {
    /// Writes `input` to the table at `url`, whose schema is `schema`.
    pub fn new(input: Arc<dyn ExecutionPlan>, url: Url, schema: SchemaRef, partition_cols: Vec<String>) -> Self {
        let partitions = input.properties().partitioning.partition_count();
        Self {
            input,
            url,
            schema,
            partition_cols,
            properties: properties(add_schema(), partitions),
        }
    }

    /// The table's location.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The table's schema.
    pub fn table_schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The table's partition columns.
    pub fn partition_cols(&self) -> &[String] {
        &self.partition_cols
    }
}

impl DisplayAs for DeltaWriteExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "DeltaWriteExec: table={}", self.url)?;
        if !self.partition_cols.is_empty() {
            write!(f, ", partition_by=[{}]", self.partition_cols.join(", "))?;
        }
        Ok(())
    }
}

impl ExecutionPlan for DeltaWriteExec {
    fn name(&self) -> &str {
        "DeltaWriteExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        let [input] = children
            .try_into()
            .map_err(|_| DataFusionError::Internal("DeltaWriteExec has one input".into()))?;
        Ok(Arc::new(Self::new(
            input,
            self.url.clone(),
            Arc::clone(&self.schema),
            self.partition_cols.clone(),
        )))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        register();
        let options = storage_options(context.session_config(), &self.url)?;
        let mut input = self.input.execute(partition, Arc::clone(&context))?;
        let url = self.url.clone();
        let schema = Arc::clone(&self.schema);
        let partition_cols = self.partition_cols.clone();
        let work = async move {
            let mut writer = RecordBatchWriter::try_new(url.as_str(), schema, Some(partition_cols), Some(options))
                .map_err(delta_err)?;
            let mut wrote = false;
            while let Some(batch) = input.try_next().await? {
                if batch.num_rows() > 0 {
                    writer.write(batch).await.map_err(delta_err)?;
                    wrote = true;
                }
            }
            let adds = if wrote {
                writer.flush().await.map_err(delta_err)?
            } else {
                vec![]
            };
            let json: Vec<String> = adds
                .iter()
                .map(|a| serde_json::to_string(a).map_err(|e| DataFusionError::Internal(e.to_string())))
                .collect::<Result<_>>()?;
            let column: ArrayRef = Arc::new(StringArray::from(json));
            Ok(RecordBatch::try_new(add_schema(), vec![column])?)
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            add_schema(),
            futures::stream::once(work),
        )))
    }
}

/// Commits the `add` actions of its input to the Delta log, once.
#[derive(Debug)]
pub struct DeltaCommitExec {
    input: Arc<dyn ExecutionPlan>,
    url: Url,
    schema: SchemaRef,
    partition_cols: Vec<String>,
    mode: WriteMode,
    exists: bool,
    properties: Arc<PlanProperties>,
}

impl DeltaCommitExec {
    /// Commits to the table at `url`; creates it when `exists` is false.
    pub fn new(
        input: Arc<dyn ExecutionPlan>,
        url: Url,
        schema: SchemaRef,
        partition_cols: Vec<String>,
        mode: WriteMode,
        exists: bool,
    ) -> Self {
        Self {
            input,
            url,
            schema,
            partition_cols,
            mode,
            exists,
            properties: properties(count_schema(), 1),
        }
    }

    /// The table's location.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The table's schema.
    pub fn table_schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The table's partition columns.
    pub fn partition_cols(&self) -> &[String] {
        &self.partition_cols
    }

    /// Append or overwrite.
    pub fn mode(&self) -> WriteMode {
        self.mode
    }

    /// False when the commit creates the table.
    pub fn exists(&self) -> bool {
        self.exists
    }
}

impl DisplayAs for DeltaCommitExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let what = match (self.exists, self.mode) {
            (false, _) => "create",
            (true, WriteMode::Append) => "append",
            (true, WriteMode::Overwrite) => "overwrite",
        };
        write!(f, "DeltaCommitExec: table={}, {what}", self.url)
    }
}

/// Rows an `add` action says its file holds.
fn rows_of(add: &Add) -> u64 {
    add.stats
        .as_deref()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
        .and_then(|v| v.get("numRecords").and_then(|n| n.as_u64()))
        .unwrap_or(0)
}

impl ExecutionPlan for DeltaCommitExec {
    fn name(&self) -> &str {
        "DeltaCommitExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn required_input_distribution(&self) -> Vec<datafusion::physical_plan::Distribution> {
        vec![datafusion::physical_plan::Distribution::SinglePartition]
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        let [input] = children
            .try_into()
            .map_err(|_| DataFusionError::Internal("DeltaCommitExec has one input".into()))?;
        Ok(Arc::new(Self::new(
            input,
            self.url.clone(),
            Arc::clone(&self.schema),
            self.partition_cols.clone(),
            self.mode,
            self.exists,
        )))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return internal_err!("DeltaCommitExec has one partition, asked for {partition}");
        }
        register();
        let options = storage_options(context.session_config(), &self.url)?;
        let input = self.input.execute(0, Arc::clone(&context))?;
        let (url, schema, partition_cols, mode, exists) = (
            self.url.clone(),
            Arc::clone(&self.schema),
            self.partition_cols.clone(),
            self.mode,
            self.exists,
        );
        let work = async move {
            let batches: Vec<RecordBatch> = input.try_collect().await?;
            let mut adds: Vec<Add> = Vec::new();
            for batch in &batches {
                let column = batch.column(0).as_any().downcast_ref::<StringArray>().ok_or_else(|| {
                    DataFusionError::Internal("DeltaCommitExec expects add actions as strings".into())
                })?;
                for json in column.iter().flatten() {
                    adds.push(serde_json::from_str(json).map_err(|e| DataFusionError::Internal(e.to_string()))?);
                }
            }
            let rows: u64 = adds.iter().map(rows_of).sum();
            commit(&url, schema, partition_cols, mode, exists, adds, options).await?;
            let column: ArrayRef = Arc::new(UInt64Array::from(vec![rows]));
            Ok(RecordBatch::try_new(count_schema(), vec![column])?)
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            count_schema(),
            futures::stream::once(work).boxed(),
        )))
    }
}

async fn commit(
    url: &Url,
    schema: SchemaRef,
    partition_cols: Vec<String>,
    mode: WriteMode,
    exists: bool,
    adds: Vec<Add>,
    options: HashMap<String, String>,
) -> Result<()> {
    use deltalake::kernel::engine::arrow_conversion::TryIntoKernel as _;
    if !exists {
        let struct_type: deltalake::kernel::StructType = schema.as_ref().try_into_kernel().map_err(|e| {
            DataFusionError::Plan(format!("the query's columns cannot be stored in a Delta table: {e}"))
        })?;
        let table = deltalake::DeltaTableBuilder::from_url(url.clone())
            .map_err(delta_err)?
            .with_storage_options(options)
            .build()
            .map_err(delta_err)?;
        table
            .create()
            .with_columns(struct_type.fields().cloned())
            .with_partition_columns(partition_cols)
            .with_actions(adds.into_iter().map(Action::Add))
            .with_save_mode(SaveMode::ErrorIfExists)
            .await
            .map_err(|e| match e {
                deltalake::DeltaTableError::Generic(m) if m.contains("already exists") => {
                    DataFusionError::Plan(format!("a Delta table already exists at {url}; use INSERT INTO"))
                }
                other => delta_err(other),
            })?;
        return Ok(());
    }
    let table = open(url, &TableVersion::Latest, options).await?;
    let snapshot = table.snapshot().map_err(delta_err)?;
    let mut actions: Vec<Action> = Vec::new();
    if mode == WriteMode::Overwrite {
        let now = chrono::Utc::now().timestamp_millis();
        for file in snapshot.log_data().iter() {
            let mut remove = file.remove_action(true);
            remove.deletion_timestamp = Some(now);
            actions.push(Action::Remove(remove));
        }
    }
    actions.extend(adds.into_iter().map(Action::Add));
    let operation = DeltaOperation::Write {
        mode: match mode {
            WriteMode::Append => SaveMode::Append,
            WriteMode::Overwrite => SaveMode::Overwrite,
        },
        partition_by: (!partition_cols.is_empty()).then_some(partition_cols),
        predicate: None,
    };
    CommitBuilder::default()
        .with_actions(actions)
        .build(Some(snapshot), table.log_store(), operation)
        .await
        .map_err(delta_err)?;
    Ok(())
}
