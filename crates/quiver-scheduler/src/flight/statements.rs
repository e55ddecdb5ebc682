//! Flight SQL statements: their handles, planning, and running each one as a
//! job — open the job, plan in a session that carries its id, stream the
//! rows, and end the job when the stream ends, fails, or the client stops
//! reading.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use arrow::array::UInt64Array;
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::{IpcWriteOptions, StreamWriter};
use arrow::record_batch::RecordBatch;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::{FlightData, IpcMessage, SchemaAsIpc};
use bytes::Bytes;
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use quiver_core::api::JobSource;
use quiver_core::messages::clean_message;
use tonic::Status;

use super::DataStream;
use super::sessions::{ClusterSessions, JOB_NAME};
use super::transactions::Transactions;
use crate::jobs::{JobService, StatementEnd};

/// A statement as it travels in tickets and prepared-statement handles: its
/// text and, once bound, its parameters (one row, Arrow IPC). The server
/// keeps nothing between calls.
#[derive(Clone, PartialEq, Message)]
pub struct StatementHandle {
    /// The SQL text.
    #[prost(string, tag = "1")]
    pub query: String,
    /// Bound parameter values: an Arrow IPC stream of one row.
    #[prost(bytes = "bytes", optional, tag = "2")]
    pub parameters: Option<Bytes>,
    /// The transaction it runs in, if the client opened one.
    #[prost(bytes = "bytes", optional, tag = "3")]
    pub transaction: Option<Bytes>,
}

impl StatementHandle {
    /// A handle for `query`, with no parameters.
    pub fn new(query: impl Into<String>, transaction: Option<Bytes>) -> Self {
        Self {
            query: query.into(),
            parameters: None,
            transaction: transaction.filter(|t| !t.is_empty()),
        }
    }

    /// The handle as bytes.
    pub fn to_bytes(&self) -> Bytes {
        self.encode_to_vec().into()
    }

    /// A handle back from bytes a client returned.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Status> {
        Self::decode(bytes).map_err(|e| Status::invalid_argument(format!("not a Quiver statement handle: {e}")))
    }
}

/// A statement the client got wrong.
pub fn user_error(e: DataFusionError) -> Status {
    Status::invalid_argument(clean_message(&e.to_string()))
}

/// A statement that failed while it ran.
fn engine_error(e: DataFusionError) -> Status {
    Status::internal(clean_message(&e.to_string()))
}

/// Plans a handle's statement with its parameters bound.
pub async fn plan(ctx: &SessionContext, handle: &StatementHandle) -> Result<LogicalPlan, Status> {
    let plan = ctx
        .state()
        .create_logical_plan(&handle.query)
        .await
        .map_err(user_error)?;
    if let Some(message) = quiver_core::spark_functions::refused_change(&plan, ctx.state().config()) {
        return Err(Status::invalid_argument(message));
    }
    match &handle.parameters {
        Some(parameters) => plan
            .with_param_values(decode_parameters(parameters)?)
            .map_err(user_error),
        None => Ok(plan),
    }
}

/// True for statements that change something outside the session: tables
/// created or dropped, rows or files written.
fn writes(plan: &LogicalPlan) -> bool {
    matches!(plan, LogicalPlan::Ddl(_) | LogicalPlan::Dml(_) | LogicalPlan::Copy(_))
}

/// Plans a statement about to run, within its transaction if it has one.
async fn plan_to_run(
    ctx: &SessionContext,
    transactions: &Transactions,
    handle: &StatementHandle,
) -> Result<LogicalPlan, Status> {
    if let Some(t) = &handle.transaction {
        transactions.check(t)?;
    }
    let plan = plan(ctx, handle).await?;
    if let Some(t) = &handle.transaction
        && writes(&plan)
    {
        transactions.wrote(t, &handle.query);
    }
    Ok(plan)
}

/// The schema rows of `plan` arrive with over Flight (dictionaries sent as
/// their values), as `FlightInfo` must announce it.
pub fn result_schema(plan: &LogicalPlan) -> SchemaRef {
    let schema = Arc::new(plan.schema().as_arrow().clone());
    FlightDataEncoderBuilder::new()
        .with_schema(Arc::clone(&schema))
        .build(futures::stream::iter([]))
        .known_schema()
        .unwrap_or(schema)
}

/// The parameters `plan` takes (`$1`, `$2`, ... or named), as a schema; a
/// parameter whose type the statement does not pin down (`SELECT $1`) is
/// `Null`, and takes the type of the value bound to it.
pub fn parameter_schema(plan: &LogicalPlan) -> Result<SchemaRef, Status> {
    let types: BTreeMap<String, _> = plan.get_parameter_types().map_err(user_error)?.into_iter().collect();
    let fields: Vec<Field> = types
        .into_iter()
        .map(|(name, data_type)| Field::new(name, data_type.unwrap_or(DataType::Null), true))
        .collect();
    Ok(Arc::new(Schema::new(fields)))
}

/// A schema as the IPC bytes prepared-statement results carry.
pub fn schema_bytes(schema: &Schema) -> Result<Bytes, Status> {
    let message: IpcMessage = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e: arrow::error::ArrowError| Status::internal(e.to_string()))?;
    Ok(message.0)
}

/// Reads the values a client binds to a prepared statement: one row.
pub async fn read_parameters(
    data: impl Stream<Item = Result<FlightData, Status>> + Send + 'static,
) -> Result<Bytes, Status> {
    let batches: Vec<RecordBatch> = FlightRecordBatchStream::new_from_flight_data(data.map_err(FlightError::from))
        .try_collect()
        .await
        .map_err(|e| Status::invalid_argument(format!("cannot read the parameters: {e}")))?;
    let Some(first) = batches.first() else {
        return Err(Status::invalid_argument("no parameter values were sent"));
    };
    let schema = first.schema();
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    if rows != 1 {
        return Err(Status::invalid_argument(format!(
            "parameters bind one row of values at a time, got {rows}"
        )));
    }
    let mut bytes = Vec::new();
    let mut writer = StreamWriter::try_new(&mut bytes, &schema).map_err(|e| Status::internal(e.to_string()))?;
    for batch in &batches {
        writer.write(batch).map_err(|e| Status::internal(e.to_string()))?;
    }
    writer.finish().map_err(|e| Status::internal(e.to_string()))?;
    Ok(bytes.into())
}

/// Bound parameters: one row, columns named `$1`, `$2`, ... (or by name).
fn decode_parameters(bytes: &[u8]) -> Result<ParamValues, Status> {
    let invalid = |e: &dyn std::fmt::Display| Status::invalid_argument(format!("invalid parameters: {e}"));
    let reader = StreamReader::try_new(bytes, None).map_err(|e| invalid(&e))?;
    let schema = reader.schema();
    let batches = reader.collect::<Result<Vec<_>, _>>().map_err(|e| invalid(&e))?;
    let batch = concat_batches(&schema, &batches).map_err(|e| invalid(&e))?;
    let mut positional = Vec::new();
    let mut named = Vec::new();
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        let value = ScalarValue::try_from_array(column, 0).map_err(|e| invalid(&e))?;
        let name = field.name().trim_start_matches('$');
        match name.parse::<usize>() {
            Ok(position) => positional.push((position, value)),
            Err(_) => named.push((name.to_owned(), value)),
        }
    }
    if named.is_empty() {
        positional.sort_by_key(|(position, _)| *position);
        Ok(positional.into_iter().map(|(_, v)| v).collect::<Vec<_>>().into())
    } else {
        named.extend(positional.into_iter().map(|(p, v)| (p.to_string(), v)));
        Ok(named.into())
    }
}

/// Opens a statement's job and plans it in a session that carries the job's
/// id; a statement that does not plan ends its job as failed.
async fn start(
    sessions: &ClusterSessions,
    transactions: &Transactions,
    handle: &StatementHandle,
) -> Result<(JobGuard, SessionContext, LogicalPlan), Status> {
    let jobs = sessions.jobs();
    let job = jobs
        .open_statement(JOB_NAME, JobSource::FlightSql, &handle.query)
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
    let guard = JobGuard::new(Arc::clone(jobs), job.id.clone());
    let planned = async {
        let ctx = sessions.context(Some(job.id.clone())).await?;
        let plan = plan_to_run(&ctx, transactions, handle).await?;
        Ok::<_, Status>((ctx, plan))
    };
    match planned.await {
        Ok((ctx, plan)) => Ok((guard, ctx, plan)),
        Err(status) => Err(guard.fail(status)),
    }
}

/// Runs a statement as a job and streams its rows.
pub async fn run(
    sessions: &ClusterSessions,
    transactions: &Transactions,
    handle: StatementHandle,
) -> Result<DataStream, Status> {
    let (guard, ctx, plan) = start(sessions, transactions, &handle).await?;
    let schema = result_schema(&plan);
    let executed = async { ctx.execute_logical_plan(plan).await?.execute_stream().await };
    let rows = match executed.await {
        Ok(rows) => rows.map_err(|e| FlightError::Tonic(Box::new(engine_error(e)))),
        Err(e) => return Err(guard.fail(engine_error(e))),
    };
    let data = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(rows)
        .map_err(|e| match e {
            FlightError::Tonic(status) => *status,
            other => Status::internal(other.to_string()),
        });
    Ok(Box::pin(JobStream {
        inner: Box::pin(data),
        guard: Some(guard),
    }))
}

/// Runs an update (`CREATE`, `INSERT`, `COPY`, ...) as a job and returns the
/// rows it wrote (-1 when it says nothing of rows).
pub async fn run_update(
    sessions: &ClusterSessions,
    transactions: &Transactions,
    handle: &StatementHandle,
) -> Result<i64, Status> {
    let (guard, ctx, plan) = start(sessions, transactions, handle).await?;
    let counts_rows = matches!(plan, LogicalPlan::Dml(_) | LogicalPlan::Copy(_));
    match async { ctx.execute_logical_plan(plan).await?.collect().await }.await {
        Ok(batches) => {
            guard.end(StatementEnd::Succeeded);
            Ok(if counts_rows { count_of(&batches) } else { -1 })
        }
        Err(e) => Err(guard.fail(engine_error(e))),
    }
}

/// The row count a DML or COPY plan returns (one `count` column).
fn count_of(batches: &[RecordBatch]) -> i64 {
    let rows: u64 = batches
        .iter()
        .filter_map(|b| {
            let counts = b.columns().first()?.as_any().downcast_ref::<UInt64Array>()?;
            Some(counts.iter().flatten().sum::<u64>())
        })
        .sum();
    i64::try_from(rows).unwrap_or(i64::MAX)
}

/// Ends a statement's job once; a job dropped without an end was abandoned
/// by its client.
struct JobGuard {
    jobs: Arc<JobService>,
    id: String,
    ended: bool,
}

impl JobGuard {
    fn new(jobs: Arc<JobService>, id: String) -> Self {
        Self { jobs, id, ended: false }
    }

    fn end(mut self, end: StatementEnd) {
        self.finish(end);
    }

    /// Ends the job as failed with `status`'s message; the status, to return.
    fn fail(self, status: Status) -> Status {
        self.end(StatementEnd::Failed(status.message().to_owned()));
        status
    }

    fn finish(&mut self, end: StatementEnd) {
        if std::mem::replace(&mut self.ended, true) {
            return;
        }
        let jobs = Arc::clone(&self.jobs);
        let id = self.id.clone();
        tokio::spawn(async move { jobs.end_statement(&id, end).await });
    }
}

impl Drop for JobGuard {
    fn drop(&mut self) {
        self.finish(StatementEnd::Cancelled(
            "the Flight SQL client stopped reading the result".into(),
        ));
    }
}

/// Rows on their way to the client; the job ends with the stream.
struct JobStream {
    inner: DataStream,
    guard: Option<JobGuard>,
}

impl Stream for JobStream {
    type Item = Result<FlightData, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.inner.poll_next_unpin(cx);
        let end = match &polled {
            Poll::Ready(None) => Some(StatementEnd::Succeeded),
            Poll::Ready(Some(Err(status))) => Some(StatementEnd::Failed(status.message().to_owned())),
            _ => None,
        };
        if let Some(end) = end
            && let Some(guard) = self.guard.take()
        {
            guard.end(end);
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_round_trip_and_refuse_garbage() {
        let mut handle = StatementHandle::new("SELECT $1", Some(Bytes::from_static(b"t-1")));
        handle.parameters = Some(Bytes::from_static(b"ipc"));
        assert_eq!(StatementHandle::from_bytes(&handle.to_bytes()).unwrap(), handle);
        assert!(StatementHandle::from_bytes(&[0xff, 0xff, 0xff]).is_err());
    }

    #[test]
    fn positional_parameters_are_bound_in_order() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("$2", arrow::datatypes::DataType::Utf8, true),
            Field::new("$1", arrow::datatypes::DataType::Int64, true),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(arrow::array::StringArray::from(vec!["ada"])),
                Arc::new(arrow::array::Int64Array::from(vec![41])),
            ],
        )
        .unwrap();
        let mut bytes = Vec::new();
        let mut writer = StreamWriter::try_new(&mut bytes, &schema).unwrap();
        writer.write(&batch).unwrap();
        writer.finish().unwrap();
        drop(writer);
        let ParamValues::List(values) = decode_parameters(&bytes).unwrap() else {
            panic!("positional parameters")
        };
        let values: Vec<ScalarValue> = values.into_iter().map(|v| v.value).collect();
        assert_eq!(
            values,
            [ScalarValue::Int64(Some(41)), ScalarValue::Utf8(Some("ada".into()))]
        );
    }
}
