//! Watching Ballista's queries: its job state, wrapped, and graphs turned into [`QueryInfo`].
//!
//! Ballista keeps each running query as an `ExecutionGraph` and hands every
//! new or changed graph to its `JobState`. [`ObservedJobState`] wraps the
//! in-memory `JobState` and passes each graph to a [`QueryObserver`] (the job
//! service), which is how Quiver learns about queries, stages and tasks
//! without changing Ballista.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use ballista_core::serde::protobuf::{JobStatus, job_status, task_status};
use ballista_core::{JobId, JobStatusSubscriber};
use ballista_scheduler::cluster::{JobState, JobStateEventStream};
use ballista_scheduler::display::format_stage_metrics;
use ballista_scheduler::state::execution_graph::{ExecutionGraph, ExecutionGraphBox};
use ballista_scheduler::state::execution_stage::ExecutionStage;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::metrics::MetricsSet;
use datafusion::prelude::{SessionConfig, SessionContext};
use quiver_core::api::{JobState as QueryState, Progress, QueryInfo, StageInfo, StageMetrics, TaskInfo};
use quiver_core::secret;
use quiver_core::session::quiver_options;

/// Receives Ballista's query graphs.
pub trait QueryObserver: Send + Sync {
    /// A query was created or changed. `owner` says which Quiver job it belongs to.
    fn query_updated(&self, owner: QueryOwner, query: QueryInfo);
    /// A query failed before it had a graph (planning failed on the scheduler).
    fn query_failed_early(&self, query_id: &str, reason: &str);
}

/// Which job a query belongs to, from the options its session carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryOwner {
    /// `quiver.job_id`, when the client registered a job.
    pub job_id: Option<String>,
    /// The client's session id.
    pub session_id: String,
    /// `ballista.job.name`.
    pub name: String,
    /// `quiver.job_source`.
    pub source: Option<String>,
}

impl QueryOwner {
    fn of(graph: &dyn ExecutionGraph) -> Self {
        let config: Arc<SessionConfig> = graph.session_config();
        let options = quiver_options(&config);
        Self {
            job_id: options.job_id,
            session_id: graph.session_id().to_owned(),
            name: graph.job_name().to_owned(),
            source: options.job_source,
        }
    }
}

/// Ballista's job state with an observer attached.
pub struct ObservedJobState {
    inner: Arc<dyn JobState>,
    observer: Arc<dyn QueryObserver>,
}

impl ObservedJobState {
    /// Wraps `inner`, reporting to `observer`.
    pub fn new(inner: Arc<dyn JobState>, observer: Arc<dyn QueryObserver>) -> Self {
        Self { inner, observer }
    }

    fn report(&self, graph: &ExecutionGraphBox) {
        self.observer.query_updated(
            QueryOwner::of(graph.as_ref()),
            query_info(graph.as_ref(), &HashMap::new()),
        );
    }
}

#[async_trait]
impl JobState for ObservedJobState {
    fn accept_job(&self, job_id: &JobId, job_name: &str, queued_at: u64) -> ballista_core::error::Result<()> {
        self.inner.accept_job(job_id, job_name, queued_at)
    }

    fn pending_job_number(&self) -> usize {
        self.inner.pending_job_number()
    }

    async fn submit_job(
        &self,
        job_id: JobId,
        graph: &ExecutionGraphBox,
        subscriber: Option<JobStatusSubscriber>,
    ) -> ballista_core::error::Result<()> {
        self.inner.submit_job(job_id, graph, subscriber).await?;
        self.report(graph);
        Ok(())
    }

    async fn get_jobs(&self) -> ballista_core::error::Result<HashSet<JobId>> {
        self.inner.get_jobs().await
    }

    async fn get_all_jobs(&self) -> ballista_core::error::Result<HashSet<JobId>> {
        self.inner.get_all_jobs().await
    }

    async fn get_job_status(&self, job_id: &JobId) -> ballista_core::error::Result<Option<JobStatus>> {
        self.inner.get_job_status(job_id).await
    }

    async fn get_execution_graph(&self, job_id: &JobId) -> ballista_core::error::Result<Option<ExecutionGraphBox>> {
        self.inner.get_execution_graph(job_id).await
    }

    async fn save_job(&self, job_id: &JobId, graph: &ExecutionGraphBox) -> ballista_core::error::Result<()> {
        self.inner.save_job(job_id, graph).await?;
        self.report(graph);
        Ok(())
    }

    async fn fail_unscheduled_job(&self, job_id: &JobId, reason: String) -> ballista_core::error::Result<()> {
        self.observer.query_failed_early(job_id.as_ref(), &reason);
        self.inner.fail_unscheduled_job(job_id, reason).await
    }

    async fn remove_job(&self, job_id: &JobId) -> ballista_core::error::Result<()> {
        self.inner.remove_job(job_id).await
    }

    async fn try_acquire_job(&self, job_id: &JobId) -> ballista_core::error::Result<Option<ExecutionGraphBox>> {
        self.inner.try_acquire_job(job_id).await
    }

    async fn job_state_events(&self) -> ballista_core::error::Result<JobStateEventStream> {
        self.inner.job_state_events().await
    }

    async fn create_or_update_session(
        &self,
        session_id: &str,
        config: &SessionConfig,
    ) -> ballista_core::error::Result<Arc<SessionContext>> {
        self.inner.create_or_update_session(session_id, config).await
    }

    async fn remove_session(&self, session_id: &str) -> ballista_core::error::Result<()> {
        self.inner.remove_session(session_id).await
    }

    fn produce_config(&self) -> SessionConfig {
        self.inner.produce_config()
    }
}

/// Pulls the owner and a [`QueryInfo`] out of a graph.
///
/// `executors` remembers which executor ran each task while it was running
/// (a failed task's status no longer says), keyed by (stage, task).
pub fn observe(graph: &dyn ExecutionGraph, executors: &HashMap<(usize, usize), String>) -> (QueryOwner, QueryInfo) {
    (QueryOwner::of(graph), query_info(graph, executors))
}

fn ms(t: u128) -> Option<u64> {
    (t > 0).then_some(t as u64)
}

fn ms64(t: u64) -> Option<u64> {
    (t > 0).then_some(t)
}

/// Converts a graph into the API's query record.
pub fn query_info(graph: &dyn ExecutionGraph, executors: &HashMap<(usize, usize), String>) -> QueryInfo {
    let status = graph.status();
    let (state, queued_at, started_at, finished_at, error) = match &status.status {
        Some(job_status::Status::Queued(q)) => (QueryState::Queued, ms64(q.queued_at), None, None, None),
        Some(job_status::Status::Running(r)) => {
            (QueryState::Running, ms64(r.queued_at), ms64(r.started_at), None, None)
        }
        Some(job_status::Status::Successful(s)) => (
            QueryState::Succeeded,
            ms64(s.queued_at),
            ms64(s.started_at),
            ms64(s.ended_at),
            None,
        ),
        Some(job_status::Status::Failed(f)) => {
            let cancelled = f.error.to_ascii_lowercase().contains("cancel");
            (
                if cancelled {
                    QueryState::Cancelled
                } else {
                    QueryState::Failed
                },
                ms64(f.queued_at),
                ms64(f.started_at),
                ms64(f.ended_at),
                Some(secret::redact(&f.error).into_owned()),
            )
        }
        None => (QueryState::Queued, None, None, None, None),
    };
    let mut stage_ids: Vec<usize> = graph.stages().keys().copied().collect();
    stage_ids.sort_unstable();
    let mut stages = Vec::with_capacity(stage_ids.len());
    let mut progress = Progress::default();
    for id in stage_ids {
        let stage = stage_info(id, &graph.stages()[&id], executors);
        progress.add(&stage.progress);
        stages.push(stage);
    }
    QueryInfo {
        id: graph.job_id().to_string(),
        statement: None,
        state,
        queued_at,
        started_at: started_at.or(ms64(graph.start_time())),
        finished_at: finished_at.or(ms64(graph.end_time())),
        error,
        stages,
        progress,
        logical_plan: graph.logical_plan().map(|p| secret::redact(p).into_owned()),
    }
}

/// The fields of a stage, whatever its variant.
struct StageParts<'a> {
    state: &'static str,
    attempt: usize,
    partitions: usize,
    inputs: Vec<usize>,
    tasks: &'a [ballista_scheduler::state::execution_stage::TaskInfo],
    metrics: Option<&'a [MetricsSet]>,
    error: Option<String>,
}

impl<'a> StageParts<'a> {
    fn of(stage: &'a ExecutionStage) -> Self {
        let base = |state, attempt, partitions, inputs: Vec<usize>| StageParts {
            state,
            attempt,
            partitions,
            inputs,
            tasks: &[],
            metrics: None,
            error: None,
        };
        match stage {
            ExecutionStage::UnResolved(s) => {
                base("pending", s.stage_attempt_num, 0, s.inputs.keys().copied().collect())
            }
            ExecutionStage::Resolved(s) => base(
                "resolved",
                s.stage_attempt_num,
                s.partitions,
                s.inputs.keys().copied().collect(),
            ),
            ExecutionStage::Running(s) => StageParts {
                tasks: &s.task_infos,
                metrics: s.stage_metrics.as_deref(),
                ..base(
                    "running",
                    s.stage_attempt_num,
                    s.partitions,
                    s.inputs.keys().copied().collect(),
                )
            },
            ExecutionStage::Successful(s) => StageParts {
                tasks: &s.task_infos,
                metrics: Some(s.stage_metrics.as_slice()),
                ..base(
                    "succeeded",
                    s.stage_attempt_num,
                    s.partitions,
                    s.inputs.keys().copied().collect(),
                )
            },
            ExecutionStage::Failed(s) => StageParts {
                tasks: &s.task_infos,
                metrics: s.stage_metrics.as_deref(),
                error: Some(secret::redact(&s.error_message).into_owned()),
                ..base("failed", s.stage_attempt_num, s.partitions, vec![])
            },
        }
    }
}

fn stage_info(id: usize, stage: &ExecutionStage, executors: &HashMap<(usize, usize), String>) -> StageInfo {
    let parts = StageParts::of(stage);
    let StageParts {
        state,
        attempt,
        partitions,
        inputs,
        tasks,
        metrics,
        error,
    } = parts;
    let mut inputs = inputs;
    inputs.sort_unstable();
    let plan: &dyn ExecutionPlan = stage.plan();

    let mut progress = Progress {
        stages_total: 1,
        stages_done: u64::from(state == "succeeded"),
        tasks_total: partitions_to_tasks(partitions, tasks),
        ..Progress::default()
    };
    let mut task_list = Vec::with_capacity(tasks.len());
    let mut shuffle_write_bytes = 0;
    let mut shuffle_write_rows = 0;
    for t in tasks {
        let (state, executor, error) = match &t.task_status {
            task_status::Status::Running(r) => {
                progress.tasks_running += 1;
                ("running", Some(r.executor_id.clone()), None)
            }
            task_status::Status::Successful(s) => {
                progress.tasks_done += 1;
                for p in &s.partitions {
                    shuffle_write_bytes += p.num_bytes;
                    shuffle_write_rows += p.num_rows;
                }
                ("succeeded", Some(s.executor_id.clone()), None)
            }
            task_status::Status::Failed(f) => {
                progress.tasks_failed += 1;
                (
                    "failed",
                    executors.get(&(id, t.task_id)).cloned(),
                    Some(secret::redact(&f.error).into_owned()),
                )
            }
        };
        let duration = (t.end_exec_time > 0 && t.start_exec_time > 0)
            .then(|| t.end_exec_time.saturating_sub(t.start_exec_time) as u64);
        task_list.push(TaskInfo {
            id: t.task_id,
            partitions: t.global_input_partition_ids.clone(),
            executor_id: executor,
            attempt: 0,
            state: state.into(),
            launched_at: ms(t.launch_time),
            started_at: ms(t.start_exec_time),
            finished_at: ms(t.finish_time).or(ms(t.end_exec_time)),
            duration_ms: duration,
            error,
        });
    }
    number_attempts(&mut task_list);

    let mut stage_metrics = StageMetrics {
        shuffle_write_bytes,
        shuffle_write_rows,
        ..StageMetrics::default()
    };
    if let Some(metrics) = metrics {
        progress.rows_read = fill_metrics(plan, metrics, &mut stage_metrics);
    }
    progress.bytes_read = stage_metrics.bytes_read;
    progress.bytes_written = stage_metrics.bytes_written;
    let rendered = match metrics {
        Some(m) if !m.is_empty() => format_stage_metrics(plan, m),
        _ => datafusion::physical_plan::displayable(plan).indent(false).to_string(),
    };
    let mut outputs = stage.output_links().to_vec();
    outputs.sort_unstable();
    StageInfo {
        id,
        state: state.into(),
        attempt,
        partitions,
        inputs,
        outputs,
        progress,
        metrics: stage_metrics,
        plan: secret::redact(&rendered).into_owned(),
        tasks: task_list,
        error,
    }
}

/// Tasks are known once launched; before that a stage has one pending task per
/// partition at most. The larger of the two is the best total we have.
fn partitions_to_tasks(partitions: usize, tasks: &[ballista_scheduler::state::execution_stage::TaskInfo]) -> u64 {
    let covered: usize = tasks
        .iter()
        .filter(|t| !matches!(t.task_status, task_status::Status::Failed(_)))
        .map(|t| t.global_input_partition_ids.len().max(1))
        .sum();
    let live_tasks = tasks
        .iter()
        .filter(|t| !matches!(t.task_status, task_status::Status::Failed(_)))
        .count();
    (live_tasks + partitions.saturating_sub(covered)) as u64
}

/// A retried task is a new task over the same partitions: number the tries.
fn number_attempts(tasks: &mut [TaskInfo]) {
    let mut seen: HashMap<Vec<usize>, usize> = HashMap::new();
    for t in tasks.iter_mut() {
        let n = seen.entry(t.partitions.clone()).or_insert(0);
        t.attempt = *n;
        *n += 1;
    }
}

/// Sums a stage's per-operator metrics (pre-order, like the plan) into its
/// totals; returns the rows its scans read from storage.
fn fill_metrics(plan: &dyn ExecutionPlan, metrics: &[MetricsSet], out: &mut StageMetrics) -> u64 {
    let mut storage_rows = 0;
    let mut nodes: Vec<&dyn ExecutionPlan> = Vec::new();
    fn preorder<'a>(p: &'a dyn ExecutionPlan, out: &mut Vec<&'a dyn ExecutionPlan>) {
        out.push(p);
        for c in p.children() {
            preorder(c.as_ref(), out);
        }
    }
    preorder(plan, &mut nodes);
    for (i, (node, m)) in nodes.iter().zip(metrics.iter()).enumerate() {
        let m = m.aggregate_by_name();
        let count = |name: &str| m.sum_by_name(name).map(|v| v.as_usize() as u64).unwrap_or(0);
        if i == 0 {
            out.output_rows = m.output_rows().unwrap_or(0) as u64;
        }
        if node.children().is_empty() {
            let rows = m.output_rows().unwrap_or(0) as u64;
            out.input_rows += rows;
            if !node.name().contains("Shuffle") {
                storage_rows += rows;
            }
        }
        out.bytes_read += count("bytes_scanned");
        out.bytes_written += count("bytes_written");
        out.shuffle_read_bytes += count("decoded_bytes");
        out.spill_bytes += count("spilled_bytes") + count("spill_bytes");
        out.spill_count += count("spill_count");
        out.compute_ms += (m.elapsed_compute().unwrap_or(0) / 1_000_000) as u64;
    }
    storage_rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(partitions: Vec<usize>) -> TaskInfo {
        TaskInfo {
            id: 0,
            partitions,
            executor_id: None,
            attempt: 9,
            state: "failed".into(),
            launched_at: None,
            started_at: None,
            finished_at: None,
            duration_ms: None,
            error: None,
        }
    }

    #[test]
    fn retries_are_numbered_per_partition_set() {
        let mut tasks = vec![task(vec![0, 1]), task(vec![2]), task(vec![0, 1])];
        number_attempts(&mut tasks);
        assert_eq!(tasks.iter().map(|t| t.attempt).collect::<Vec<_>>(), vec![0, 0, 1]);
    }
}
