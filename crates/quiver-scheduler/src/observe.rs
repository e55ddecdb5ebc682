//! Watching Ballista's queries: its job state, wrapped, and graphs turned into [`QueryInfo`].
//!
//! Ballista keeps each running query as an `ExecutionGraph` and hands every
//! new or changed graph to its `JobState`. [`ObservedJobState`] wraps the
//! in-memory `JobState` and passes each graph to a [`QueryObserver`] (the job
//! service), which is how Quiver learns about queries, stages and tasks
//! without changing Ballista.
//!
//! Ballista saves a graph each time one of its stages resolves or finishes,
//! holding the graph's lock, and only then offers the new stage's tasks to
//! executors. Rendering is therefore on the path from one stage to the next,
//! and rendering every stage on every save grows with the square of a
//! query's stage count: [`QueryRenderer`] renders a stage's plan and sums its
//! operator metrics once per change of that stage (what that is worth:
//! `benches/README.md`).

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
use parking_lot::Mutex;
use quiver_core::api::{
    JobSource, JobState as QueryState, Progress, QueryInfo, StageInfo, StageMetrics, StageState, TaskInfo, TaskState,
};
use quiver_core::options::quiver_options;
use quiver_core::secret;

/// Receives Ballista's query graphs.
pub trait QueryObserver: Send + Sync {
    /// A query's graph was created or changed. Called with the graph's lock
    /// held (by Ballista, before it launches the next stage): keep it short.
    fn graph_updated(&self, graph: &dyn ExecutionGraph);
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
    pub source: Option<JobSource>,
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
        self.observer.graph_updated(graph.as_ref());
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

/// Turns graphs into [`QueryInfo`] records, remembering what it rendered.
///
/// A stage's plan text and operator totals change only when the stage
/// changes state or a task of it ends, so they are kept per stage with the
/// counts that say so and reused until then. Entries go when their query
/// ends.
///
/// The job service owns one and calls [`QueryRenderer::observe`] for every
/// graph Ballista saves and every running graph it polls.
#[derive(Debug, Default)]
pub struct QueryRenderer {
    stages: Mutex<HashMap<(String, usize), RenderedStage>>,
}

/// What rendering a stage produced, and the version of the stage it is for.
#[derive(Debug, Clone)]
struct RenderedStage {
    version: StageVersion,
    plan: String,
    metrics: StageMetrics,
    rows_read: u64,
}

/// Everything about a stage that changes its plan text or metric totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StageVersion {
    state: StageState,
    attempt: usize,
    tasks: usize,
    tasks_ended: usize,
    metric_sets: Option<usize>,
}

/// Beyond this many cached stages (queries that never end, say) the cache
/// starts over rather than grow.
const MAX_CACHED_STAGES: usize = 10_000;

impl QueryRenderer {
    /// Pulls the owner and a [`QueryInfo`] out of a graph.
    ///
    /// `executors` remembers which executor ran each task while it was
    /// running (a failed task's status no longer says), keyed by (stage, task).
    pub fn observe(
        &self,
        graph: &dyn ExecutionGraph,
        executors: &HashMap<(usize, usize), String>,
    ) -> (QueryOwner, QueryInfo) {
        (QueryOwner::of(graph), self.query_info(graph, executors))
    }

    /// Converts a graph into the API's query record.
    pub fn query_info(&self, graph: &dyn ExecutionGraph, executors: &HashMap<(usize, usize), String>) -> QueryInfo {
        let info = query_info(graph, executors, &mut |id, stage, parts| {
            self.render(graph.job_id().as_ref(), id, stage, parts)
        });
        if info.state.is_terminal() {
            self.stages.lock().retain(|(query, _), _| query != &info.id);
        }
        info
    }

    fn render(&self, job_id: &str, id: usize, stage: &ExecutionStage, parts: &StageParts<'_>) -> RenderedStage {
        let version = parts.version();
        let key = (job_id.to_owned(), id);
        if let Some(done) = self.stages.lock().get(&key).filter(|r| r.version == version) {
            return done.clone();
        }
        let rendered = render_stage(stage, parts, version);
        let mut stages = self.stages.lock();
        if stages.len() >= MAX_CACHED_STAGES {
            stages.clear();
        }
        stages.insert(key, rendered.clone());
        rendered
    }
}

fn ms(t: u128) -> Option<u64> {
    (t > 0).then_some(t as u64)
}

fn ms64(t: u64) -> Option<u64> {
    (t > 0).then_some(t)
}

/// How [`query_info`] gets a stage's plan text and operator totals.
type RenderStage<'g> = dyn FnMut(usize, &'g ExecutionStage, &StageParts<'g>) -> RenderedStage + 'g;

/// Converts a graph into the API's query record.
fn query_info<'g>(
    graph: &'g dyn ExecutionGraph,
    executors: &HashMap<(usize, usize), String>,
    render: &mut RenderStage<'g>,
) -> QueryInfo {
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
        let stage = stage_info(id, &graph.stages()[&id], executors, render);
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
    state: StageState,
    attempt: usize,
    partitions: usize,
    inputs: Vec<usize>,
    tasks: &'a [ballista_scheduler::state::execution_stage::TaskInfo],
    metrics: Option<&'a [MetricsSet]>,
    error: Option<String>,
}

impl<'a> StageParts<'a> {
    fn version(&self) -> StageVersion {
        StageVersion {
            state: self.state,
            attempt: self.attempt,
            tasks: self.tasks.len(),
            tasks_ended: self
                .tasks
                .iter()
                .filter(|t| !matches!(t.task_status, task_status::Status::Running(_)))
                .count(),
            metric_sets: self.metrics.map(<[MetricsSet]>::len),
        }
    }

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
            ExecutionStage::UnResolved(s) => base(
                StageState::Pending,
                s.stage_attempt_num,
                0,
                s.inputs.keys().copied().collect(),
            ),
            ExecutionStage::Resolved(s) => base(
                StageState::Resolved,
                s.stage_attempt_num,
                s.partitions,
                s.inputs.keys().copied().collect(),
            ),
            ExecutionStage::Running(s) => StageParts {
                tasks: &s.task_infos,
                metrics: s.stage_metrics.as_deref(),
                ..base(
                    StageState::Running,
                    s.stage_attempt_num,
                    s.partitions,
                    s.inputs.keys().copied().collect(),
                )
            },
            ExecutionStage::Successful(s) => StageParts {
                tasks: &s.task_infos,
                metrics: Some(s.stage_metrics.as_slice()),
                ..base(
                    StageState::Succeeded,
                    s.stage_attempt_num,
                    s.partitions,
                    s.inputs.keys().copied().collect(),
                )
            },
            ExecutionStage::Failed(s) => StageParts {
                tasks: &s.task_infos,
                metrics: s.stage_metrics.as_deref(),
                error: Some(secret::redact(&s.error_message).into_owned()),
                ..base(StageState::Failed, s.stage_attempt_num, s.partitions, vec![])
            },
        }
    }
}

fn stage_info<'g>(
    id: usize,
    stage: &'g ExecutionStage,
    executors: &HashMap<(usize, usize), String>,
    render: &mut RenderStage<'g>,
) -> StageInfo {
    let parts = StageParts::of(stage);
    let rendered = render(id, stage, &parts);
    let StageParts {
        state,
        attempt,
        partitions,
        inputs,
        tasks,
        metrics: _,
        error,
    } = parts;
    let mut inputs = inputs;
    inputs.sort_unstable();

    let mut progress = Progress {
        stages_total: 1,
        stages_done: u64::from(state == StageState::Succeeded),
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
                (TaskState::Running, Some(r.executor_id.clone()), None)
            }
            task_status::Status::Successful(s) => {
                progress.tasks_done += 1;
                for p in &s.partitions {
                    shuffle_write_bytes += p.num_bytes;
                    shuffle_write_rows += p.num_rows;
                }
                (TaskState::Succeeded, Some(s.executor_id.clone()), None)
            }
            task_status::Status::Failed(f) => {
                progress.tasks_failed += 1;
                (
                    TaskState::Failed,
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
            state,
            launched_at: ms(t.launch_time),
            started_at: ms(t.start_exec_time),
            finished_at: ms(t.finish_time).or(ms(t.end_exec_time)),
            duration_ms: duration,
            error,
        });
    }
    number_attempts(&mut task_list);

    let stage_metrics = StageMetrics {
        shuffle_write_bytes,
        shuffle_write_rows,
        ..rendered.metrics
    };
    progress.rows_read = rendered.rows_read;
    progress.bytes_read = stage_metrics.bytes_read;
    progress.bytes_written = stage_metrics.bytes_written;
    let mut outputs = stage.output_links().to_vec();
    outputs.sort_unstable();
    StageInfo {
        id,
        state,
        attempt,
        partitions,
        inputs,
        outputs,
        progress,
        metrics: stage_metrics,
        plan: rendered.plan,
        tasks: task_list,
        error,
    }
}

/// Renders a stage's plan (with its metrics, once it has some) and sums its
/// operator metrics.
fn render_stage(stage: &ExecutionStage, parts: &StageParts<'_>, version: StageVersion) -> RenderedStage {
    let plan: &dyn ExecutionPlan = stage.plan();
    let mut metrics = StageMetrics::default();
    let rows_read = parts.metrics.map_or(0, |m| fill_metrics(plan, m, &mut metrics));
    let text = match parts.metrics {
        Some(m) if !m.is_empty() => format_stage_metrics(plan, m),
        _ => datafusion::physical_plan::displayable(plan).indent(false).to_string(),
    };
    RenderedStage {
        version,
        plan: secret::redact(&text).into_owned(),
        metrics,
        rows_read,
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
    use ballista_core::extension::SessionConfigExt;
    use ballista_scheduler::planner::DefaultDistributedPlanner;
    use ballista_scheduler::state::execution_graph::StaticExecutionGraph;

    use super::*;

    fn task(partitions: Vec<usize>) -> TaskInfo {
        TaskInfo {
            id: 0,
            partitions,
            executor_id: None,
            attempt: 9,
            state: TaskState::Failed,
            launched_at: None,
            started_at: None,
            finished_at: None,
            duration_ms: None,
            error: None,
        }
    }

    /// A two-stage graph (aggregate over two partitions) as Ballista plans it.
    async fn graph() -> StaticExecutionGraph {
        let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(2));
        ctx.sql("CREATE TABLE t (k INT, v INT) AS VALUES (1, 10), (2, 20), (1, 30)")
            .await
            .unwrap();
        let plan = ctx
            .sql("SELECT k, sum(v) FROM t GROUP BY k")
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        StaticExecutionGraph::new(
            "scheduler",
            &"q1".into(),
            "job",
            "session",
            plan,
            0,
            Arc::new(SessionConfig::new_with_ballista()),
            &mut DefaultDistributedPlanner::new(),
            None,
        )
        .unwrap()
    }

    #[tokio::test]
    async fn stages_are_rendered_again_only_when_they_change_and_forgotten_when_the_query_ends() {
        let renderer = QueryRenderer::default();
        let mut graph = graph().await;
        let first = renderer.query_info(&graph, &HashMap::new());
        assert_eq!(first.stages.len(), 2, "{first:?}");
        assert_eq!(renderer.stages.lock().len(), 2);
        assert!(
            first.stages.iter().all(|s| s.plan.contains("ShuffleWriterExec")),
            "{first:?}"
        );
        assert_eq!(renderer.query_info(&graph, &HashMap::new()), first);

        // Reviving makes the first stage runnable: its record must say so.
        assert!(graph.revive());
        let revived = renderer.query_info(&graph, &HashMap::new());
        let states: Vec<StageState> = revived.stages.iter().map(|s| s.state).collect();
        assert_eq!(states, [StageState::Running, StageState::Pending], "{revived:?}");
        assert_eq!(revived.stages[1].plan, first.stages[1].plan);
        let cached_state = |id: usize| renderer.stages.lock()[&("q1".to_owned(), id)].version.state;
        let ids: Vec<usize> = revived.stages.iter().map(|s| s.id).collect();
        assert_eq!(
            [cached_state(ids[0]), cached_state(ids[1])],
            [StageState::Running, StageState::Pending]
        );

        graph.fail_job("stopped by the test".into());
        let failed = renderer.query_info(&graph, &HashMap::new());
        assert!(failed.state.is_terminal(), "{failed:?}");
        assert_eq!(renderer.stages.lock().len(), 0);
    }

    #[test]
    fn retries_are_numbered_per_partition_set() {
        let mut tasks = vec![task(vec![0, 1]), task(vec![2]), task(vec![0, 1])];
        number_attempts(&mut tasks);
        assert_eq!(tasks.iter().map(|t| t.attempt).collect::<Vec<_>>(), vec![0, 0, 1]);
    }
}
