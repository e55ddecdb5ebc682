//! The job service: runs submitted scripts, tracks every job's queries, stages
//! and tasks, and keeps the history.
//!
//! Jobs come from three places:
//!
//! * scripts submitted over REST (`quiver submit`, orchestrators): the
//!   scheduler runs them itself, statement by statement, as a client of its own
//!   cluster ([`scripts`]);
//! * client sessions (`quiver sql`, DataFrame programs): the client opens a job,
//!   sends queries tagged with its id, sends heartbeats, and closes it
//!   ([`sessions`]);
//! * any other Ballista client: its queries are grouped by session into a job
//!   of source `client` ([`progress`]).
//!
//! Ballista reports queries through [`QueryObserver`]; a poller adds live
//! progress of running queries ([`progress`]). The [`registry`] holds every
//! record and the rules of their states; records go to the [`HistoryStore`]
//! when a job changes state, and finished jobs beyond the retention limits are
//! removed ([`retention`]); stored results are read back by [`results`]. A
//! query that can no longer finish is failed by the [`watchdog`].
//!
//! [`QueryObserver`]: crate::observe::QueryObserver

mod progress;
mod registry;
mod results;
mod retention;
mod scripts;
mod sessions;
mod watchdog;

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ballista_scheduler::cluster::JobState as BallistaJobState;
use parking_lot::Mutex;
use quiver_core::api::{JobDetail, JobList, JobState, JobSummary};
use quiver_core::cluster_secret::ClusterSecret;
use quiver_core::session::SessionFactory;
use tokio::sync::Semaphore;

pub use registry::JobFilter;
pub use results::StoredResult;
pub use sessions::StatementEnd;

use crate::SchedulerServer;
use crate::history::{HistoryError, HistoryStore};
use crate::metrics::SchedulerMetrics;
use crate::observe::QueryRenderer;
use registry::{ActiveJob, Registry, finish_detail};
use watchdog::StallWatch;

/// Limits and timeouts of the job service.
#[derive(Debug, Clone)]
pub struct JobServiceOptions {
    /// Scripts running at once; more wait as `queued`.
    pub max_running_jobs: usize,
    /// Scripts waiting for a slot at most; more are refused as busy.
    pub max_queued_jobs: usize,
    /// Rows kept of each query result of a script job.
    pub max_result_rows: usize,
    /// Bytes (in memory) kept of all the query results of one script job.
    pub max_result_bytes: usize,
    /// A client session with no heartbeat for this long is ended as failed.
    pub session_timeout: Duration,
    /// Jobs kept in history (oldest finished jobs are removed first).
    pub max_history_jobs: usize,
    /// Finished jobs older than this are removed from history.
    pub max_history_age: Duration,
    /// The longest a script job may run (from its start); `None`: no limit
    /// beyond the one a request asks for.
    pub job_timeout: Option<Duration>,
}

impl JobServiceOptions {
    /// The limits a scheduler starts with unless told otherwise (the CLI's
    /// defaults are these).
    pub const DEFAULT: Self = Self {
        max_running_jobs: 4,
        max_queued_jobs: 200,
        max_result_rows: 100_000,
        max_result_bytes: 256 * 1024 * 1024,
        session_timeout: Duration::from_secs(60),
        max_history_jobs: 1000,
        max_history_age: Duration::from_secs(30 * 24 * 3600),
        job_timeout: None,
    };

    /// How long a job that asked for `requested` may run: the shorter of that
    /// and the scheduler's limit.
    ///
    /// ```
    /// use std::time::Duration;
    /// use quiver_scheduler::jobs::JobServiceOptions;
    /// let options = JobServiceOptions { job_timeout: Some(Duration::from_secs(60)), ..JobServiceOptions::DEFAULT };
    /// assert_eq!(options.timeout_for(Some(600)), Some(Duration::from_secs(60)));
    /// assert_eq!(options.timeout_for(Some(5)), Some(Duration::from_secs(5)));
    /// assert_eq!(JobServiceOptions::DEFAULT.timeout_for(None), None);
    /// ```
    pub fn timeout_for(&self, requested: Option<u64>) -> Option<Duration> {
        let requested = requested.map(Duration::from_secs);
        match (requested, self.job_timeout) {
            (Some(r), Some(limit)) => Some(r.min(limit)),
            (r, limit) => r.or(limit),
        }
    }
}

impl Default for JobServiceOptions {
    fn default() -> Self {
        Self::DEFAULT
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
    /// The service cannot take more work now; the message says what to do.
    #[error("{0}")]
    Busy(String),
    /// History could not be read or written.
    #[error(transparent)]
    History(#[from] HistoryError),
}

/// The job service; see the [module docs](self).
pub struct JobService {
    registry: Mutex<Registry>,
    history: HistoryStore,
    factory: SessionFactory,
    options: JobServiceOptions,
    slots: Arc<Semaphore>,
    scheduler: OnceLock<SchedulerServer>,
    job_state: OnceLock<Arc<dyn BallistaJobState>>,
    scheduler_url: OnceLock<String>,
    token: OnceLock<Option<String>>,
    /// What the per-job result fetch proofs derive from.
    tickets: OnceLock<ClusterSecret>,
    metrics: SchedulerMetrics,
    renderer: QueryRenderer,
    stalls: Mutex<StallWatch>,
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
            registry: Mutex::new(Registry::with_history(summaries)),
            slots: Arc::new(Semaphore::new(options.max_running_jobs.max(1))),
            history,
            factory,
            options,
            scheduler: OnceLock::new(),
            job_state: OnceLock::new(),
            scheduler_url: OnceLock::new(),
            token: OnceLock::new(),
            tickets: OnceLock::new(),
            metrics,
            renderer: QueryRenderer::default(),
            stalls: Mutex::default(),
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
    /// scripts (at `url`, with `token`) and to cancel and observe queries, and
    /// to the job state Ballista keeps, through which the watchdog tells a
    /// client its query failed. Each job's result fetch proof derives from
    /// `tickets` ([`ClusterSecret::job_fetch_proof`]).
    pub fn attach(
        self: &Arc<Self>,
        scheduler: SchedulerServer,
        job_state: Arc<dyn BallistaJobState>,
        url: String,
        token: Option<String>,
        tickets: ClusterSecret,
    ) {
        let _ = self.scheduler.set(scheduler);
        let _ = self.job_state.set(job_state);
        let _ = self.scheduler_url.set(url);
        let _ = self.token.set(token);
        let _ = self.tickets.set(tickets);
        let service = Arc::clone(self);
        tokio::spawn(async move { service.poll_loop().await });
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

    /// Asks Ballista to stop every query of `id` that has not ended.
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

    /// Changes an active job's record.
    fn update(&self, id: &str, change: impl FnOnce(&mut ActiveJob)) {
        self.registry.lock().update(id, change);
    }

    /// Writes an active job's record to history.
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
        let Some(detail) = self.registry.lock().finish(id, state, error) else {
            return;
        };
        self.metrics.job_finished(state, detail.summary.duration_ms);
        tracing::info!(job = %id, state = %state, duration_ms = detail.summary.duration_ms, "job finished");
        if let Err(e) = self.history.put_job(&detail).await {
            tracing::warn!(job = %id, "cannot save job record: {e}");
        }
        self.prune_history().await;
    }

    /// True when `host:port` is the Flight address of an alive executor of
    /// this cluster (where the result proxy may connect).
    pub async fn is_executor_flight_address(&self, host: &str, port: u32) -> bool {
        let Some(scheduler) = self.scheduler.get() else {
            return false;
        };
        crate::cluster::alive_executors(scheduler)
            .await
            .iter()
            .any(|e| e.host == host && u32::from(e.port) == port)
    }

    /// The proof that opens job `id`'s results through the Flight proxy;
    /// `None` before the service is attached.
    pub fn fetch_proof(&self, id: &str) -> Option<String> {
        self.tickets.get().map(|t| t.job_fetch_proof(id))
    }

    /// True when a fetch of query `query`'s results (a Ballista job id) with
    /// this user agent may proceed: it carries the fetch proof of the job
    /// the query belongs to.
    pub fn admits_fetch_of(&self, query: &str, user_agent: &str) -> bool {
        let job = self.registry.lock().query_jobs.get(query).cloned();
        match (job, self.tickets.get()) {
            (Some(job), Some(tickets)) => tickets.accepts_job_fetch(&job, user_agent),
            _ => false,
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
            if let Some(detail) = registry.cached_detail(id) {
                return Ok(detail);
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
        self.registry.lock().remember(Arc::new(detail.clone()));
        Ok(detail)
    }

    /// A page of jobs, newest first.
    pub fn list(&self, filter: &JobFilter) -> JobList {
        self.registry.lock().list(filter)
    }

    /// Jobs that have not finished, newest first, and the `recent` most
    /// recently submitted finished ones: what the overview page shows,
    /// without walking the whole history.
    pub fn unfinished_and_recent(&self, recent: usize) -> (Vec<JobSummary>, Vec<JobSummary>) {
        self.registry.lock().unfinished_and_recent(recent)
    }

    /// Counts of running and queued jobs and of all jobs.
    pub fn counts(&self) -> (usize, usize, usize) {
        self.registry.lock().counts()
    }
}
