//! The job service: runs submitted scripts, tracks every job's queries, stages
//! and tasks, and keeps the history.
//!
//! Jobs come from three places:
//!
//! * scripts submitted over REST (`quiver submit`, orchestrators): the
//!   scheduler runs them itself, statement by statement, as a client of its own
//!   cluster ([`JobService::submit_script`]);
//! * client sessions (`quiver sql`, DataFrame programs): the client opens a job
//!   ([`JobService::open_session`]), sends queries tagged with its id, sends
//!   heartbeats, and closes it;
//! * any other Ballista client: its queries are grouped by session into a job
//!   of source `client`.
//!
//! Ballista reports queries through [`QueryObserver`]; a poller adds live
//! progress of running queries. Records go to the [`HistoryStore`] when a job
//! changes state; finished jobs' details are read back from it on demand.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use ballista_scheduler::scheduler_server::SchedulerServer;
use ballista_scheduler::state::execution_graph::ExecutionGraph;
use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};
use parking_lot::Mutex;
use quiver_core::api::{
    JobDetail, JobList, JobSource, JobState, JobSummary, OpenSession, Progress, QueryInfo, ResultPreview,
    StatementInfo, SubmitJob,
};
use quiver_core::config::Settings;
use quiver_core::runner::{OutputKind, StatementRunner};
use quiver_core::script::Script;
use quiver_core::secret;
use quiver_core::session::{JobInfo, SessionFactory, apply_settings};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::history::{HistoryError, HistoryStore};
use crate::metrics::SchedulerMetrics;
use crate::observe::{QueryObserver, QueryOwner, QueryRenderer};

/// The Ballista scheduler type Quiver runs.
pub type Ballista = SchedulerServer<LogicalPlanNode, PhysicalPlanNode>;

/// Limits and timeouts of the job service.
#[derive(Debug, Clone)]
pub struct JobServiceOptions {
    /// Scripts running at once; more wait as `queued`.
    pub max_running_jobs: usize,
    /// Rows kept of each query result of a script job.
    pub max_result_rows: usize,
    /// A client session with no heartbeat for this long is ended as failed.
    pub session_timeout: Duration,
    /// Jobs kept in history (oldest finished jobs are removed first).
    pub max_history_jobs: usize,
    /// Finished jobs older than this are removed from history.
    pub max_history_age: Duration,
}

impl Default for JobServiceOptions {
    fn default() -> Self {
        Self {
            max_running_jobs: 4,
            max_result_rows: 100_000,
            session_timeout: Duration::from_secs(60),
            max_history_jobs: 1000,
            max_history_age: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// Errors the job service reports to API callers.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The request is wrong; the message says how.
    #[error("{0}")]
    BadRequest(String),
    /// No such job (or statement result).
    #[error("{0}")]
    NotFound(String),
    /// The job is not in a state that allows this.
    #[error("{0}")]
    Conflict(String),
    /// History could not be read or written.
    #[error(transparent)]
    History(#[from] HistoryError),
}

/// A job that is not finished: its full record and what controls it.
struct ActiveJob {
    detail: JobDetail,
    cancel: CancellationToken,
    last_heartbeat: Instant,
    /// Executor of each task seen running, by (query, stage, task).
    task_executors: HashMap<String, HashMap<(usize, usize), String>>,
    running_statement: Option<usize>,
}

#[derive(Default)]
struct Registry {
    /// Every job in history, by id (ids sort by submission time).
    summaries: BTreeMap<String, JobSummary>,
    active: HashMap<String, ActiveJob>,
    /// Query id → job id.
    query_jobs: HashMap<String, String>,
    /// Session id → job id, for queries that carry no job id.
    session_jobs: HashMap<String, String>,
    /// Recently read details of finished jobs.
    detail_cache: VecDeque<Arc<JobDetail>>,
    /// Finished and failed task attempts per executor since the scheduler started.
    executor_totals: HashMap<String, (u64, u64)>,
    /// Job ids issued this second, for unique ids.
    last_id_second: u64,
    id_counter: u32,
}

const DETAIL_CACHE: usize = 32;

/// The job service; see the [module docs](self).
pub struct JobService {
    registry: Mutex<Registry>,
    history: HistoryStore,
    factory: SessionFactory,
    options: JobServiceOptions,
    slots: Arc<Semaphore>,
    scheduler: OnceLock<Ballista>,
    scheduler_url: OnceLock<String>,
    token: OnceLock<Option<String>>,
    metrics: SchedulerMetrics,
    renderer: QueryRenderer,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl JobService {
    /// A service keeping history in `history`; loads what is there, and marks
    /// jobs that were running when the scheduler stopped as failed.
    pub async fn new(
        history: HistoryStore,
        factory: SessionFactory,
        options: JobServiceOptions,
        metrics: SchedulerMetrics,
    ) -> Result<Arc<Self>, HistoryError> {
        let mut summaries = BTreeMap::new();
        for mut summary in history.list_summaries().await? {
            if !summary.state.is_terminal() {
                let reason = "the scheduler stopped while this job was running".to_string();
                if let Some(mut detail) = history.get_job(&summary.id).await? {
                    finish_detail(&mut detail, JobState::Failed, Some(reason.clone()));
                    history.put_job(&detail).await?;
                    summary = detail.summary;
                } else {
                    summary.state = JobState::Failed;
                    summary.error = Some(reason);
                }
            }
            summaries.insert(summary.id.clone(), summary);
        }
        let loaded = summaries.len();
        let service = Arc::new(Self {
            registry: Mutex::new(Registry {
                summaries,
                ..Registry::default()
            }),
            slots: Arc::new(Semaphore::new(options.max_running_jobs.max(1))),
            history,
            factory,
            options,
            scheduler: OnceLock::new(),
            scheduler_url: OnceLock::new(),
            token: OnceLock::new(),
            metrics,
            renderer: QueryRenderer::default(),
        });
        service.prune_history().await;
        tracing::info!(
            jobs = loaded,
            location = service.history.location(),
            "job history loaded"
        );
        Ok(service)
    }

    /// Connects the service to the running scheduler, which it uses to run
    /// scripts (at `url`, with `token`) and to cancel and observe queries.
    pub fn attach(self: &Arc<Self>, scheduler: Ballista, url: String, token: Option<String>) {
        let _ = self.scheduler.set(scheduler);
        let _ = self.scheduler_url.set(url);
        let _ = self.token.set(token);
        let service = Arc::clone(self);
        tokio::spawn(async move { service.poll_loop().await });
    }

    fn new_id(registry: &mut Registry) -> String {
        let now = chrono::Utc::now();
        let second = now.timestamp() as u64;
        if registry.last_id_second != second {
            registry.last_id_second = second;
            registry.id_counter = 0;
        }
        loop {
            registry.id_counter += 1;
            let id = format!("job-{}-{:04}", now.format("%Y%m%d-%H%M%S"), registry.id_counter);
            if !registry.summaries.contains_key(&id) {
                return id;
            }
        }
    }

    fn new_detail(id: String, name: String, source: JobSource, state: JobState) -> JobDetail {
        let now = now_ms();
        JobDetail {
            summary: JobSummary {
                id,
                name,
                source,
                state,
                submitted_at: now,
                started_at: (state == JobState::Running).then_some(now),
                finished_at: None,
                duration_ms: None,
                progress: Progress::default(),
                query_count: 0,
                error: None,
            },
            sql: None,
            params: BTreeMap::new(),
            conf: BTreeMap::new(),
            statements: vec![],
            queries: vec![],
            outputs: vec![],
        }
    }

    fn insert_active(&self, registry: &mut Registry, detail: JobDetail) -> CancellationToken {
        let cancel = CancellationToken::new();
        registry
            .summaries
            .insert(detail.summary.id.clone(), detail.summary.clone());
        registry.active.insert(
            detail.summary.id.clone(),
            ActiveJob {
                detail,
                cancel: cancel.clone(),
                last_heartbeat: Instant::now(),
                task_executors: HashMap::new(),
                running_statement: None,
            },
        );
        self.metrics.job_submitted();
        cancel
    }

    /// Accepts a script and starts it (or queues it when the job slots are full).
    pub async fn submit_script(self: &Arc<Self>, request: SubmitJob) -> Result<JobSummary, JobError> {
        let script = Script::parse(&request.sql, &request.params).map_err(|e| JobError::BadRequest(e.to_string()))?;
        let conf: Settings = request.conf.clone().into_iter().collect();
        let mut probe = self.factory.base_config();
        apply_settings(&mut probe, &conf).map_err(|e| JobError::BadRequest(e.to_string()))?;
        let name = request
            .name
            .clone()
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| "sql-job".into());
        let source = request.source.unwrap_or(JobSource::Rest);

        let (detail, cancel) = {
            let mut registry = self.registry.lock();
            let id = Self::new_id(&mut registry);
            let mut detail = Self::new_detail(id, name, source, JobState::Queued);
            let filled: Vec<&str> = script.statements.iter().map(|s| s.sql.as_str()).collect();
            detail.sql = Some(secret::redact(&(filled.join(";\n\n") + ";")).into_owned());
            detail.params = request.params.clone();
            detail.conf = conf.redacted();
            detail.statements = script
                .statements
                .iter()
                .map(|s| StatementInfo {
                    index: s.index,
                    line: s.line,
                    sql: secret::redact(&s.sql).into_owned(),
                    state: JobState::Queued,
                    summary: None,
                    started_at: None,
                    finished_at: None,
                    error: None,
                    result_rows: None,
                    result_truncated: false,
                    output: None,
                })
                .collect();
            let cancel = self.insert_active(&mut registry, detail.clone());
            (detail, cancel)
        };
        self.history.put_job(&detail).await?;
        tracing::info!(job = %detail.summary.id, name = %detail.summary.name, source = %detail.summary.source, statements = script.statements.len(), "job submitted");
        let service = Arc::clone(self);
        let id = detail.summary.id.clone();
        let name = detail.summary.name.clone();
        tokio::spawn(async move { service.run_script(id, name, source, script, conf, cancel).await });
        Ok(detail.summary)
    }

    async fn run_script(
        self: Arc<Self>,
        id: String,
        name: String,
        source: JobSource,
        script: Script,
        conf: Settings,
        cancel: CancellationToken,
    ) {
        let permit = tokio::select! {
            p = Arc::clone(&self.slots).acquire_owned() => p,
            _ = cancel.cancelled() => {
                self.finish(&id, JobState::Cancelled, Some("cancelled before it started".into())).await;
                return;
            }
        };
        let _permit = match permit {
            Ok(p) => p,
            Err(_) => return, // the semaphore is never closed
        };
        self.update(&id, |job| {
            job.detail.summary.state = JobState::Running;
            job.detail.summary.started_at = Some(now_ms());
        });
        self.persist(&id).await;

        let url = self.scheduler_url.get().cloned().unwrap_or_default();
        let info = JobInfo {
            name,
            source: source.as_str().into(),
            job_id: Some(id.clone()),
        };
        let token = self.token.get().cloned().flatten();
        let slots = match self.scheduler.get() {
            Some(scheduler) => Some(crate::cluster::alive_slots(scheduler).await),
            None => None,
        };
        let ctx = match self.factory.remote_context(&url, &info, &conf, token.as_deref(), slots) {
            Ok(ctx) => ctx,
            Err(e) => {
                self.finish(&id, JobState::Failed, Some(e.to_string())).await;
                return;
            }
        };
        let runner = StatementRunner::new(ctx, Arc::clone(self.factory.storage()))
            .with_max_rows(Some(self.options.max_result_rows));

        for statement in &script.statements {
            self.update(&id, |job| {
                job.running_statement = Some(statement.index);
                if let Some(s) = job.detail.statements.get_mut(statement.index - 1) {
                    s.state = JobState::Running;
                    s.started_at = Some(now_ms());
                }
            });
            let outcome = tokio::select! {
                r = runner.run(statement) => Some(r),
                _ = cancel.cancelled() => None,
            };
            match outcome {
                None => {
                    self.cancel_queries(&id).await;
                    self.update(&id, |job| {
                        if let Some(s) = job.detail.statements.get_mut(statement.index - 1) {
                            s.state = JobState::Cancelled;
                            s.finished_at = Some(now_ms());
                        }
                    });
                    self.finish(&id, JobState::Cancelled, Some("cancelled by user".into()))
                        .await;
                    return;
                }
                Some(Ok(out)) => {
                    let mut stored = true;
                    if out.kind == OutputKind::Rows
                        && let Err(e) = self.history.put_result(&id, out.index, &out.schema, &out.batches).await
                    {
                        tracing::warn!(job = %id, "cannot store the result of statement {}: {e}", out.index);
                        stored = false;
                    }
                    let rows = out.row_count() as u64;
                    self.update(&id, |job| {
                        let written = match &out.kind {
                            OutputKind::Written { rows, target } => Some((*rows, target.clone())),
                            _ => None,
                        };
                        if let Some(s) = job.detail.statements.get_mut(out.index - 1) {
                            s.state = JobState::Succeeded;
                            s.finished_at = Some(now_ms());
                            s.summary = Some(out.summary.clone());
                            if out.kind == OutputKind::Rows && stored {
                                s.result_rows = Some(rows);
                                s.result_truncated = out.truncated;
                            }
                            s.output = written.as_ref().map(|(_, t)| t.clone());
                        }
                        if let Some((rows, target)) = written {
                            job.detail.summary.progress.rows_written += rows;
                            if !job.detail.outputs.contains(&target) {
                                job.detail.outputs.push(target);
                            }
                        }
                    });
                }
                Some(Err(failure)) => {
                    let message = failure.to_string();
                    self.update(&id, |job| {
                        if let Some(s) = job.detail.statements.get_mut(failure.index - 1) {
                            s.state = JobState::Failed;
                            s.finished_at = Some(now_ms());
                            s.error = Some(failure.message.clone());
                        }
                    });
                    self.finish(&id, JobState::Failed, Some(message)).await;
                    return;
                }
            }
        }
        self.finish(&id, JobState::Succeeded, None).await;
    }

    /// Opens a client session as a running job.
    pub async fn open_session(&self, request: OpenSession) -> Result<JobSummary, JobError> {
        if !matches!(request.source, JobSource::Shell | JobSource::Dataframe) {
            return Err(JobError::BadRequest(
                "sessions are opened by a shell or a dataframe program".into(),
            ));
        }
        let detail = {
            let mut registry = self.registry.lock();
            let id = Self::new_id(&mut registry);
            let detail = Self::new_detail(id, request.name, request.source, JobState::Running);
            self.insert_active(&mut registry, detail.clone());
            detail
        };
        self.history.put_job(&detail).await?;
        tracing::info!(job = %detail.summary.id, source = %detail.summary.source, "session opened");
        Ok(detail.summary)
    }

    /// Records that a client session is alive.
    pub fn heartbeat(&self, id: &str) -> Result<(), JobError> {
        let mut registry = self.registry.lock();
        if let Some(job) = registry.active.get_mut(id) {
            job.last_heartbeat = Instant::now();
            return Ok(());
        }
        match registry.summaries.get(id) {
            Some(_) => Err(JobError::Conflict(format!("job {id} has already ended"))),
            None => Err(JobError::NotFound(format!("no job {id}"))),
        }
    }

    /// Ends a client session: succeeded, or failed with `error`.
    pub async fn close_session(&self, id: &str, error: Option<String>) -> Result<JobSummary, JobError> {
        {
            let registry = self.registry.lock();
            if !registry.active.contains_key(id) {
                return match registry.summaries.get(id) {
                    Some(s) => Ok(s.clone()),
                    None => Err(JobError::NotFound(format!("no job {id}"))),
                };
            }
        }
        let state = if error.is_some() {
            JobState::Failed
        } else {
            JobState::Succeeded
        };
        self.finish(id, state, error.map(|e| secret::redact(&e).into_owned()))
            .await;
        self.summary(id)
            .ok_or_else(|| JobError::NotFound(format!("no job {id}")))
    }

    /// Cancels a job: its running queries stop and it ends `cancelled`.
    pub async fn cancel(&self, id: &str) -> Result<JobSummary, JobError> {
        let (token, is_script) = {
            let registry = self.registry.lock();
            match registry.active.get(id) {
                Some(job) => (job.cancel.clone(), job.detail.sql.is_some()),
                None => {
                    return match registry.summaries.get(id) {
                        Some(s) => Err(JobError::Conflict(format!("job {id} has already ended ({})", s.state))),
                        None => Err(JobError::NotFound(format!("no job {id}"))),
                    };
                }
            }
        };
        tracing::info!(job = %id, "cancelling job");
        token.cancel();
        if !is_script {
            // Sessions have no runner to notice the token.
            self.cancel_queries(id).await;
            self.finish(id, JobState::Cancelled, Some("cancelled by user".into()))
                .await;
        }
        // A script's runner finishes it; wait briefly so the caller sees the result.
        for _ in 0..50 {
            if self.summary(id).is_some_and(|s| s.state.is_terminal()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.summary(id)
            .ok_or_else(|| JobError::NotFound(format!("no job {id}")))
    }

    async fn cancel_queries(&self, id: &str) {
        let running: Vec<String> = {
            let registry = self.registry.lock();
            registry
                .active
                .get(id)
                .map(|job| {
                    job.detail
                        .queries
                        .iter()
                        .filter(|q| !q.state.is_terminal())
                        .map(|q| q.id.clone())
                        .collect()
                })
                .unwrap_or_default()
        };
        if let Some(scheduler) = self.scheduler.get() {
            for query in running {
                if let Err(e) = scheduler.cancel_job(query.clone().into()).await {
                    tracing::warn!(job = %id, query = %query, "cannot cancel query: {e}");
                }
            }
        }
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut ActiveJob)) {
        let mut registry = self.registry.lock();
        let Registry { active, summaries, .. } = &mut *registry;
        if let Some(job) = active.get_mut(id) {
            f(job);
            refresh_summary(&mut job.detail);
            summaries.insert(id.to_owned(), job.detail.summary.clone());
        }
    }

    async fn persist(&self, id: &str) {
        let detail = self.registry.lock().active.get(id).map(|j| j.detail.clone());
        if let Some(detail) = detail
            && let Err(e) = self.history.put_job(&detail).await
        {
            tracing::warn!(job = %id, "cannot save job record: {e}");
        }
    }

    /// Ends a job and writes its final record.
    async fn finish(&self, id: &str, state: JobState, error: Option<String>) {
        let detail = {
            let mut registry = self.registry.lock();
            let Some(mut job) = registry.active.remove(id) else {
                return;
            };
            finish_detail(&mut job.detail, state, error);
            registry.summaries.insert(id.to_owned(), job.detail.summary.clone());
            let detail = Arc::new(job.detail);
            registry.detail_cache.push_front(Arc::clone(&detail));
            registry.detail_cache.truncate(DETAIL_CACHE);
            detail
        };
        self.metrics.job_finished(state, detail.summary.duration_ms);
        tracing::info!(job = %id, state = %state, duration_ms = detail.summary.duration_ms, "job finished");
        if let Err(e) = self.history.put_job(&detail).await {
            tracing::warn!(job = %id, "cannot save job record: {e}");
        }
        self.prune_history().await;
    }

    /// Removes finished jobs beyond the configured count and age.
    async fn prune_history(&self) {
        let doomed: Vec<String> = {
            let mut registry = self.registry.lock();
            let cutoff = now_ms().saturating_sub(self.options.max_history_age.as_millis() as u64);
            let finished: Vec<(String, u64)> = registry
                .summaries
                .values()
                .filter(|s| s.state.is_terminal())
                .map(|s| (s.id.clone(), s.finished_at.unwrap_or(s.submitted_at)))
                .collect();
            let excess = registry.summaries.len().saturating_sub(self.options.max_history_jobs);
            let mut doomed: Vec<String> = finished
                .iter()
                .filter(|(_, t)| *t < cutoff)
                .map(|(id, _)| id.clone())
                .collect();
            // Oldest first (ids sort by time).
            for (id, _) in finished.iter().take(excess) {
                if !doomed.contains(id) {
                    doomed.push(id.clone());
                }
            }
            for id in &doomed {
                registry.summaries.remove(id);
                registry.detail_cache.retain(|d| &d.summary.id != id);
            }
            doomed
        };
        for id in doomed {
            if let Err(e) = self.history.delete_job(&id).await {
                tracing::warn!(job = %id, "cannot remove job from history: {e}");
            }
        }
    }

    /// The summary of job `id`.
    pub fn summary(&self, id: &str) -> Option<JobSummary> {
        self.registry.lock().summaries.get(id).cloned()
    }

    /// Everything about job `id`.
    pub async fn detail(&self, id: &str) -> Result<JobDetail, JobError> {
        {
            let registry = self.registry.lock();
            if let Some(job) = registry.active.get(id) {
                return Ok(job.detail.clone());
            }
            if let Some(d) = registry.detail_cache.iter().find(|d| d.summary.id == id) {
                return Ok(d.as_ref().clone());
            }
            if !registry.summaries.contains_key(id) {
                return Err(JobError::NotFound(format!("no job {id}")));
            }
        }
        let detail = self
            .history
            .get_job(id)
            .await?
            .ok_or_else(|| JobError::NotFound(format!("no record of job {id} in history")))?;
        let mut registry = self.registry.lock();
        registry.detail_cache.push_front(Arc::new(detail.clone()));
        registry.detail_cache.truncate(DETAIL_CACHE);
        Ok(detail)
    }

    /// A page of jobs, newest first.
    pub fn list(&self, filter: &JobFilter) -> JobList {
        let registry = self.registry.lock();
        let matching: Vec<&JobSummary> = registry
            .summaries
            .values()
            .rev()
            .filter(|s| filter.matches(s))
            .collect();
        let total = matching.len();
        let jobs = matching
            .into_iter()
            .skip(filter.offset)
            .take(filter.limit.clamp(1, 1000))
            .cloned()
            .collect();
        JobList {
            total,
            offset: filter.offset,
            jobs,
        }
    }

    /// Jobs that have not finished, newest first, and the `recent` most
    /// recently submitted finished ones: what the overview page shows,
    /// without walking the whole history.
    pub fn unfinished_and_recent(&self, recent: usize) -> (Vec<JobSummary>, Vec<JobSummary>) {
        let registry = self.registry.lock();
        let mut unfinished: Vec<JobSummary> = registry
            .active
            .keys()
            .filter_map(|id| registry.summaries.get(id))
            .filter(|s| !s.state.is_terminal())
            .cloned()
            .collect();
        unfinished.sort_by(|a, b| b.id.cmp(&a.id));
        let finished = registry
            .summaries
            .values()
            .rev()
            .filter(|s| s.state.is_terminal())
            .take(recent)
            .cloned()
            .collect();
        (unfinished, finished)
    }

    /// Counts of running and queued jobs and of all jobs.
    pub fn counts(&self) -> (usize, usize, usize) {
        let registry = self.registry.lock();
        let running = registry
            .active
            .values()
            .filter(|j| j.detail.summary.state == JobState::Running)
            .count();
        let queued = registry
            .active
            .values()
            .filter(|j| j.detail.summary.state == JobState::Queued)
            .count();
        (running, queued, registry.summaries.len())
    }

    /// The stored rows of statement `statement` (the last query when `None`).
    pub async fn result(
        &self,
        id: &str,
        statement: Option<usize>,
    ) -> Result<(usize, SchemaRef, Vec<RecordBatch>, bool), JobError> {
        let detail = self.detail(id).await?;
        let chosen = match statement {
            Some(n) => detail
                .statements
                .iter()
                .find(|s| s.index == n)
                .ok_or_else(|| JobError::NotFound(format!("job {id} has no statement {n}")))?,
            None => detail
                .statements
                .iter()
                .rev()
                .find(|s| s.result_rows.is_some())
                .ok_or_else(|| JobError::NotFound(format!("job {id} has no query result")))?,
        };
        if chosen.result_rows.is_none() {
            return Err(JobError::NotFound(format!(
                "statement {} of job {id} has no stored result ({})",
                chosen.index,
                if chosen.state.is_terminal() {
                    "it returns no rows"
                } else {
                    "it has not finished"
                }
            )));
        }
        let (schema, batches) = self
            .history
            .get_result(id, chosen.index)
            .await?
            .ok_or_else(|| JobError::NotFound(format!("the result of job {id} is no longer in history")))?;
        Ok((chosen.index, schema, batches, chosen.result_truncated))
    }

    /// A JSON preview of a result: at most `limit` rows.
    pub async fn preview(&self, id: &str, statement: Option<usize>, limit: usize) -> Result<ResultPreview, JobError> {
        let (index, schema, batches, truncated) = self.result(id, statement).await?;
        let total: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let mut rows = Vec::new();
        let mut left = limit;
        for b in &batches {
            if left == 0 {
                break;
            }
            let take = b.num_rows().min(left);
            rows.extend(batch_to_json(&b.slice(0, take)));
            left -= take;
        }
        Ok(ResultPreview {
            job_id: id.to_owned(),
            statement: index,
            columns: schema.fields().iter().map(|f| f.name().clone()).collect(),
            types: schema.fields().iter().map(|f| f.data_type().to_string()).collect(),
            rows,
            total_rows: total as u64,
            truncated,
        })
    }

    async fn poll_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Some(scheduler) = self.scheduler.get() {
                let running = scheduler.state.task_manager.get_running_job_cache();
                for cache in running.values() {
                    let graph = cache.execution_graph.read().await;
                    self.graph_updated(graph.as_ref());
                }
            }
            self.expire_sessions().await;
        }
    }

    fn known_executors(&self, query: &str) -> HashMap<(usize, usize), String> {
        let registry = self.registry.lock();
        registry
            .query_jobs
            .get(query)
            .and_then(|job| registry.active.get(job))
            .and_then(|job| job.task_executors.get(query).cloned())
            .unwrap_or_default()
    }

    async fn expire_sessions(&self) {
        let expired: Vec<String> = {
            let registry = self.registry.lock();
            registry
                .active
                .iter()
                .filter(|(_, j)| {
                    matches!(j.detail.summary.source, JobSource::Shell | JobSource::Dataframe)
                        && j.last_heartbeat.elapsed() > self.options.session_timeout
                })
                .map(|(id, _)| id.clone())
                .collect()
        };
        for id in expired {
            tracing::warn!(job = %id, "client session stopped sending heartbeats; ending it");
            self.finish(
                &id,
                JobState::Failed,
                Some(format!(
                    "the client stopped sending heartbeats for {}s (it exited or lost its connection)",
                    self.options.session_timeout.as_secs()
                )),
            )
            .await;
        }
    }

    /// Task counts per executor: (running now, finished and failed since the
    /// scheduler started).
    pub fn executor_task_counts(&self) -> HashMap<String, (u64, u64, u64)> {
        let registry = self.registry.lock();
        let mut counts: HashMap<String, (u64, u64, u64)> = registry
            .executor_totals
            .iter()
            .map(|(e, (ok, failed))| (e.clone(), (0, *ok, *failed)))
            .collect();
        for job in registry.active.values() {
            for q in job.detail.queries.iter().filter(|q| !q.state.is_terminal()) {
                for t in q.stages.iter().flat_map(|s| s.tasks.iter()) {
                    if let Some(e) = &t.executor_id {
                        let c = counts.entry(e.clone()).or_default();
                        match t.state.as_str() {
                            "running" => c.0 += 1,
                            "succeeded" => c.1 += 1,
                            "failed" => c.2 += 1,
                            _ => {}
                        }
                    }
                }
            }
        }
        counts
    }

    /// Tasks running now, over all jobs.
    pub fn running_tasks(&self) -> u64 {
        let registry = self.registry.lock();
        registry
            .active
            .values()
            .map(|j| j.detail.summary.progress.tasks_running)
            .sum()
    }
}

impl QueryObserver for JobService {
    fn graph_updated(&self, graph: &dyn ExecutionGraph) {
        let executors = self.known_executors(graph.job_id().as_ref());
        let (owner, query) = self.renderer.observe(graph, &executors);
        self.query_updated(owner, query);
    }

    fn query_failed_early(&self, query_id: &str, reason: &str) {
        let mut registry = self.registry.lock();
        let Some(job_id) = registry.query_jobs.get(query_id).cloned() else {
            return;
        };
        if let Some(job) = registry.active.get_mut(&job_id)
            && let Some(q) = job.detail.queries.iter_mut().find(|q| q.id == query_id)
        {
            q.state = JobState::Failed;
            q.error = Some(secret::redact(reason).into_owned());
            q.finished_at = Some(now_ms());
        }
    }
}

impl JobService {
    /// Records a query's new state in the job it belongs to.
    fn query_updated(&self, owner: QueryOwner, mut query: QueryInfo) {
        let mut registry = self.registry.lock();
        let job_id = match registry.query_jobs.get(&query.id) {
            Some(id) => id.clone(),
            None => {
                let id = match &owner.job_id {
                    Some(id) if registry.summaries.contains_key(id) => id.clone(),
                    _ => match registry.session_jobs.get(&owner.session_id) {
                        Some(id) => id.clone(),
                        None => {
                            // A client that did not open a job: group its
                            // queries by session.
                            let id = Self::new_id(&mut registry);
                            let source = owner
                                .source
                                .as_deref()
                                .and_then(|s| s.parse().ok())
                                .unwrap_or(JobSource::Client);
                            let name = if owner.name.is_empty() {
                                "ballista-client".into()
                            } else {
                                owner.name.clone()
                            };
                            let detail = Self::new_detail(id.clone(), name, source, JobState::Running);
                            self.insert_active(&mut registry, detail);
                            registry.session_jobs.insert(owner.session_id.clone(), id.clone());
                            id
                        }
                    },
                };
                registry.query_jobs.insert(query.id.clone(), id.clone());
                id
            }
        };
        let Registry {
            active,
            summaries,
            executor_totals,
            ..
        } = &mut *registry;
        let Some(job) = active.get_mut(&job_id) else {
            return; // The job already ended; late updates are dropped.
        };
        let was_terminal = job
            .detail
            .queries
            .iter()
            .any(|q| q.id == query.id && q.state.is_terminal());
        if query.state.is_terminal() && !was_terminal {
            for task in query.stages.iter().flat_map(|s| s.tasks.iter()) {
                if let Some(e) = &task.executor_id {
                    let t = executor_totals.entry(e.clone()).or_default();
                    match task.state.as_str() {
                        "succeeded" => t.0 += 1,
                        "failed" => t.1 += 1,
                        _ => {}
                    }
                }
            }
        }
        // Remember where tasks ran, for the failed ones whose status forgets.
        let executors = job.task_executors.entry(query.id.clone()).or_default();
        for stage in &query.stages {
            for task in &stage.tasks {
                if let Some(e) = &task.executor_id {
                    executors.insert((stage.id, task.id), e.clone());
                }
            }
        }
        match job.detail.queries.iter_mut().find(|q| q.id == query.id) {
            // A poll that read the graph before it finished must not undo
            // the final report.
            Some(existing) if existing.state.is_terminal() && !query.state.is_terminal() => {}
            Some(existing) => {
                query.statement = existing.statement;
                *existing = query;
            }
            None => {
                query.statement = job.running_statement;
                job.detail.queries.push(query);
            }
        }
        refresh_summary(&mut job.detail);
        summaries.insert(job_id.clone(), job.detail.summary.clone());
        if job.cancel.is_cancelled()
            && let Some(scheduler) = self.scheduler.get()
        {
            // A query that started after its job was cancelled.
            let running: Vec<String> = job
                .detail
                .queries
                .iter()
                .filter(|q| !q.state.is_terminal())
                .map(|q| q.id.clone())
                .collect();
            let scheduler = scheduler.clone();
            tokio::spawn(async move {
                for q in running {
                    let _ = scheduler.cancel_job(q.into()).await;
                }
            });
        }
    }
}

/// Recomputes a job's summary from its queries and statements.
fn refresh_summary(detail: &mut JobDetail) {
    let mut progress = Progress::default();
    for q in &detail.queries {
        progress.add(&q.progress);
    }
    progress.rows_written = detail.summary.progress.rows_written;
    detail.summary.progress = progress;
    detail.summary.query_count = detail.queries.len() as u64;
    detail.summary.duration_ms = detail
        .summary
        .started_at
        .map(|s| detail.summary.finished_at.unwrap_or_else(now_ms).saturating_sub(s));
}

fn finish_detail(detail: &mut JobDetail, state: JobState, error: Option<String>) {
    let now = now_ms();
    detail.summary.state = state;
    detail.summary.error = error;
    detail.summary.finished_at = Some(now);
    for s in &mut detail.statements {
        if !s.state.is_terminal() && s.state != JobState::Queued {
            s.state = state;
            s.finished_at = Some(now);
        }
    }
    for q in &mut detail.queries {
        if !q.state.is_terminal() {
            q.state = if state == JobState::Succeeded {
                JobState::Succeeded
            } else {
                state
            };
            q.finished_at = Some(now);
        }
    }
    refresh_summary(detail);
}

/// Which jobs a listing shows.
#[derive(Debug, Clone)]
pub struct JobFilter {
    /// Only jobs in this state.
    pub state: Option<JobState>,
    /// Only jobs from this source.
    pub source: Option<JobSource>,
    /// Only jobs whose name or id contains this (case-insensitive).
    pub search: Option<String>,
    /// Only jobs submitted at or after this time (ms).
    pub since: Option<u64>,
    /// Only jobs submitted before this time (ms).
    pub until: Option<u64>,
    /// Page offset.
    pub offset: usize,
    /// Page size (1 to 1000).
    pub limit: usize,
}

impl Default for JobFilter {
    fn default() -> Self {
        Self {
            state: None,
            source: None,
            search: None,
            since: None,
            until: None,
            offset: 0,
            limit: 50,
        }
    }
}

impl JobFilter {
    fn matches(&self, s: &JobSummary) -> bool {
        self.state.is_none_or(|st| s.state == st)
            && self.source.is_none_or(|src| s.source == src)
            && self.since.is_none_or(|t| s.submitted_at >= t)
            && self.until.is_none_or(|t| s.submitted_at < t)
            && self.search.as_ref().is_none_or(|q| {
                let q = q.to_lowercase();
                s.name.to_lowercase().contains(&q) || s.id.to_lowercase().contains(&q)
            })
    }
}

/// Rows of a batch as JSON objects.
pub(crate) fn batch_to_json(batch: &RecordBatch) -> Vec<serde_json::Map<String, serde_json::Value>> {
    let mut buf = Vec::new();
    {
        let mut writer = arrow::json::ArrayWriter::new(&mut buf);
        if writer.write(batch).is_err() || writer.finish().is_err() {
            return vec![];
        }
    }
    if buf.is_empty() {
        return vec![];
    }
    serde_json::from_slice(&buf).unwrap_or_default()
}
