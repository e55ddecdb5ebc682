//! Plan codecs: how Quiver's own table types and operators travel between processes.
//!
//! Ballista serializes plans with datafusion-proto, which knows DataFusion's
//! built-in tables and operators. [`QuiverLogicalCodec`] adds Quiver's tables
//! (the [`GlobTable`], a file listing narrowed by a pattern, and the Delta
//! [`DeltaTable`]) and DataFusion's in-memory [`MemTable`], whose rows travel
//! inside the plan as Spark's `LocalRelation` does (up to
//! [`MAX_MEMORY_TABLE_BYTES`]), and the tables of `generate_series` and
//! `range`, which travel as their arguments; [`QuiverPhysicalCodec`] adds
//! its operators (the Delta write and commit, the partition constants
//! barrier, the writes of [`crate::partition_writes`], the one-task plans of
//! [`crate::local_plan`]) and DataFusion's
//! operators its plan format cannot carry ([`operators`]). Both mark calls of Spark's functions
//! ([`crate::spark_functions`]) and of the aggregate that checks a scalar
//! subquery's rows ([`crate::scalar_subquery`]), which the other processes'
//! registries do not hold, and wrap Ballista's codecs, passing everything
//! else through unchanged. Every role must use the same codecs;
//! [`crate::session::SessionFactory`] hands them out.
//!
//! Quiver's payloads start with [`MAGIC`] and a kind byte, so they are never
//! confused with Ballista's.

use std::any::Any;
use std::sync::Arc;

use arrow::datatypes::{IntervalMonthDayNano, Schema, SchemaRef};
use ballista_core::serde::{BallistaLogicalExtensionCodec, BallistaPhysicalExtensionCodec};
use datafusion::catalog::default_table_source::{provider_as_source, source_as_provider};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::parsers::CsvQuoteStyle;
use datafusion::common::{DataFusionError, Result, TableReference};
use datafusion::datasource::MemTable;
use datafusion::datasource::TableType;
use datafusion::datasource::file_format::FileFormatFactory;
use datafusion::datasource::file_format::csv::CsvFormatFactory;
use datafusion::datasource::listing::ListingTable;
use datafusion::execution::TaskContext;
use datafusion::functions_table::generate_series::{
    Empty, GenSeriesArgs, GenerateSeriesTable, GenericSeriesState, TimestampValue,
};
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::{AggregateUDF, Extension, LogicalPlan, LogicalPlanBuilder, ScalarUDF, WindowUDF};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion_proto::logical_plan::{AsLogicalPlan, LogicalExtensionCodec};
use datafusion_proto::physical_plan::{
    PhysicalExtensionCodec, PhysicalPlanDecodeContext, PhysicalProtoConverterExtension,
};
use datafusion_proto::protobuf::LogicalPlanNode;
use prost::Message;
use serde::{Deserialize, Serialize};

use crate::delta::write::{DeltaCommitExec, DeltaWriteExec, WriteMode};
use crate::delta::{DeltaTable, TableVersion};
use crate::local_plan::LocalPlanExec;
use crate::partition_constants::PartitionConstantsBarrierExec;
use crate::partition_writes::{PartitionWriteExec, as_sink_exec};
use crate::scalar_subquery::SingleValue;
use crate::spark_functions::SparkFunctions;
use crate::tables::GlobTable;
use crate::window_flags::FlaggedWindow;

mod operators;

/// First bytes of every payload Quiver's codecs write.
pub const MAGIC: &[u8; 4] = b"QVR1";
const KIND_GLOB_TABLE: u8 = 1;
const KIND_DELTA_TABLE: u8 = 2;
const KIND_DELTA_WRITE: u8 = 3;
const KIND_DELTA_COMMIT: u8 = 4;
const KIND_MEMORY_TABLE: u8 = 5;
const KIND_SERIES_TABLE: u8 = 6;
const KIND_PARTITION_CONSTANTS_BARRIER: u8 = 7;
const KIND_SPARK_FUNCTION: u8 = 8;
const KIND_SINGLE_VALUE: u8 = 9;
// 10, 12, 13, 15 and 16: DataFusion's operators, in `operators`.
const KIND_PARTITION_WRITE: u8 = 11;
const KIND_LOCAL_PLAN: u8 = 14;
const KIND_FLAGGED_WINDOW: u8 = 17;

/// The start of the payload of a window function with its flags
/// ([`FlaggedWindow`]); a byte of flags ([`IGNORE_NULLS`], [`REVERSED`]) and
/// the wrapped function's own payload follow.
const FLAGGED_WINDOW_FUNCTION: [u8; 5] = [MAGIC[0], MAGIC[1], MAGIC[2], MAGIC[3], KIND_FLAGGED_WINDOW];
const IGNORE_NULLS: u8 = 1;
const REVERSED: u8 = 2;

/// The payload of a call of one of Spark's functions
/// ([`crate::spark_functions`]): decoded from that library, by name.
const SPARK_FUNCTION: [u8; 5] = [MAGIC[0], MAGIC[1], MAGIC[2], MAGIC[3], KIND_SPARK_FUNCTION];

/// The payload of a call of [`SingleValue`], the aggregate that checks a
/// scalar subquery's rows.
const SINGLE_VALUE_FUNCTION: [u8; 5] = [MAGIC[0], MAGIC[1], MAGIC[2], MAGIC[3], KIND_SINGLE_VALUE];

/// Quiver's and Spark's aggregates by their markers, else `inner`'s.
fn encode_udaf(node: &AggregateUDF, buf: &mut Vec<u8>, inner: impl FnOnce(&mut Vec<u8>) -> Result<()>) -> Result<()> {
    let implementation: &dyn Any = node.inner().as_ref();
    if implementation.is::<SingleValue>() {
        buf.extend_from_slice(&SINGLE_VALUE_FUNCTION);
        return Ok(());
    }
    encode_function(SparkFunctions::get().is_aggregate(node), buf, inner)
}

/// The aggregate [`encode_udaf`] wrote.
fn decode_udaf(
    name: &str,
    buf: &[u8],
    inner: impl FnOnce(&[u8]) -> Result<Arc<AggregateUDF>>,
) -> Result<Arc<AggregateUDF>> {
    if buf == SINGLE_VALUE_FUNCTION {
        return Ok(Arc::new(AggregateUDF::from(SingleValue::default())));
    }
    decode_function(buf, || SparkFunctions::get().aggregate(name), inner)
}

/// A function [`encode_function`] wrote: Spark's when `buf` is the Spark
/// marker, else what `inner` decodes.
fn decode_function<F>(
    buf: &[u8],
    spark: impl FnOnce() -> Result<Arc<F>>,
    inner: impl FnOnce(&[u8]) -> Result<Arc<F>>,
) -> Result<Arc<F>> {
    match buf == SPARK_FUNCTION {
        true => spark(),
        false => inner(buf),
    }
}

/// Writes the Spark marker when `is_spark`, else lets `inner` encode.
fn encode_function(is_spark: bool, buf: &mut Vec<u8>, inner: impl FnOnce(&mut Vec<u8>) -> Result<()>) -> Result<()> {
    match is_spark {
        true => {
            buf.extend_from_slice(&SPARK_FUNCTION);
            Ok(())
        }
        false => inner(buf),
    }
}

/// The largest in-memory table (`CREATE TABLE t AS VALUES ...`, a table
/// registered from batches) a plan may carry to the cluster, in Arrow IPC
/// bytes. Larger ones are refused with a message to write them to storage.
pub const MAX_MEMORY_TABLE_BYTES: usize = 64 * 1024 * 1024;

#[derive(Serialize, Deserialize)]
struct MemoryHeader {
    /// Batches in each partition, in order; the batches follow as one IPC stream.
    partitions: Vec<usize>,
}

#[derive(Serialize, Deserialize)]
struct DeltaHeader {
    url: String,
    version: TableVersion,
    partition_cols: Vec<String>,
    exists: bool,
}

/// `MAGIC`, a kind, a length-prefixed JSON header, then `rest`.
fn frame<H: Serialize>(kind: u8, header: &H, rest: &[u8], buf: &mut Vec<u8>) -> Result<()> {
    let header = serde_json::to_vec(header).map_err(|e| DataFusionError::Internal(e.to_string()))?;
    buf.extend_from_slice(MAGIC);
    buf.push(kind);
    buf.extend_from_slice(&(header.len() as u32).to_le_bytes());
    buf.extend_from_slice(&header);
    buf.extend_from_slice(rest);
    Ok(())
}

/// Splits a framed body (after `MAGIC` and the kind) into its header and the rest.
fn unframe<'a, H: serde::de::DeserializeOwned>(body: &'a [u8], what: &str) -> Result<(H, &'a [u8])> {
    let len_bytes: [u8; 4] = body
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| codec_err(what, "truncated"))?;
    let len = u32::from_le_bytes(len_bytes) as usize;
    let header = serde_json::from_slice(body.get(4..4 + len).ok_or_else(|| codec_err(what, "truncated"))?)
        .map_err(|e| codec_err(what, e))?;
    Ok((header, &body[4 + len..]))
}

fn schema_bytes(schema: &Schema) -> Result<Vec<u8>> {
    let proto: datafusion_proto::protobuf::Schema = schema.try_into()?;
    Ok(proto.encode_to_vec())
}

fn schema_from(bytes: &[u8], what: &str) -> Result<SchemaRef> {
    let proto = datafusion_proto::protobuf::Schema::decode(bytes).map_err(|e| codec_err(what, e))?;
    Ok(Arc::new(Schema::try_from(&proto)?))
}

#[derive(Serialize, Deserialize)]
struct GlobHeader {
    locations: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct WriteHeader {
    url: String,
    partition_cols: Vec<String>,
    mode: Option<WriteMode>,
    exists: bool,
}

/// Ballista's logical codec plus Quiver's table types.
#[derive(Debug, Default)]
pub struct QuiverLogicalCodec {
    inner: BallistaLogicalExtensionCodec,
}

fn codec_err(what: &str, e: impl std::fmt::Display) -> DataFusionError {
    DataFusionError::Internal(format!("cannot decode {what} sent by a Quiver client: {e}"))
}

impl QuiverLogicalCodec {
    fn encode_glob(&self, table_ref: &TableReference, table: &GlobTable, buf: &mut Vec<u8>) -> Result<()> {
        let listing: Arc<dyn TableProvider> = Arc::clone(table.listing()) as _;
        let scan = LogicalPlanBuilder::scan(table_ref.clone(), provider_as_source(listing), None)?.build()?;
        let plan = LogicalPlanNode::try_from_logical_plan(&scan, self)?.encode_to_vec();
        let header = GlobHeader {
            locations: table.locations().to_vec(),
        };
        frame(KIND_GLOB_TABLE, &header, &plan, buf)
    }

    fn decode_glob(&self, body: &[u8], ctx: &TaskContext) -> Result<Arc<dyn TableProvider>> {
        let (header, rest): (GlobHeader, _) = unframe(body, "a pattern table")?;
        let node = LogicalPlanNode::decode(rest).map_err(|e| codec_err("a pattern table", e))?;
        let plan = node.try_into_logical_plan(ctx, self)?;
        let LogicalPlan::TableScan(scan) = plan else {
            return Err(codec_err("a pattern table", "expected a table scan"));
        };
        let provider = source_as_provider(&scan.source)?;
        let listing = provider
            .downcast_ref::<ListingTable>()
            .ok_or_else(|| codec_err("a pattern table", "expected a listing table"))?;
        Ok(Arc::new(GlobTable::new(listing, header.locations)?))
    }
}

/// `csv` with its quote style's `Always` and `Necessary` swapped. DataFusion
/// 55 writes a CSV format's quote style into the plan as the discriminant of
/// `CsvQuoteStyle` (`Always` = 0, `Necessary` = 1) and reads it back as the
/// plan format's enum (`Necessary` = 0, `Always` = 1), so the two traded
/// places on the way and a `COPY ... TO` a CSV file quoted every field.
/// Swapped before encoding, they arrive as meant (`tests/slt/writes.slt`).
fn csv_quote_style_swapped(csv: &CsvFormatFactory) -> CsvFormatFactory {
    // DataFusion encodes a factory without options as the default options.
    let mut options = csv.options.clone().unwrap_or_default();
    options.quote_style = match options.quote_style {
        CsvQuoteStyle::Always => CsvQuoteStyle::Necessary,
        CsvQuoteStyle::Necessary => CsvQuoteStyle::Always,
        other => other,
    };
    CsvFormatFactory::new_with_options(options)
}

/// A memory table's partitions as one Arrow IPC stream after a header.
fn encode_memory(table_ref: &TableReference, table: &MemTable, buf: &mut Vec<u8>) -> Result<()> {
    let schema = table.schema();
    let mut partitions = Vec::with_capacity(table.batches.len());
    let mut ipc = Vec::new();
    {
        let mut writer = arrow::ipc::writer::StreamWriter::try_new(&mut ipc, &schema)?;
        for partition in &table.batches {
            let batches = partition.try_read().map_err(|_| {
                DataFusionError::Execution(format!(
                    "the in-memory table {table_ref} is being written to; run the query again when the write is done"
                ))
            })?;
            partitions.push(batches.len());
            for batch in batches.iter() {
                writer.write(batch)?;
            }
        }
        writer.finish()?;
    }
    if ipc.len() > MAX_MEMORY_TABLE_BYTES {
        return Err(DataFusionError::Plan(format!(
            "the in-memory table {table_ref} holds {} MiB, more than the {} MiB a query may carry to the \
             cluster; write it to storage instead (CREATE TABLE ... LOCATION 's3://...' AS SELECT ...)",
            ipc.len() >> 20,
            MAX_MEMORY_TABLE_BYTES >> 20
        )));
    }
    frame(KIND_MEMORY_TABLE, &MemoryHeader { partitions }, &ipc, buf)
}

fn decode_memory(body: &[u8]) -> Result<Arc<dyn TableProvider>> {
    const WHAT: &str = "an in-memory table";
    let (header, rest): (MemoryHeader, _) = unframe(body, WHAT)?;
    let reader =
        arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(rest), None).map_err(|e| codec_err(WHAT, e))?;
    let schema = reader.schema();
    let mut batches = reader.into_iter();
    let mut partitions = Vec::with_capacity(header.partitions.len());
    for count in header.partitions {
        let partition = batches
            .by_ref()
            .take(count)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| codec_err(WHAT, e))?;
        if partition.len() != count {
            return Err(codec_err(WHAT, "fewer batches than its header says"));
        }
        partitions.push(partition);
    }
    Ok(Arc::new(MemTable::try_new(schema, partitions)?))
}

/// The arguments of a `generate_series` or `range` table; the rows are
/// generated where the scan runs.
#[derive(Serialize, Deserialize)]
enum SeriesHeader {
    /// An argument was NULL: no rows.
    Empty { name: String },
    Int64 {
        name: String,
        start: i64,
        end: i64,
        step: i64,
        include_end: bool,
    },
    /// Timestamps or dates, as nanoseconds since the epoch.
    Time {
        name: String,
        start: i64,
        end: i64,
        step: (i32, i32, i64),
        tz: Option<String>,
        include_end: bool,
    },
}

/// The name a series function is known by, as the table keeps it.
fn series_name(name: &str) -> &'static str {
    if name == "range" { "range" } else { "generate_series" }
}

fn encode_series(table: &GenerateSeriesTable, buf: &mut Vec<u8>) -> Result<()> {
    let generator = table.as_generator(1)?;
    let generator = generator.read();
    let any = generator.as_any();
    let header = if let Some(s) = any.downcast_ref::<GenericSeriesState<i64>>() {
        SeriesHeader::Int64 {
            name: s.name().to_owned(),
            start: *s.start(),
            end: *s.end(),
            step: *s.step(),
            include_end: s.include_end(),
        }
    } else if let Some(s) = any.downcast_ref::<GenericSeriesState<TimestampValue>>() {
        let step = s.step();
        SeriesHeader::Time {
            name: s.name().to_owned(),
            start: s.start().value(),
            end: s.end().value(),
            step: (step.months, step.days, step.nanoseconds),
            tz: s.start().tz_str().map(|tz| tz.to_string()),
            include_end: s.include_end(),
        }
    } else if let Some(e) = any.downcast_ref::<Empty>() {
        SeriesHeader::Empty {
            name: e.name().to_owned(),
        }
    } else {
        return Err(DataFusionError::NotImplemented(format!(
            "a {} table cannot be sent to the cluster",
            generator
        )));
    };
    frame(KIND_SERIES_TABLE, &header, &schema_bytes(&table.schema())?, buf)
}

fn decode_series(body: &[u8]) -> Result<Arc<dyn TableProvider>> {
    const WHAT: &str = "a generate_series table";
    let (header, rest): (SeriesHeader, _) = unframe(body, WHAT)?;
    let schema = schema_from(rest, WHAT)?;
    let args = match header {
        SeriesHeader::Empty { name } => GenSeriesArgs::ContainsNull {
            name: series_name(&name),
        },
        SeriesHeader::Int64 {
            name,
            start,
            end,
            step,
            include_end,
        } => GenSeriesArgs::Int64Args {
            start,
            end,
            step,
            include_end,
            name: series_name(&name),
        },
        SeriesHeader::Time {
            name,
            start,
            end,
            step: (months, days, nanoseconds),
            tz,
            include_end,
        } => {
            // Dates were turned into timestamps when the table was made;
            // timestamp arguments rebuild the same generator.
            GenSeriesArgs::TimestampArgs {
                start,
                end,
                step: IntervalMonthDayNano::new(months, days, nanoseconds),
                tz: tz.map(Arc::from),
                include_end,
                name: series_name(&name),
            }
        }
    };
    Ok(Arc::new(SeriesTable(GenerateSeriesTable::new(schema, args))))
}

/// A decoded `generate_series`/`range` table whose scans generate every
/// column and project above the generator. datafusion-proto sends a
/// projected generator to the executors with the projected schema but
/// without the projection, so a scan reading none of its columns (`g2` in
/// `SELECT g1.value FROM generate_series(1, 3) g1 CROSS JOIN
/// generate_series(1, 3) g2`) failed there with "number of columns(1) must
/// match number of fields(0)".
#[derive(Debug)]
struct SeriesTable(GenerateSeriesTable);

#[async_trait::async_trait]
impl TableProvider for SeriesTable {
    fn schema(&self) -> SchemaRef {
        self.0.schema()
    }

    fn table_type(&self) -> TableType {
        self.0.table_type()
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let all = self.0.scan(state, None, filters, limit).await?;
        let Some(projection) = projection else {
            return Ok(all);
        };
        let schema = all.schema();
        let columns = projection
            .iter()
            .map(|&i| -> Result<(Arc<dyn PhysicalExpr>, String)> {
                let name = schema.field(i).name();
                Ok((Arc::new(Column::new(name, i)), name.clone()))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Arc::new(ProjectionExec::try_new(columns, all)?))
    }
}

impl LogicalExtensionCodec for QuiverLogicalCodec {
    fn try_decode(&self, buf: &[u8], inputs: &[LogicalPlan], ctx: &TaskContext) -> Result<Extension> {
        self.inner.try_decode(buf, inputs, ctx)
    }

    fn try_encode(&self, node: &Extension, buf: &mut Vec<u8>) -> Result<()> {
        self.inner.try_encode(node, buf)
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        table_ref: &TableReference,
        schema: SchemaRef,
        ctx: &TaskContext,
    ) -> Result<Arc<dyn TableProvider>> {
        if let Some(rest) = buf.strip_prefix(MAGIC.as_slice()) {
            return match rest.split_first() {
                Some((&KIND_GLOB_TABLE, body)) => self.decode_glob(body, ctx),
                Some((&KIND_MEMORY_TABLE, body)) => decode_memory(body),
                Some((&KIND_SERIES_TABLE, body)) => decode_series(body),
                Some((&KIND_DELTA_TABLE, body)) => {
                    let (h, rest): (DeltaHeader, _) = unframe(body, "a Delta table")?;
                    let url = url::Url::parse(&h.url).map_err(|e| codec_err("a Delta table", e))?;
                    let schema = schema_from(rest, "a Delta table")?;
                    Ok(Arc::new(DeltaTable::from_parts(
                        url,
                        h.version,
                        schema,
                        h.partition_cols,
                        h.exists,
                    )))
                }
                _ => Err(codec_err(
                    "a table",
                    "unknown table kind (client and cluster versions differ?)",
                )),
            };
        }
        self.inner.try_decode_table_provider(buf, table_ref, schema, ctx)
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        if let Some(glob) = node.downcast_ref::<GlobTable>() {
            return self.encode_glob(table_ref, glob, buf);
        }
        if let Some(memory) = node.downcast_ref::<MemTable>() {
            return encode_memory(table_ref, memory, buf);
        }
        if let Some(series) = node.downcast_ref::<GenerateSeriesTable>() {
            return encode_series(series, buf);
        }
        if let Some(SeriesTable(series)) = node.downcast_ref::<SeriesTable>() {
            return encode_series(series, buf);
        }
        if let Some(delta) = node.downcast_ref::<DeltaTable>() {
            let header = DeltaHeader {
                url: delta.url().to_string(),
                version: delta.version().clone(),
                partition_cols: delta.partition_cols().to_vec(),
                exists: delta.exists(),
            };
            return frame(KIND_DELTA_TABLE, &header, &schema_bytes(&delta.schema())?, buf);
        }
        self.inner.try_encode_table_provider(table_ref, node, buf)
    }

    fn try_decode_file_format(&self, buf: &[u8], ctx: &TaskContext) -> Result<Arc<dyn FileFormatFactory>> {
        self.inner.try_decode_file_format(buf, ctx)
    }

    fn try_encode_file_format(&self, buf: &mut Vec<u8>, node: Arc<dyn FileFormatFactory>) -> Result<()> {
        let node = match node.downcast_ref::<CsvFormatFactory>() {
            Some(csv) => Arc::new(csv_quote_style_swapped(csv)),
            None => node,
        };
        self.inner.try_encode_file_format(buf, node)
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        decode_function(
            buf,
            || SparkFunctions::get().scalar(name),
            |buf| self.inner.try_decode_udf(name, buf),
        )
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
        encode_function(SparkFunctions::get().is_scalar(node), buf, |buf| {
            self.inner.try_encode_udf(node, buf)
        })
    }

    fn try_decode_udaf(&self, name: &str, buf: &[u8]) -> Result<Arc<AggregateUDF>> {
        decode_udaf(name, buf, |buf| self.inner.try_decode_udaf(name, buf))
    }

    fn try_encode_udaf(&self, node: &AggregateUDF, buf: &mut Vec<u8>) -> Result<()> {
        encode_udaf(node, buf, |buf| self.inner.try_encode_udaf(node, buf))
    }

    fn try_decode_udwf(&self, name: &str, buf: &[u8]) -> Result<Arc<WindowUDF>> {
        decode_function(
            buf,
            || SparkFunctions::get().window(name),
            |buf| self.inner.try_decode_udwf(name, buf),
        )
    }

    fn try_encode_udwf(&self, node: &WindowUDF, buf: &mut Vec<u8>) -> Result<()> {
        encode_function(SparkFunctions::get().is_window(node), buf, |buf| {
            self.inner.try_encode_udwf(node, buf)
        })
    }
}

/// Ballista's physical codec plus Quiver's operators.
#[derive(Debug, Default)]
pub struct QuiverPhysicalCodec {
    inner: BallistaPhysicalExtensionCodec,
}

impl PhysicalExtensionCodec for QuiverPhysicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let Some(rest) = buf.strip_prefix(MAGIC.as_slice()) else {
            return self.inner.try_decode(buf, inputs, ctx, proto_converter);
        };
        let (kind, body) = rest.split_first().ok_or_else(|| codec_err("an operator", "empty"))?;
        if *kind == KIND_PARTITION_CONSTANTS_BARRIER {
            let [input] = inputs else {
                return Err(codec_err("a partition constants barrier", "expected one input"));
            };
            return Ok(Arc::new(PartitionConstantsBarrierExec::new(Arc::clone(input))));
        }
        if *kind == KIND_PARTITION_WRITE {
            let [input] = inputs else {
                return Err(codec_err("a partitioned write", "expected one input"));
            };
            let node = datafusion_proto::protobuf::PhysicalPlanNode::decode(body)
                .map_err(|e| codec_err("a partitioned write", e))?;
            let sink = proto_converter.proto_to_execution_plan(&node, &PhysicalPlanDecodeContext::new(ctx, self))?;
            return Ok(Arc::new(PartitionWriteExec::new(
                Arc::clone(input),
                as_sink_exec(sink)?,
            )));
        }
        if *kind == KIND_LOCAL_PLAN {
            // The wrapper only hides the plan from the scheduler's stage
            // splitter: executors run the plan itself.
            let node = datafusion_proto::protobuf::PhysicalPlanNode::decode(body)
                .map_err(|e| codec_err("a plan run in one task", e))?;
            return proto_converter.proto_to_execution_plan(&node, &PhysicalPlanDecodeContext::new(ctx, self));
        }
        if let Some(decoded) = operators::decode(
            *kind,
            body,
            inputs,
            &PhysicalPlanDecodeContext::new(ctx, self),
            proto_converter,
        ) {
            return decoded;
        }
        let (h, rest): (WriteHeader, _) = unframe(body, "a Delta write")?;
        let url = url::Url::parse(&h.url).map_err(|e| codec_err("a Delta write", e))?;
        let schema = schema_from(rest, "a Delta write")?;
        let [input] = inputs else {
            return Err(codec_err("a Delta write", "expected one input"));
        };
        match *kind {
            KIND_DELTA_WRITE => Ok(Arc::new(DeltaWriteExec::new(
                Arc::clone(input),
                url,
                schema,
                h.partition_cols,
            ))),
            KIND_DELTA_COMMIT => Ok(Arc::new(DeltaCommitExec::new(
                Arc::clone(input),
                url,
                schema,
                h.partition_cols,
                h.mode.unwrap_or(WriteMode::Append),
                h.exists,
            ))),
            _ => Err(codec_err(
                "an operator",
                "unknown operator kind (client and cluster versions differ?)",
            )),
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        if let Some(w) = node.downcast_ref::<DeltaWriteExec>() {
            let header = WriteHeader {
                url: w.url().to_string(),
                partition_cols: w.partition_cols().to_vec(),
                mode: None,
                exists: true,
            };
            return frame(KIND_DELTA_WRITE, &header, &schema_bytes(w.table_schema())?, buf);
        }
        if let Some(c) = node.downcast_ref::<DeltaCommitExec>() {
            let header = WriteHeader {
                url: c.url().to_string(),
                partition_cols: c.partition_cols().to_vec(),
                mode: Some(c.mode()),
                exists: c.exists(),
            };
            return frame(KIND_DELTA_COMMIT, &header, &schema_bytes(c.table_schema())?, buf);
        }
        if let Some(write) = node.downcast_ref::<PartitionWriteExec>() {
            let sink: Arc<dyn ExecutionPlan> = write.sink().clone();
            let sink = proto_converter.execution_plan_to_proto(&sink, self)?;
            buf.extend_from_slice(MAGIC);
            buf.push(KIND_PARTITION_WRITE);
            return sink.encode(buf).map_err(|e| codec_err("a partitioned write", e));
        }
        if let Some(local) = node.downcast_ref::<LocalPlanExec>() {
            let plan = proto_converter.execution_plan_to_proto(local.plan(), self)?;
            buf.extend_from_slice(MAGIC);
            buf.push(KIND_LOCAL_PLAN);
            return plan.encode(buf).map_err(|e| codec_err("a plan run in one task", e));
        }
        if let Some(encoded) = operators::encode(node.as_ref(), self, proto_converter, buf) {
            return encoded;
        }
        if node.downcast_ref::<PartitionConstantsBarrierExec>().is_some() {
            buf.extend_from_slice(MAGIC);
            buf.push(KIND_PARTITION_CONSTANTS_BARRIER);
            return Ok(());
        }
        self.inner.try_encode(node, buf, proto_converter)
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        decode_function(
            buf,
            || SparkFunctions::get().scalar(name),
            |buf| self.inner.try_decode_udf(name, buf),
        )
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
        encode_function(SparkFunctions::get().is_scalar(node), buf, |buf| {
            self.inner.try_encode_udf(node, buf)
        })
    }

    fn try_decode_expr(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn datafusion::physical_expr::PhysicalExpr>],
        ctx: &datafusion::physical_expr_common::physical_expr::proto_decode::PhysicalExprDecodeCtx<'_>,
    ) -> Result<Arc<dyn datafusion::physical_expr::PhysicalExpr>> {
        self.inner.try_decode_expr(buf, inputs, ctx)
    }

    fn try_encode_expr(
        &self,
        node: &Arc<dyn datafusion::physical_expr::PhysicalExpr>,
        buf: &mut Vec<u8>,
        ctx: &datafusion::physical_expr_common::physical_expr::proto_encode::PhysicalExprEncodeCtx<'_>,
    ) -> Result<()> {
        self.inner.try_encode_expr(node, buf, ctx)
    }

    fn try_decode_udaf(&self, name: &str, buf: &[u8]) -> Result<Arc<AggregateUDF>> {
        decode_udaf(name, buf, |buf| self.inner.try_decode_udaf(name, buf))
    }

    fn try_encode_udaf(&self, node: &AggregateUDF, buf: &mut Vec<u8>) -> Result<()> {
        encode_udaf(node, buf, |buf| self.inner.try_encode_udaf(node, buf))
    }

    /// A window function [`Self::try_encode_udwf`] wrote: with its flags,
    /// Spark's, or Ballista's.
    fn try_decode_udwf(&self, name: &str, buf: &[u8]) -> Result<Arc<WindowUDF>> {
        if let Some(rest) = buf.strip_prefix(FLAGGED_WINDOW_FUNCTION.as_slice()) {
            let what = "a window function's flags";
            let (&flags, inner) = rest.split_first().ok_or_else(|| codec_err(what, "no flags"))?;
            let inner = match inner.is_empty() {
                // DataFusion's own functions travel by name.
                true => crate::window_flags::builtin(name)
                    .ok_or_else(|| codec_err(what, format!("{name} is not one of DataFusion's window functions")))?,
                false => self.try_decode_udwf(name, inner)?,
            };
            let wrapped = FlaggedWindow::new(inner, flags & IGNORE_NULLS != 0, flags & REVERSED != 0);
            return Ok(Arc::new(WindowUDF::new_from_impl(wrapped)));
        }
        decode_function(
            buf,
            || SparkFunctions::get().window(name),
            |buf| self.inner.try_decode_udwf(name, buf),
        )
    }

    fn try_encode_udwf(&self, node: &WindowUDF, buf: &mut Vec<u8>) -> Result<()> {
        if let Some(flagged) = node.inner().downcast_ref::<FlaggedWindow>() {
            buf.extend_from_slice(&FLAGGED_WINDOW_FUNCTION);
            let flags = (u8::from(flagged.ignore_nulls()) * IGNORE_NULLS) | (u8::from(flagged.reversed()) * REVERSED);
            buf.push(flags);
            return self.try_encode_udwf(flagged.inner(), buf);
        }
        encode_function(SparkFunctions::get().is_window(node), buf, |buf| {
            self.inner.try_encode_udwf(node, buf)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    #[tokio::test]
    async fn glob_tables_keep_their_pattern_through_serialization() {
        let dir = tempfile::tempdir().unwrap();
        for (name, v) in [("keep-1.csv", 1), ("keep-2.csv", 2), ("skip.csv", 100)] {
            std::fs::write(dir.path().join(name), format!("x\n{v}\n")).unwrap();
        }
        let ctx = SessionContext::new();
        crate::tables::install(&ctx);
        ctx.sql(&format!(
            "CREATE EXTERNAL TABLE t (x BIGINT) STORED AS CSV LOCATION '{}/keep-*.csv' OPTIONS ('format.has_header' 'true')",
            dir.path().display()
        ))
        .await
        .unwrap();
        let plan = ctx
            .sql("SELECT sum(x) AS s FROM t")
            .await
            .unwrap()
            .into_unoptimized_plan();
        let codec = QuiverLogicalCodec::default();
        let bytes = LogicalPlanNode::try_from_logical_plan(&plan, &codec)
            .unwrap()
            .encode_to_vec();

        // Another process: decode and run.
        let other = SessionContext::new();
        let decoded = LogicalPlanNode::decode(bytes.as_slice())
            .unwrap()
            .try_into_logical_plan(&other.task_ctx(), &codec)
            .unwrap();
        let batches = other
            .execute_logical_plan(decoded)
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let text = arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string();
        assert!(text.contains("| 3 "), "the pattern must still exclude skip.csv: {text}");
    }

    /// Encodes `sql`'s plan in one session and runs it in another, as a
    /// client and the cluster do.
    async fn round_trip(ctx: &SessionContext, sql: &str) -> Result<String> {
        let plan = ctx.sql(sql).await?.into_unoptimized_plan();
        let codec = QuiverLogicalCodec::default();
        let bytes = LogicalPlanNode::try_from_logical_plan(&plan, &codec)?.encode_to_vec();
        let other = SessionContext::new();
        let decoded = LogicalPlanNode::decode(bytes.as_slice())
            .unwrap()
            .try_into_logical_plan(&other.task_ctx(), &codec)?;
        let batches = other.execute_logical_plan(decoded).await?.collect().await?;
        Ok(arrow::util::pretty::pretty_format_batches(&batches)?.to_string())
    }

    /// Plans `sql` as the scheduler does, encodes the physical plan, decodes
    /// it in another session and runs it there, as an executor does.
    async fn run_as_executor(ctx: &SessionContext, sql: &str) -> Result<String> {
        use datafusion::execution::context::QueryPlanner;
        use datafusion_proto::physical_plan::AsExecutionPlan;
        use datafusion_proto::protobuf::PhysicalPlanNode;

        let logical = ctx.sql(sql).await?.into_optimized_plan()?;
        let plan = crate::scheduler_planner::SchedulerQueryPlanner
            .create_physical_plan(&logical, &ctx.state())
            .await?;
        let codec = QuiverPhysicalCodec::default();
        let bytes = PhysicalPlanNode::try_from_physical_plan(plan, &codec)?.encode_to_vec();
        let executor = SessionContext::new();
        let decoded = PhysicalPlanNode::decode(bytes.as_slice())
            .map_err(|e| codec_err("a test plan", e))?
            .try_into_physical_plan(&executor.task_ctx(), &codec)?;
        let batches = datafusion::physical_plan::collect(decoded, executor.task_ctx()).await?;
        Ok(arrow::util::pretty::pretty_format_batches(&batches)?.to_string())
    }

    #[tokio::test]
    async fn arrow_file_writes_run_where_they_are_decoded() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = SessionContext::new();
        let file = dir.path().join("copy.arrow");
        let written = run_as_executor(
            &ctx,
            &format!(
                "COPY (SELECT * FROM (VALUES (1, 'a'), (2, 'b')) AS t(x, y)) TO '{}' STORED AS ARROW",
                file.display()
            ),
        )
        .await
        .unwrap();
        assert!(written.contains("| 2 "), "{written}");
        let back = ctx
            .read_arrow(file.to_str().unwrap(), Default::default())
            .await
            .unwrap()
            .sort_by(vec![datafusion::prelude::col("x")])
            .unwrap()
            .collect()
            .await
            .unwrap();
        let back = arrow::util::pretty::pretty_format_batches(&back).unwrap().to_string();
        assert!(back.contains("| 1 | a |") && back.contains("| 2 | b |"), "{back}");

        // INSERT into a partitioned Arrow table, with the order it declares.
        let table = dir.path().join("table");
        std::fs::create_dir(&table).unwrap();
        ctx.sql(&format!(
            "CREATE EXTERNAL TABLE t (x INT, p INT) STORED AS ARROW PARTITIONED BY (p) \
             WITH ORDER (x DESC) LOCATION '{}/'",
            table.display()
        ))
        .await
        .unwrap();
        let inserted = run_as_executor(&ctx, "INSERT INTO t VALUES (1, 10), (3, 10), (2, 20)")
            .await
            .unwrap();
        assert!(inserted.contains("| 3 "), "{inserted}");
        assert!(table.join("p=10").is_dir() && table.join("p=20").is_dir());
        let rows = ctx
            .sql("SELECT p, x FROM t ORDER BY p, x")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let rows = arrow::util::pretty::pretty_format_batches(&rows).unwrap().to_string();
        let got: Vec<&str> = rows
            .lines()
            .filter(|l| l.starts_with("| ") && !l.contains(" x "))
            .collect();
        assert_eq!(got, ["| 10 | 1 |", "| 10 | 3 |", "| 20 | 2 |"], "{rows}");
    }

    #[tokio::test]
    async fn partitioned_writes_run_in_each_task_where_they_are_decoded() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = SessionContext::new_with_config(
            datafusion::prelude::SessionConfig::new()
                .with_target_partitions(3)
                .with_option_extension(crate::options::QuiverOptions::default()),
        );
        // Three partitions; `k = 'a'` in two of them.
        let batch = |k: &str, v: i64| {
            arrow::array::RecordBatch::try_from_iter(vec![
                ("k", Arc::new(arrow::array::StringArray::from(vec![k; 2])) as _),
                ("v", Arc::new(arrow::array::Int64Array::from(vec![v, v + 1])) as _),
            ])
            .unwrap()
        };
        let parts = vec![vec![batch("a", 1)], vec![batch("b", 10)], vec![batch("a", 20)]];
        ctx.register_table("t", Arc::new(MemTable::try_new(parts[0][0].schema(), parts).unwrap()))
            .unwrap();
        for format in ["PARQUET", "CSV", "JSON", "ARROW"] {
            let out = dir.path().join(format);
            let sql = format!("COPY t TO '{}/' STORED AS {format} PARTITIONED BY (k)", out.display());
            let written = run_as_executor(&ctx, &sql).await.unwrap();
            assert!(
                written.contains("| 6 "),
                "{format}: one count of all rows written: {written}"
            );
            let files = |k: &str| std::fs::read_dir(out.join(format!("k={k}"))).unwrap().count();
            assert_eq!((files("a"), files("b")), (2, 1), "{format}: a file per task and key");
            ctx.sql(&format!(
                "CREATE EXTERNAL TABLE back_{format} STORED AS {format} LOCATION '{}/'",
                out.display()
            ))
            .await
            .unwrap();
            let rows = ctx
                .sql(&format!(
                    "SELECT k, sum(v) AS s, count(*) AS n FROM back_{format} GROUP BY k ORDER BY k"
                ))
                .await
                .unwrap()
                .collect()
                .await
                .unwrap();
            let rows = arrow::util::pretty::pretty_format_batches(&rows).unwrap().to_string();
            assert!(
                rows.contains("| a | 44 | 4 |") && rows.contains("| b | 21 | 2 |"),
                "{format}: {rows}"
            );
        }
    }

    #[tokio::test]
    async fn window_functions_keep_their_flags_where_they_are_decoded() {
        let ctx = SessionContext::new();
        let rows = "FROM (VALUES (1, 7), (2, NULL), (3, NULL), (4, 9), (5, NULL), (6, 4)) t(n, v) ORDER BY n";
        for (select, row_2) in [
            (
                "SELECT n, last_value(v) IGNORE NULLS OVER (ORDER BY n) AS filled,
                        first_value(v) IGNORE NULLS OVER (ORDER BY n DESC) AS last_seen,
                        lead(v, 1) IGNORE NULLS OVER (ORDER BY n) AS after,
                        nth_value(v, 2) IGNORE NULLS OVER (ORDER BY n) AS second",
                "| 2 | 7      | 4         | 9     |        |",
            ),
            // One sort serves both orders: DataFusion evaluates the first
            // two backwards (`lead` as a reversed `lag`), which the plan
            // format does not say; decoded, `lead` answered `lag`.
            (
                "SELECT n, lead(v, 1) OVER (ORDER BY n) AS after, nth_value(v, 4) OVER (ORDER BY n) AS fourth,
                        first_value(v) OVER (ORDER BY n DESC) AS last_row",
                "| 2 |       |        | 4        |",
            ),
        ] {
            let sql = format!("{select} {rows}");
            let expected = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
            let expected = arrow::util::pretty::pretty_format_batches(&expected)
                .unwrap()
                .to_string();
            assert_eq!(run_as_executor(&ctx, &sql).await.unwrap(), expected, "{sql}");
            assert!(expected.contains(row_2), "{expected}");
        }
    }

    #[tokio::test]
    async fn recursive_queries_run_where_they_are_decoded() {
        // Ballista's sessions prefer sort-merge joins.
        let mut config = datafusion::prelude::SessionConfig::new().with_target_partitions(3);
        config.options_mut().optimizer.prefer_hash_join = false;
        let ctx = SessionContext::new_with_config(config);
        ctx.sql("CREATE TABLE edges (src INT, dst INT, w VARCHAR) AS VALUES (1, 2, 'a'), (2, 3, 'b'), (3, 4, 'c'), (2, 5, 'd'), (5, 1, 'e')")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        for sql in [
            // A join with another table inside the recursive term: exchanges
            // Ballista would cut into stages.
            "WITH RECURSIVE reach(node, depth, path) AS (
                SELECT 1, 0, '1' UNION ALL
                SELECT e.dst, r.depth + 1, r.path || '>' || e.w FROM reach r JOIN edges e ON e.src = r.node WHERE r.depth < 4
             ) SELECT node, depth, path FROM reach ORDER BY depth, node, path",
            // The recursive term reads one of the work table's columns.
            "WITH RECURSIVE n(x, label) AS (SELECT 1, 'one' UNION ALL SELECT x + 1, 'more' FROM n WHERE x < 5)
             SELECT x, label FROM n ORDER BY x",
            // UNION: rows already made stop the recursion.
            "WITH RECURSIVE r(node) AS (SELECT 1 UNION SELECT e.dst FROM r JOIN edges e ON e.src = r.node)
             SELECT node FROM r ORDER BY node",
        ] {
            let expected = ctx.sql(sql).await.unwrap().collect().await.unwrap();
            let expected = arrow::util::pretty::pretty_format_batches(&expected).unwrap().to_string();
            assert_eq!(run_as_executor(&ctx, sql).await.unwrap(), expected, "{sql}");
        }
    }

    #[tokio::test]
    async fn range_joins_and_window_top_k_run_where_they_are_decoded() {
        use datafusion::execution::context::QueryPlanner;

        let mut config = datafusion::prelude::SessionConfig::new().with_target_partitions(2);
        config.options_mut().optimizer.enable_piecewise_merge_join = true;
        config.options_mut().optimizer.enable_window_topn = true;
        let ctx = SessionContext::new_with_config(config);
        for ddl in [
            "CREATE TABLE a (x INT) AS VALUES (1), (5), (9)",
            "CREATE TABLE b (y INT) AS VALUES (4), (8)",
            "CREATE TABLE t (k VARCHAR, v INT) AS VALUES ('p', 1), ('p', 3), ('p', 2), ('q', 7), ('q', 6)",
        ] {
            ctx.sql(ddl).await.unwrap().collect().await.unwrap();
        }
        let planned = |sql: &'static str| {
            let ctx = ctx.clone();
            async move {
                let logical = ctx.sql(sql).await.unwrap().into_optimized_plan().unwrap();
                let plan = crate::scheduler_planner::SchedulerQueryPlanner
                    .create_physical_plan(&logical, &ctx.state())
                    .await
                    .unwrap();
                datafusion::physical_plan::displayable(plan.as_ref())
                    .indent(false)
                    .to_string()
            }
        };

        let join = "SELECT x, y FROM a JOIN b ON a.x < b.y ORDER BY x, y";
        assert!(
            planned(join).await.contains("PiecewiseMergeJoin"),
            "{}",
            planned(join).await
        );
        let rows = run_as_executor(&ctx, join).await.unwrap();
        // DataFusion 55's piecewise merge join reports its two keys as
        // equal, so `ORDER BY x, y` above it is planned as `ORDER BY x`:
        // the rows are compared as a set.
        let mut got: Vec<&str> = rows
            .lines()
            .filter(|l| l.starts_with("| ") && !l.contains(" x "))
            .collect();
        got.sort();
        assert_eq!(got, ["| 1 | 4 |", "| 1 | 8 |", "| 5 | 8 |"], "{rows}");

        let left = "SELECT x, y FROM a LEFT JOIN b ON a.x < b.y";
        assert!(planned(left).await.contains("PiecewiseMergeJoin"));
        let err = run_as_executor(&ctx, left).await.unwrap_err().to_string();
        assert!(err.contains("enable_piecewise_merge_join = false"), "{err}");

        let top = "SELECT k, v FROM (SELECT k, v, ROW_NUMBER() OVER (PARTITION BY k ORDER BY v DESC) AS rn FROM t) \
                   WHERE rn <= 2 ORDER BY k, v";
        assert!(planned(top).await.contains("PartitionedTopK"), "{}", planned(top).await);
        let rows = run_as_executor(&ctx, top).await.unwrap();
        let got: Vec<&str> = rows
            .lines()
            .filter(|l| l.starts_with("| ") && !l.contains(" k "))
            .collect();
        assert_eq!(got, ["| p | 2 |", "| p | 3 |", "| q | 6 |", "| q | 7 |"], "{rows}");
    }

    #[tokio::test]
    async fn memory_tables_travel_inside_the_plan() {
        let ctx = SessionContext::new();
        ctx.sql("CREATE TABLE t AS VALUES (1, 'a'), (2, 'b'), (3, NULL)")
            .await
            .unwrap();
        let text = round_trip(
            &ctx,
            "SELECT count(*) AS n, max(column1) AS m, count(column2) AS c FROM t",
        )
        .await
        .unwrap();
        assert!(text.contains("| 3 | 3 | 2 |"), "{text}");
    }

    #[tokio::test]
    async fn series_tables_travel_as_their_arguments() {
        let ctx = SessionContext::new();
        for (sql, want) in [
            (
                "SELECT count(*) AS n, sum(value) AS s FROM generate_series(1, 100000, 3)",
                "| 33334 | 1666716667 |",
            ),
            ("SELECT count(*) AS n, max(value) AS m FROM range(10)", "| 10 | 9 |"),
            ("SELECT count(*) AS n FROM generate_series(1, NULL)", "| 0 |"),
            (
                "SELECT max(value) AS m FROM generate_series(DATE '2024-01-30', DATE '2024-03-01', INTERVAL '1 month')",
                "| 2024-02-29T00:00:00 |",
            ),
            (
                "SELECT count(*) AS n, max(value) AS m FROM generate_series(TIMESTAMP '2024-01-01T00:00:00', \
                 TIMESTAMP '2024-01-02T00:00:00', INTERVAL '6 hours')",
                "| 5 | 2024-01-02T00:00:00 |",
            ),
        ] {
            let text = round_trip(&ctx, sql).await.unwrap();
            let local = ctx.sql(sql).await.unwrap().collect().await.unwrap();
            let local = arrow::util::pretty::pretty_format_batches(&local).unwrap().to_string();
            assert_eq!(text, local, "{sql}");
            assert!(text.contains(want), "{sql}\n{text}");
        }
    }

    #[tokio::test]
    async fn series_scans_reading_no_column_survive_the_trip_to_an_executor() {
        use datafusion::physical_plan::collect;
        use datafusion_proto::physical_plan::AsExecutionPlan;
        use datafusion_proto::protobuf::PhysicalPlanNode;

        let sql = "SELECT sum(g1.value) AS s, count(*) AS n FROM generate_series(1, 3) g1 CROSS JOIN range(4) g2";
        let client = SessionContext::new();
        let plan = client.sql(sql).await.unwrap().into_optimized_plan().unwrap();
        let logical = QuiverLogicalCodec::default();
        let bytes = LogicalPlanNode::try_from_logical_plan(&plan, &logical)
            .unwrap()
            .encode_to_vec();

        // The scheduler plans the stage; the executor decodes and runs it.
        let scheduler = SessionContext::new();
        let decoded = LogicalPlanNode::decode(bytes.as_slice())
            .unwrap()
            .try_into_logical_plan(&scheduler.task_ctx(), &logical)
            .unwrap();
        let stage = scheduler.state().create_physical_plan(&decoded).await.unwrap();
        let physical = QuiverPhysicalCodec::default();
        let bytes = PhysicalPlanNode::try_from_physical_plan(stage, &physical)
            .unwrap()
            .encode_to_vec();
        let executor = SessionContext::new();
        let stage = PhysicalPlanNode::decode(bytes.as_slice())
            .unwrap()
            .try_into_physical_plan(&executor.task_ctx(), &physical)
            .unwrap();
        let batches = collect(stage, executor.task_ctx()).await.unwrap();
        let text = arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string();
        assert!(text.contains("| 24 | 12 |"), "{text}");
    }

    #[tokio::test]
    async fn memory_tables_too_big_for_a_plan_are_refused_with_advice() {
        let ctx = SessionContext::new();
        let rows = MAX_MEMORY_TABLE_BYTES / 8 + 1;
        let values = arrow::array::Int64Array::from_iter_values(0..rows as i64);
        let batch = arrow::record_batch::RecordBatch::try_from_iter([("x", Arc::new(values) as _)]).unwrap();
        ctx.register_batch("big", batch).unwrap();
        let err = round_trip(&ctx, "SELECT count(*) FROM big")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("in-memory table big") && err.contains("LOCATION"), "{err}");
    }
}
