//! Queries as Ballista reports them: each graph change (and a poll of the
//! running ones, for live task progress) is rendered and filed under its job.

use std::collections::HashMap;
use std::time::Duration;

use ballista_scheduler::state::execution_graph::ExecutionGraph;
use quiver_core::api::{JobSource, JobState, QueryInfo, TaskState};
use quiver_core::secret;

use super::JobService;
use super::registry::{Registry, new_detail, refresh_summary};
use crate::clock::now_ms;
use crate::observe::{QueryObserver, QueryOwner};

/// How often running queries are read for live progress.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

impl JobService {
    /// Polls running graphs for progress and ends silent sessions, forever.
    pub(super) async fn poll_loop(self: std::sync::Arc<Self>) {
        let mut tick = tokio::time::interval(POLL_INTERVAL);
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
            self.fail_stalled_queries().await;
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

    /// Task counts per executor: (running now, finished and failed since the
    /// scheduler started).
    pub fn executor_task_counts(&self) -> HashMap<String, (u64, u64, u64)> {
        self.registry.lock().executor_task_counts()
    }

    /// Tasks running now, over all jobs.
    pub fn running_tasks(&self) -> u64 {
        self.registry.lock().running_tasks()
    }

    /// The job a query belongs to: the one its session registered, else the
    /// job of its client session, else a new `client` job for that session.
    fn owning_job(&self, registry: &mut Registry, owner: &QueryOwner, query: &str) -> String {
        if let Some(id) = registry.query_jobs.get(query) {
            return id.clone();
        }
        let id = match &owner.job_id {
            Some(id) if registry.summaries.contains_key(id) => id.clone(),
            _ => match registry.session_jobs.get(&owner.session_id) {
                Some(id) => id.clone(),
                None => {
                    // A client that did not open a job: group its queries by session.
                    let id = registry.new_id();
                    let name = if owner.name.is_empty() {
                        "ballista-client".into()
                    } else {
                        owner.name.clone()
                    };
                    let source = owner.source.unwrap_or(JobSource::Client);
                    registry.insert_active(new_detail(id.clone(), name, source, JobState::Running));
                    self.metrics.job_submitted();
                    registry.session_jobs.insert(owner.session_id.clone(), id.clone());
                    id
                }
            },
        };
        registry.query_jobs.insert(query.to_owned(), id.clone());
        id
    }

    /// Records a query's new state in the job it belongs to.
    fn query_updated(&self, owner: QueryOwner, mut query: QueryInfo) {
        let mut registry = self.registry.lock();
        let job_id = self.owning_job(&mut registry, &owner, &query.id);
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
                    match task.state {
                        TaskState::Succeeded => t.0 += 1,
                        TaskState::Failed => t.1 += 1,
                        TaskState::Running => {}
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
            // A query the watchdog failed is then cancelled to release it;
            // it stays failed, with the watchdog's reason.
            Some(existing) if existing.state == JobState::Failed && query.state.is_terminal() => {}
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
