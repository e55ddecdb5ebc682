//! The job service's wire types: what the scheduler's REST API sends and takes.
//!
//! One definition serves the scheduler (which produces them), the `quiver`
//! CLI and library (which consume them), the web UI and stored job history,
//! so the JSON is the same everywhere. Times are milliseconds since the Unix
//! epoch; sizes are bytes.
//!
//! The hierarchy is Spark's: a **job** (a submitted script, a shell session or
//! a DataFrame program) runs **queries** (one per distributed statement), each
//! query runs **stages**, each stage runs **tasks** on executors.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The scheduler's port (gRPC, REST, UI, Flight) unless told otherwise.
pub const DEFAULT_SCHEDULER_PORT: u16 = 50050;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Accepted, waiting for a free job slot.
    Queued,
    /// Running statements.
    Running,
    /// Every statement succeeded.
    Succeeded,
    /// A statement failed; see the job's `error`.
    Failed,
    /// Cancelled by a user.
    Cancelled,
}

impl JobState {
    /// True for states a job never leaves.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }

    /// The state's name as used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

impl std::str::FromStr for JobState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "queued" => Self::Queued,
            "running" => Self::Running,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            "cancelled" | "canceled" => Self::Cancelled,
            other => {
                return Err(format!(
                    "unknown job state '{other}': use queued, running, succeeded, failed or cancelled"
                ));
            }
        })
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Declares a state enum of the API: snake_case on the wire, in the OpenAPI
/// document, and in `as_str`/`Display`/`FromStr`.
macro_rules! api_state {
    (
        $(#[$meta:meta])*
        pub enum $name:ident ($what:literal) { $( $(#[doc = $doc:literal])* $variant:ident => $text:literal, )* }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $( $(#[doc = $doc])* $variant, )*
        }

        impl $name {
            /// The name as used in the API.
            pub fn as_str(self) -> &'static str {
                match self { $( Self::$variant => $text, )* }
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s.to_ascii_lowercase().as_str() {
                    $( $text => Ok(Self::$variant), )*
                    other => Err(format!("unknown {} '{other}': use {}", $what, [$($text),*].join(", "))),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

api_state! {
    /// Where a stage is in its life.
    pub enum StageState ("stage state") {
        /// Waiting for the stages it reads.
        Pending => "pending",
        /// Its inputs are ready; its tasks are about to be offered.
        Resolved => "resolved",
        /// Tasks are running.
        Running => "running",
        /// Every task succeeded.
        Succeeded => "succeeded",
        /// It failed; see its `error`.
        Failed => "failed",
    }
}

api_state! {
    /// What became of one task attempt.
    pub enum TaskState ("task state") {
        /// Running on its executor.
        Running => "running",
        /// Finished and its output is written.
        Succeeded => "succeeded",
        /// Failed; see its `error`.
        Failed => "failed",
    }
}

api_state! {
    /// Whether the scheduler can use an executor.
    pub enum ExecutorState ("executor state") {
        /// Registered, with a heartbeat within the executor timeout.
        Alive => "alive",
        /// Stopped, or silent past the executor timeout; its work was rescheduled.
        Lost => "lost",
    }
}

api_state! {
    /// Where a job came from.
    pub enum JobSource ("job source") {
        /// `quiver submit`.
        Submit => "submit",
        /// The REST API (orchestrators such as Airflow).
        Rest => "rest",
        /// A `quiver sql` shell session.
        Shell => "shell",
        /// A DataFrame program using the `quiver` library.
        Dataframe => "dataframe",
        /// A Ballista client that did not register a job.
        Client => "client",
        /// A statement from an Arrow Flight SQL client (ADBC, JDBC, BI tools).
        FlightSql => "flight_sql",
    }
}

/// A request to run a SQL script as a job on the scheduler.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct SubmitJob {
    /// The script: statements separated by `;`.
    pub sql: String,
    /// A name for the job; defaults to `sql-job`.
    #[serde(default)]
    pub name: Option<String>,
    /// Values for `${name}` placeholders in the script.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// Session settings (`datafusion.*`, `s3.*`, ...) for the job.
    #[serde(default)]
    pub conf: BTreeMap<String, String>,
    /// Who submits it; `rest` when unset. The CLI sends `submit`.
    #[serde(default)]
    pub source: Option<JobSource>,
    /// Seconds the job may run (from its start, not counting time queued);
    /// past them it is stopped and fails. The scheduler's `--job-timeout`,
    /// when set, caps it.
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

/// A request to open a client session (shell or DataFrame program) as a job.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OpenSession {
    /// The job's name.
    pub name: String,
    /// `shell` or `dataframe`.
    pub source: JobSource,
}

/// A session the scheduler opened: its job, and the proof that opens the
/// job's results through the scheduler's Flight proxy (a client sends it
/// with each result fetch; fetches of other jobs' results are refused).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OpenedSession {
    /// The session's job.
    #[serde(flatten)]
    pub job: JobSummary,
    /// The job's result fetch proof.
    pub fetch_proof: String,
}

/// A request to end a client session.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct CloseSession {
    /// Set when the session ended because of an error.
    #[serde(default)]
    pub error: Option<String>,
}

/// Counts that show how far a job, query or stage has come.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Progress {
    /// Stages in all queries so far.
    pub stages_total: u64,
    /// Stages finished successfully.
    pub stages_done: u64,
    /// Tasks known so far (a stage's tasks are known once it is scheduled).
    pub tasks_total: u64,
    /// Tasks finished successfully.
    pub tasks_done: u64,
    /// Tasks running now.
    pub tasks_running: u64,
    /// Task attempts that failed.
    pub tasks_failed: u64,
    /// Rows read from storage.
    pub rows_read: u64,
    /// Bytes read from storage.
    pub bytes_read: u64,
    /// Rows written by writes (INSERT, COPY, CREATE TABLE AS).
    pub rows_written: u64,
    /// Bytes written to storage.
    pub bytes_written: u64,
}

impl Progress {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &Progress) {
        self.stages_total += other.stages_total;
        self.stages_done += other.stages_done;
        self.tasks_total += other.tasks_total;
        self.tasks_done += other.tasks_done;
        self.tasks_running += other.tasks_running;
        self.tasks_failed += other.tasks_failed;
        self.rows_read += other.rows_read;
        self.bytes_read += other.bytes_read;
        self.rows_written += other.rows_written;
        self.bytes_written += other.bytes_written;
    }
}

/// A job as listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobSummary {
    /// The job's id.
    pub id: String,
    /// The job's name.
    pub name: String,
    /// Where it came from.
    pub source: JobSource,
    /// Where it is.
    pub state: JobState,
    /// When it was submitted.
    pub submitted_at: u64,
    /// When it started running.
    pub started_at: Option<u64>,
    /// When it ended.
    pub finished_at: Option<u64>,
    /// Run time so far, or in all when finished.
    pub duration_ms: Option<u64>,
    /// Stages, tasks, rows and bytes.
    pub progress: Progress,
    /// Number of queries run so far.
    pub query_count: u64,
    /// Why it failed.
    pub error: Option<String>,
}

/// One statement of a script job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StatementInfo {
    /// 1-based position in the script.
    pub index: usize,
    /// 1-based line where it starts.
    pub line: usize,
    /// Its text.
    pub sql: String,
    /// `queued` until it runs, then like a job's state.
    pub state: JobState,
    /// One line on what it did (`3 rows`, `120 rows written to s3://b/o/`).
    pub summary: Option<String>,
    /// When it started.
    pub started_at: Option<u64>,
    /// When it ended.
    pub finished_at: Option<u64>,
    /// Why it failed.
    pub error: Option<String>,
    /// Rows in its result, for queries.
    pub result_rows: Option<u64>,
    /// True when the stored result stops short of the full result.
    #[serde(default)]
    pub result_truncated: bool,
    /// Where it wrote, for writes.
    pub output: Option<String>,
}

impl StatementInfo {
    /// Statement `index` of a script, starting at `line`, not run yet.
    pub fn queued(index: usize, line: usize, sql: String) -> Self {
        Self {
            index,
            line,
            sql,
            state: JobState::Queued,
            summary: None,
            started_at: None,
            finished_at: None,
            error: None,
            result_rows: None,
            result_truncated: false,
            output: None,
        }
    }
}

/// Metrics of one stage (summed over its tasks).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StageMetrics {
    /// Rows read by the stage's leaves (scans and shuffle reads).
    pub input_rows: u64,
    /// Rows the stage produced.
    pub output_rows: u64,
    /// Bytes read from storage by scans.
    pub bytes_read: u64,
    /// Bytes fetched from other stages' shuffle output.
    pub shuffle_read_bytes: u64,
    /// Rows written to shuffle files.
    pub shuffle_write_rows: u64,
    /// Bytes written to shuffle files.
    pub shuffle_write_bytes: u64,
    /// Bytes written to storage by writes (Parquet reports them).
    #[serde(default)]
    pub bytes_written: u64,
    /// Bytes spilled to disk by operators short of memory.
    pub spill_bytes: u64,
    /// Number of spills.
    pub spill_count: u64,
    /// CPU time of the stage's operators, summed over tasks.
    pub compute_ms: u64,
}

/// One task: the work of a stage on some of its partitions, on one executor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TaskInfo {
    /// Task id within the stage.
    pub id: usize,
    /// Input partitions it covers.
    pub partitions: Vec<usize>,
    /// Executor it ran on.
    pub executor_id: Option<String>,
    /// Attempt number (0 for the first try).
    pub attempt: usize,
    /// What became of it.
    pub state: TaskState,
    /// When it was launched on the executor.
    pub launched_at: Option<u64>,
    /// When the executor started running it.
    pub started_at: Option<u64>,
    /// When it ended.
    pub finished_at: Option<u64>,
    /// Run time on the executor.
    pub duration_ms: Option<u64>,
    /// Why it failed.
    pub error: Option<String>,
}

/// One stage of a query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StageInfo {
    /// Stage id within the query.
    pub id: usize,
    /// Where it is.
    pub state: StageState,
    /// Attempt number of the stage.
    pub attempt: usize,
    /// Number of partitions (units of parallel work).
    pub partitions: usize,
    /// Stages whose output this stage reads.
    pub inputs: Vec<usize>,
    /// Stages that read this stage's output.
    pub outputs: Vec<usize>,
    /// Task counts and rows and bytes.
    pub progress: Progress,
    /// Stage metrics.
    pub metrics: StageMetrics,
    /// The stage's physical plan, one operator per line, with its metrics.
    pub plan: String,
    /// Its tasks.
    pub tasks: Vec<TaskInfo>,
    /// Why it failed.
    pub error: Option<String>,
}

/// One distributed query (a Ballista job).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct QueryInfo {
    /// The query's id on the scheduler.
    pub id: String,
    /// The statement of the job it ran for, when known.
    pub statement: Option<usize>,
    /// Like a job's state.
    pub state: JobState,
    /// When it was queued.
    pub queued_at: Option<u64>,
    /// When it started.
    pub started_at: Option<u64>,
    /// When it ended.
    pub finished_at: Option<u64>,
    /// Why it failed.
    pub error: Option<String>,
    /// Its stages.
    pub stages: Vec<StageInfo>,
    /// Sum over its stages.
    pub progress: Progress,
    /// The logical plan.
    pub logical_plan: Option<String>,
}

/// Everything about one job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobDetail {
    /// The job as listed.
    #[serde(flatten)]
    pub summary: JobSummary,
    /// The script, with parameters filled in (secrets masked).
    pub sql: Option<String>,
    /// Parameters given.
    pub params: BTreeMap<String, String>,
    /// Settings given (secrets masked).
    pub conf: BTreeMap<String, String>,
    /// The statements, for scripts.
    pub statements: Vec<StatementInfo>,
    /// Its queries.
    pub queries: Vec<QueryInfo>,
    /// Where it wrote.
    pub outputs: Vec<String>,
}

/// A page of jobs.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobList {
    /// Jobs matching the filter, in all.
    pub total: usize,
    /// Offset of this page.
    pub offset: usize,
    /// This page, newest first.
    pub jobs: Vec<JobSummary>,
}

/// Rows of a statement's result.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ResultPreview {
    /// The job.
    pub job_id: String,
    /// The statement the rows came from.
    pub statement: usize,
    /// Column names.
    pub columns: Vec<String>,
    /// Column types (Arrow's names).
    pub types: Vec<String>,
    /// Rows, as JSON values.
    #[schema(value_type = Vec<Object>)]
    pub rows: Vec<serde_json::Map<String, serde_json::Value>>,
    /// Rows in the stored result.
    pub total_rows: u64,
    /// True when the stored result stops short of the full result.
    pub truncated: bool,
}

/// An executor, as the scheduler sees it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ExecutorInfo {
    /// The executor's id.
    pub id: String,
    /// Host name it advertises.
    pub host: String,
    /// Arrow Flight port.
    pub port: u16,
    /// Whether it can take tasks.
    pub state: ExecutorState,
    /// Task slots.
    pub slots: u32,
    /// Slots free now.
    pub free_slots: u32,
    /// Tasks running on it now.
    pub running_tasks: u64,
    /// Tasks it finished successfully.
    pub finished_tasks: u64,
    /// Task attempts that failed on it.
    pub failed_tasks: u64,
    /// Resident memory of the executor process.
    pub memory_used: Option<u64>,
    /// Peak resident memory of the process.
    pub memory_peak: Option<u64>,
    /// Last heartbeat.
    pub last_heartbeat: Option<u64>,
    /// Why it was lost.
    pub lost_reason: Option<String>,
}

/// The cluster at a glance.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ClusterOverview {
    /// Quiver's version.
    pub version: String,
    /// When the scheduler started.
    pub started_at: u64,
    /// Executors alive now.
    pub executors_alive: usize,
    /// Executors lost since the scheduler started.
    pub executors_lost: usize,
    /// Task slots in all.
    pub slots_total: u64,
    /// Task slots in use.
    pub slots_used: u64,
    /// Jobs running.
    pub jobs_running: usize,
    /// Jobs waiting.
    pub jobs_queued: usize,
    /// Jobs in history.
    pub jobs_total: usize,
}

/// The body of every error response.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong and what to do about it.
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_serialize_as_snake_case_words() {
        assert_eq!(serde_json::to_string(&JobState::Cancelled).unwrap(), "\"cancelled\"");
        assert_eq!("canceled".parse::<JobState>().unwrap(), JobState::Cancelled);
        assert!(JobState::Failed.is_terminal() && !JobState::Running.is_terminal());
    }

    #[test]
    fn submit_requests_need_only_sql() {
        let r: SubmitJob = serde_json::from_str(r#"{"sql":"SELECT 1"}"#).unwrap();
        assert_eq!(r.sql, "SELECT 1");
        assert!(r.params.is_empty() && r.name.is_none());
    }
}
