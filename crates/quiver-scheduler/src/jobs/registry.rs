//! The registry: every job the service knows, and the rules of their states.
//!
//! Plain data behind the service's one lock: summaries of every job in
//! history, full records of the jobs that have not ended, which query
//! belongs to which job, and the pure functions that move a record from one
//! state to the next. Nothing here waits, logs or talks to Ballista, so the
//! state rules are unit-tested on their own.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use quiver_core::api::{JobDetail, JobList, JobSource, JobState, JobSummary, Progress, TaskState};
use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;

/// Finished jobs' details kept in memory after they were last read.
const DETAIL_CACHE: usize = 32;

/// A job that has not ended: its full record and what controls it.
pub(super) struct ActiveJob {
    pub(super) detail: JobDetail,
    pub(super) cancel: CancellationToken,
    pub(super) last_heartbeat: Instant,
    /// Executor of each task seen running, by (query, stage, task).
    pub(super) task_executors: HashMap<String, HashMap<(usize, usize), String>>,
    pub(super) running_statement: Option<usize>,
    /// Statements one of whose queries the watchdog failed as stalled.
    pub(super) stalled_statements: HashSet<usize>,
}

/// What the job service knows; see the [module docs](self).
#[derive(Default)]
pub(super) struct Registry {
    /// Every job in history, by id (ids sort by submission time).
    pub(super) summaries: BTreeMap<String, JobSummary>,
    pub(super) active: HashMap<String, ActiveJob>,
    /// Query id → job id.
    pub(super) query_jobs: HashMap<String, String>,
    /// Session id → job id, for queries that carry no job id.
    pub(super) session_jobs: HashMap<String, String>,
    /// Recently read details of finished jobs.
    detail_cache: VecDeque<Arc<JobDetail>>,
    /// Finished and failed task attempts per executor since the scheduler started.
    pub(super) executor_totals: HashMap<String, (u64, u64)>,
    /// Job ids issued this second, for unique ids.
    last_id_second: u64,
    id_counter: u32,
}

impl Registry {
    /// A registry holding the summaries loaded from history.
    pub(super) fn with_history(summaries: BTreeMap<String, JobSummary>) -> Self {
        Self {
            summaries,
            ..Self::default()
        }
    }

    /// A new job id: `job-YYYYMMDD-HHMMSS-NNNN`, unique in this registry.
    pub(super) fn new_id(&mut self) -> String {
        let now = chrono::Utc::now();
        let second = now.timestamp() as u64;
        if self.last_id_second != second {
            self.last_id_second = second;
            self.id_counter = 0;
        }
        loop {
            self.id_counter += 1;
            let id = format!("job-{}-{:04}", now.format("%Y%m%d-%H%M%S"), self.id_counter);
            if !self.summaries.contains_key(&id) {
                return id;
            }
        }
    }

    /// Records a job that has not ended, and returns its cancel token.
    pub(super) fn insert_active(&mut self, detail: JobDetail) -> CancellationToken {
        let cancel = CancellationToken::new();
        self.summaries.insert(detail.summary.id.clone(), detail.summary.clone());
        self.active.insert(
            detail.summary.id.clone(),
            ActiveJob {
                detail,
                cancel: cancel.clone(),
                last_heartbeat: Instant::now(),
                task_executors: HashMap::new(),
                running_statement: None,
                stalled_statements: HashSet::new(),
            },
        );
        cancel
    }

    /// Notes that the watchdog failed `query` as stalled, against the
    /// statement of its job that ran it.
    pub(super) fn mark_stalled(&mut self, query: &str) {
        let Some(job) = self.query_jobs.get(query).and_then(|id| self.active.get_mut(id)) else {
            return;
        };
        let statement = job
            .detail
            .queries
            .iter()
            .find(|q| q.id == query)
            .and_then(|q| q.statement)
            .or(job.running_statement);
        if let Some(statement) = statement {
            job.stalled_statements.insert(statement);
        }
    }

    /// Changes an active job with `change` and refreshes its summary; false
    /// when the job is not active (it ended, or never was).
    pub(super) fn update(&mut self, id: &str, change: impl FnOnce(&mut ActiveJob)) -> bool {
        let Some(job) = self.active.get_mut(id) else {
            return false;
        };
        change(job);
        refresh_summary(&mut job.detail);
        self.summaries.insert(id.to_owned(), job.detail.summary.clone());
        true
    }

    /// Ends an active job in `state`; its final record, or `None` when it
    /// was not active (a job ends once).
    pub(super) fn finish(&mut self, id: &str, state: JobState, error: Option<String>) -> Option<Arc<JobDetail>> {
        let mut job = self.active.remove(id)?;
        finish_detail(&mut job.detail, state, error);
        self.summaries.insert(id.to_owned(), job.detail.summary.clone());
        let detail = Arc::new(job.detail);
        self.remember(Arc::clone(&detail));
        Some(detail)
    }

    /// Keeps a finished job's record at hand for the next reads.
    pub(super) fn remember(&mut self, detail: Arc<JobDetail>) {
        self.detail_cache.retain(|d| d.summary.id != detail.summary.id);
        self.detail_cache.push_front(detail);
        self.detail_cache.truncate(DETAIL_CACHE);
    }

    /// The full record of `id` if it is in memory.
    pub(super) fn cached_detail(&self, id: &str) -> Option<JobDetail> {
        if let Some(job) = self.active.get(id) {
            return Some(job.detail.clone());
        }
        self.detail_cache
            .iter()
            .find(|d| d.summary.id == id)
            .map(|d| d.as_ref().clone())
    }

    /// Finished jobs past `max_jobs` in all or finished before `cutoff_ms`,
    /// oldest first; they are dropped from the registry.
    pub(super) fn take_expired(&mut self, max_jobs: usize, cutoff_ms: u64) -> Vec<String> {
        let finished: Vec<(String, u64)> = self
            .summaries
            .values()
            .filter(|s| s.state.is_terminal())
            .map(|s| (s.id.clone(), s.finished_at.unwrap_or(s.submitted_at)))
            .collect();
        let excess = self.summaries.len().saturating_sub(max_jobs);
        let mut doomed: Vec<String> = finished
            .iter()
            .filter(|(_, t)| *t < cutoff_ms)
            .map(|(id, _)| id.clone())
            .collect();
        // Oldest first (ids sort by time).
        for (id, _) in finished.iter().take(excess) {
            if !doomed.contains(id) {
                doomed.push(id.clone());
            }
        }
        for id in &doomed {
            self.summaries.remove(id);
            self.detail_cache.retain(|d| &d.summary.id != id);
        }
        doomed
    }

    /// A page of jobs, newest first.
    pub(super) fn list(&self, filter: &JobFilter) -> JobList {
        let matching: Vec<&JobSummary> = self.summaries.values().rev().filter(|s| filter.matches(s)).collect();
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

    /// Jobs that have not ended, newest first, and the `recent` newest
    /// finished ones.
    pub(super) fn unfinished_and_recent(&self, recent: usize) -> (Vec<JobSummary>, Vec<JobSummary>) {
        let mut unfinished: Vec<JobSummary> = self
            .active
            .keys()
            .filter_map(|id| self.summaries.get(id))
            .filter(|s| !s.state.is_terminal())
            .cloned()
            .collect();
        unfinished.sort_by(|a, b| b.id.cmp(&a.id));
        let finished = self
            .summaries
            .values()
            .rev()
            .filter(|s| s.state.is_terminal())
            .take(recent)
            .cloned()
            .collect();
        (unfinished, finished)
    }

    /// Running and queued jobs, and all jobs.
    pub(super) fn counts(&self) -> (usize, usize, usize) {
        let in_state = |state| self.active.values().filter(|j| j.detail.summary.state == state).count();
        (
            in_state(JobState::Running),
            in_state(JobState::Queued),
            self.summaries.len(),
        )
    }

    /// Task counts per executor: (running now, finished and failed since the
    /// scheduler started).
    pub(super) fn executor_task_counts(&self) -> HashMap<String, (u64, u64, u64)> {
        let mut counts: HashMap<String, (u64, u64, u64)> = self
            .executor_totals
            .iter()
            .map(|(e, (ok, failed))| (e.clone(), (0, *ok, *failed)))
            .collect();
        for job in self.active.values() {
            for q in job.detail.queries.iter().filter(|q| !q.state.is_terminal()) {
                for t in q.stages.iter().flat_map(|s| s.tasks.iter()) {
                    if let Some(e) = &t.executor_id {
                        let c = counts.entry(e.clone()).or_default();
                        match t.state {
                            TaskState::Running => c.0 += 1,
                            TaskState::Succeeded => c.1 += 1,
                            TaskState::Failed => c.2 += 1,
                        }
                    }
                }
            }
        }
        counts
    }

    /// Tasks running now, over all jobs.
    pub(super) fn running_tasks(&self) -> u64 {
        self.active
            .values()
            .map(|j| j.detail.summary.progress.tasks_running)
            .sum()
    }
}

/// A new job record in `state`, submitted now.
pub(super) fn new_detail(id: String, name: String, source: JobSource, state: JobState) -> JobDetail {
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

/// Recomputes a job's summary from its queries and statements.
pub(super) fn refresh_summary(detail: &mut JobDetail) {
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

/// Ends a record in `state`: statements and queries still running end with
/// it; statements that never started stay queued.
pub(super) fn finish_detail(detail: &mut JobDetail, state: JobState, error: Option<String>) {
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
            q.state = state;
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

impl JobFilter {
    /// Jobs on a page unless the request says otherwise.
    pub const DEFAULT_LIMIT: usize = 50;

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

impl Default for JobFilter {
    fn default() -> Self {
        Self {
            state: None,
            source: None,
            search: None,
            since: None,
            until: None,
            offset: 0,
            limit: Self::DEFAULT_LIMIT,
        }
    }
}

#[cfg(test)]
mod tests {
    use quiver_core::api::{QueryInfo, StatementInfo};

    use super::*;

    fn query(id: &str, state: JobState) -> QueryInfo {
        QueryInfo {
            id: id.into(),
            statement: Some(1),
            state,
            queued_at: None,
            started_at: None,
            finished_at: None,
            error: None,
            stages: vec![],
            progress: Progress::default(),
            logical_plan: None,
        }
    }

    fn script(registry: &mut Registry, name: &str) -> String {
        let id = registry.new_id();
        let mut detail = new_detail(id.clone(), name.into(), JobSource::Rest, JobState::Queued);
        detail.statements = (1..=2)
            .map(|i| StatementInfo::queued(i, i, format!("SELECT {i}")))
            .collect();
        registry.insert_active(detail);
        id
    }

    #[test]
    fn a_stalled_query_is_noted_against_its_statement() {
        let mut registry = Registry::default();
        let id = script(&mut registry, "stalls");
        registry.query_jobs.insert("q1".into(), id.clone());
        registry.update(&id, |job| {
            job.running_statement = Some(2);
            job.detail.queries.push(query("q1", JobState::Running));
        });
        registry.mark_stalled("q1");
        registry.mark_stalled("unknown-query");
        let job = &registry.active[&id];
        // The query's own statement, not the one running now.
        assert_eq!(job.stalled_statements, HashSet::from([1]));
    }

    #[test]
    fn ids_are_unique_within_a_second_and_sort_by_submission() {
        let mut registry = Registry::default();
        let ids: Vec<String> = (0..5).map(|i| script(&mut registry, &format!("j{i}"))).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, ids);
    }

    #[test]
    fn a_job_ends_once_and_takes_its_running_parts_with_it() {
        let mut registry = Registry::default();
        let id = script(&mut registry, "daily");
        assert!(registry.update(&id, |job| {
            job.detail.summary.state = JobState::Running;
            job.detail.summary.started_at = Some(now_ms());
            job.detail.statements[0].state = JobState::Running;
            job.detail.queries.push(query("q1", JobState::Running));
        }));
        assert_eq!(registry.counts(), (1, 0, 1));

        let detail = registry
            .finish(&id, JobState::Cancelled, Some("cancelled by user".into()))
            .expect("an active job ends");
        assert_eq!(detail.summary.state, JobState::Cancelled);
        assert_eq!(
            detail.statements[0].state,
            JobState::Cancelled,
            "the running statement ends"
        );
        assert_eq!(
            detail.statements[1].state,
            JobState::Queued,
            "one that never ran stays queued"
        );
        assert_eq!(detail.queries[0].state, JobState::Cancelled);
        assert!(detail.summary.finished_at.is_some() && detail.summary.duration_ms.is_some());

        assert!(registry.finish(&id, JobState::Succeeded, None).is_none(), "ended once");
        assert!(!registry.update(&id, |job| job.detail.summary.state = JobState::Running));
        assert_eq!(registry.summaries[&id].state, JobState::Cancelled);
        assert_eq!(registry.counts(), (0, 0, 1));
        assert_eq!(registry.cached_detail(&id).unwrap().summary.state, JobState::Cancelled);
    }

    #[test]
    fn a_succeeded_job_keeps_finished_queries_as_they_were() {
        let mut detail = new_detail("j".into(), "n".into(), JobSource::Shell, JobState::Running);
        detail.queries = vec![query("a", JobState::Failed), query("b", JobState::Running)];
        finish_detail(&mut detail, JobState::Succeeded, None);
        assert_eq!(detail.queries[0].state, JobState::Failed);
        assert_eq!(detail.queries[1].state, JobState::Succeeded);
        assert_eq!(detail.summary.query_count, 2);
    }

    #[test]
    fn filters_and_pages_list_newest_first() {
        let mut registry = Registry::default();
        let a = script(&mut registry, "daily-orders");
        let b = script(&mut registry, "hourly");
        registry.finish(&a, JobState::Failed, Some("boom".into()));
        let all = registry.list(&JobFilter::default());
        assert_eq!(all.total, 2);
        assert_eq!(all.jobs[0].id, b, "newest first");
        let failed = registry.list(&JobFilter {
            state: Some(JobState::Failed),
            ..JobFilter::default()
        });
        assert_eq!(failed.jobs.iter().map(|j| &j.id).collect::<Vec<_>>(), [&a]);
        let search = registry.list(&JobFilter {
            search: Some("ORDERS".into()),
            ..JobFilter::default()
        });
        assert_eq!(search.total, 1);
        let page = registry.list(&JobFilter {
            offset: 1,
            limit: 1,
            ..JobFilter::default()
        });
        assert_eq!((page.total, page.jobs.len(), page.jobs[0].id.clone()), (2, 1, a));
    }

    #[test]
    fn only_finished_jobs_expire_oldest_first() {
        let mut registry = Registry::default();
        let ids: Vec<String> = (0..4).map(|i| script(&mut registry, &format!("j{i}"))).collect();
        for id in &ids[..3] {
            registry.finish(id, JobState::Succeeded, None);
        }
        // Four jobs, room for two: the two oldest finished ones go.
        assert_eq!(registry.take_expired(2, 0), ids[..2]);
        // Everything finished before the cutoff goes; the running job stays.
        assert_eq!(registry.take_expired(100, now_ms() + 1), ids[2..3]);
        assert_eq!(registry.summaries.keys().collect::<Vec<_>>(), [&ids[3]]);
    }
}
