//! Queries that can no longer finish, failed with a reason instead of hanging.
//!
//! After an executor is lost, Ballista re-runs the map stages whose shuffle
//! output it held. Its adaptive planner can then refuse the re-run tasks'
//! reports ("Can't find active stage to update stage outputs"), which leaves
//! the query running with nothing running and nothing Ballista will start:
//! it would wait forever. The same happens whenever Ballista refuses a
//! task's report for another reason (it logs "Failed to update ... task
//! statuses"): the task's partition is never counted as done. A running
//! query without a running task, in a cluster that has executors and runs
//! no task at all, for [`STALL_AFTER`]
//! is stalled: the watchdog gives the executors back the task slots Ballista
//! lost count of, fails the query with a reason every client sees, and the
//! script runner re-runs a read-only statement whose query was failed this
//! way ([`scripts`](super::scripts)).
//!
//! Ballista's adaptive planner can also re-plan a query in a loop without
//! end (a mark join over two empty inputs made 10,000 stages in half an
//! hour, holding the cluster's task slots). A query with more than
//! [`MAX_STAGES`] stages is such a runaway and is failed too, without a
//! re-run.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ballista_core::JobId;
use ballista_core::serde::protobuf::job_status;
use ballista_core::serde::scheduler::ExecutorData;
use ballista_scheduler::state::execution_graph::{ExecutionGraph, ExecutionGraphBox};

use super::JobService;
use crate::SchedulerServer;
use crate::observe::QueryObserver;

/// How long a running query may have nothing running, in a cluster that runs
/// nothing, before it is failed. Between two stages this lasts milliseconds.
pub(super) const STALL_AFTER: Duration = Duration::from_secs(5);

/// How long a failed stalled query stays in Ballista's running jobs, so
/// every client reads its failure before the cancel that removes it.
const RELEASE_AFTER: Duration = Duration::from_secs(2);

/// Stages a query may create before it counts as a runaway re-planning
/// loop. TPC-H's largest plans have 13.
pub(super) const MAX_STAGES: usize = 1000;

/// The reason a runaway query fails with.
fn runaway_reason() -> String {
    format!(
        "the query was re-planned into more than {MAX_STAGES} stages (a loop in Ballista's adaptive \
         planner); Quiver failed it rather than let it hold the cluster"
    )
}

/// True when a query's planner has gone past [`MAX_STAGES`] stages.
fn is_runaway(graph: &dyn ExecutionGraph) -> bool {
    graph.stages().keys().max().is_some_and(|id| *id > MAX_STAGES)
}

/// Runs of one read-only statement, the first included, when its queries
/// stall.
pub(super) const MAX_ATTEMPTS: u32 = 3;

/// The reason a stalled query fails with.
pub(super) fn stall_reason() -> String {
    format!(
        "the query stopped making progress: none of its tasks ran for {} s while the cluster ran nothing \
         (Ballista lost track of its tasks: a stage re-run after an executor was lost, or a task report it \
         refused, which the scheduler's log names); \
         Quiver failed it rather than let it hang. Re-run it: the remaining executors take the work",
        STALL_AFTER.as_secs()
    )
}

/// Since when each running query has been idle.
#[derive(Default)]
pub(super) struct StallWatch {
    idle_since: HashMap<String, Instant>,
}

impl StallWatch {
    /// Notes whether `query` is idle now; true once it has been idle for
    /// [`STALL_AFTER`].
    fn observe(&mut self, query: &str, idle: bool, now: Instant) -> bool {
        if !idle {
            self.idle_since.remove(query);
            return false;
        }
        let since = *self.idle_since.entry(query.to_owned()).or_insert(now);
        now.duration_since(since) >= STALL_AFTER
    }

    /// Forgets queries that are no longer running.
    fn retain(&mut self, running: impl Fn(&str) -> bool) {
        self.idle_since.retain(|query, _| running(query));
    }
}

/// True when a query is running but none of its tasks is.
fn is_idle(graph: &dyn ExecutionGraph) -> bool {
    matches!(graph.status().status, Some(job_status::Status::Running(_))) && graph.running_tasks().is_empty()
}

/// Gives every live executor all its task slots back. Ballista refunds a
/// task's slots when its report arrives, from the task's record in its
/// query; a report it refuses, or one for a task of a stage it has reset,
/// refunds nothing, and the executor's slots stay taken until it restarts:
/// the next queries wait for them forever. Called only when the cluster runs
/// no task at all, so every slot is free.
async fn reset_task_slots(scheduler: &SchedulerServer) {
    for metadata in crate::cluster::alive_executors(scheduler).await {
        let vcores = metadata.specification.vcores;
        let slots = ExecutorData {
            executor_id: metadata.id.clone(),
            total_vcores: vcores,
            available_vcores: vcores,
        };
        let id = metadata.id.clone();
        let executors = &scheduler.state.executor_manager;
        // Registering again is the one public way to set an executor's slots.
        let reason = "the watchdog gives it its task slots back".to_string();
        let result = match executors.remove_executor(&id, Some(reason)).await {
            Ok(()) => executors.register_executor(metadata, slots).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => tracing::info!(executor = %id, vcores, "task slots given back"),
            Err(e) => tracing::warn!(executor = %id, "cannot give the executor its task slots back: {e}"),
        }
    }
}

impl JobService {
    /// Fails running queries that have stalled; called from the poll loop.
    pub(super) async fn fail_stalled_queries(&self) {
        let Some(scheduler) = self.scheduler.get() else {
            return;
        };
        let running = scheduler.state.task_manager.get_running_job_cache();
        // A query without running tasks may be waiting for slots other
        // queries hold, or for an executor to register: only when the
        // cluster has executors and runs nothing at all is idling a stall.
        let mut busy = false;
        let mut idle = Vec::new();
        let mut runaways = Vec::new();
        for (id, cache) in running.iter() {
            match cache.execution_graph.try_read() {
                Ok(graph) if is_runaway(graph.as_ref()) => runaways.push(id.clone()),
                Ok(graph) if is_idle(graph.as_ref()) => idle.push(id.clone()),
                _ => busy = true, // running tasks, finished, or being updated
            }
        }
        for id in runaways {
            if let Some(cache) = running.get(&id) {
                let mut graph = cache.execution_graph.write().await;
                tracing::warn!(query = %id, "runaway query; failing it: {}", runaway_reason());
                graph.fail_job(runaway_reason());
                self.report_and_release(scheduler, &id, &graph).await;
            }
        }
        // Executor states are read only when the check can matter.
        let stuck = !busy && !idle.is_empty() && crate::cluster::alive_slots(scheduler).await > 0;
        let now = Instant::now();
        let mut stalled = Vec::new();
        {
            let mut watch = self.stalls.lock();
            watch.retain(|query| running.keys().any(|id| id.as_ref() == query));
            for id in running.keys() {
                let idle = stuck && idle.contains(id);
                if watch.observe(id.as_ref(), idle, now) {
                    stalled.push(id.clone());
                }
            }
        }
        if !stalled.is_empty() {
            reset_task_slots(scheduler).await;
        }
        for id in stalled {
            let Some(cache) = running.get(&id) else { continue };
            {
                let mut graph = cache.execution_graph.write().await;
                if !is_idle(graph.as_ref()) {
                    continue; // it moved while we waited for the lock
                }
                tracing::warn!(query = %id, "query stalled; failing it: {}", stall_reason());
                // Noted before the client can read the failure, so the script
                // runner knows to re-run the statement.
                self.registry.lock().mark_stalled(id.as_ref());
                graph.fail_job(stall_reason());
                self.report_and_release(scheduler, &id, &graph).await;
            }
            self.stalls.lock().idle_since.remove(id.as_ref());
        }
    }

    /// Saves a failed query's graph, which sends its status to the client
    /// waiting on it (and to the observer), then cancels it, so Ballista
    /// drops it from its running jobs once the client has its answer.
    async fn report_and_release(&self, scheduler: &SchedulerServer, id: &JobId, graph: &ExecutionGraphBox) {
        match self.job_state.get() {
            Some(state) => {
                if let Err(e) = state.save_job(id, graph).await {
                    tracing::warn!(query = %id, "cannot report the failed query: {e}");
                }
            }
            None => self.graph_updated(graph.as_ref()),
        }
        let scheduler = scheduler.clone();
        let id = id.clone();
        tokio::spawn(async move {
            tokio::time::sleep(RELEASE_AFTER).await;
            if let Err(e) = scheduler.cancel_job(id.clone()).await {
                tracing::warn!(query = %id, "cannot release the failed query: {e}");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_is_stalled_only_after_staying_idle() {
        let mut watch = StallWatch::default();
        let t0 = Instant::now();
        assert!(!watch.observe("q", true, t0));
        assert!(!watch.observe("q", true, t0 + STALL_AFTER / 2));
        // Progress resets the clock.
        assert!(!watch.observe("q", false, t0 + STALL_AFTER / 2));
        assert!(!watch.observe("q", true, t0 + STALL_AFTER));
        assert!(!watch.observe("q", true, t0 + STALL_AFTER + STALL_AFTER / 2));
        assert!(watch.observe("q", true, t0 + STALL_AFTER * 2));
        watch.retain(|q| q != "q");
        assert!(!watch.observe("q", true, t0 + STALL_AFTER * 3));
    }
}
