//! The cluster as users see it: executors alive and lost, slots, tasks.
//!
//! Ballista forgets an executor once it is removed; [`ClusterView`] remembers
//! lost executors (and why) so the overview and the executors page can show
//! them, as Spark's master UI shows dead workers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ballista_core::serde::protobuf::ExecutorMetric;
use ballista_core::serde::protobuf::executor_metric::Metric;
use ballista_core::serde::scheduler::ExecutorMetadata;
use ballista_scheduler::cluster::ClusterStateEvent;
use futures::StreamExt;
use parking_lot::Mutex;
use quiver_core::api::{ClusterOverview, ExecutorInfo, ExecutorState};

use crate::SchedulerServer;
use crate::clock::now_ms;
use crate::jobs::JobService;

#[derive(Debug, Clone)]
struct Lost {
    info: ExecutorInfo,
}

/// Executors past and present.
pub struct ClusterView {
    started_at: u64,
    executor_timeout_secs: u64,
    /// Last known record of every executor that registered, by id.
    seen: Mutex<BTreeMap<String, ExecutorInfo>>,
    lost: Mutex<BTreeMap<String, Lost>>,
}

/// Task slots of the executors that sent a heartbeat within the scheduler's
/// executor timeout: how many tasks the cluster runs at once.
pub async fn alive_slots(scheduler: &SchedulerServer) -> usize {
    alive_executors(scheduler)
        .await
        .iter()
        .map(|meta| meta.specification.vcores as usize)
        .sum()
}

/// The executors that sent a heartbeat within the scheduler's executor timeout.
pub(crate) async fn alive_executors(scheduler: &SchedulerServer) -> Vec<ExecutorMetadata> {
    let timeout = scheduler.state.config.executor_timeout_seconds;
    executor_states(scheduler)
        .await
        .into_iter()
        .filter(|(_, heartbeat, _)| is_alive(*heartbeat, timeout))
        .map(|(meta, _, _)| meta)
        .collect()
}

/// Every executor Ballista knows, with its last heartbeat and metrics.
async fn executor_states(scheduler: &SchedulerServer) -> Vec<ExecutorRecord> {
    scheduler
        .state
        .executor_manager
        .get_executors_state()
        .await
        .unwrap_or_default()
}

type ExecutorRecord = (ExecutorMetadata, Option<Duration>, Vec<ExecutorMetric>);

/// Whether a heartbeat (time since the epoch) is within `timeout_secs` of now.
fn is_alive(heartbeat: Option<Duration>, timeout_secs: u64) -> bool {
    heartbeat.is_some_and(|t| (now_ms() / 1000).saturating_sub(t.as_secs()) <= timeout_secs)
}

impl ClusterView {
    /// A view whose executors count as alive within `executor_timeout_secs` of
    /// their last heartbeat.
    pub fn new(executor_timeout_secs: u64) -> Arc<Self> {
        Arc::new(Self {
            started_at: now_ms(),
            executor_timeout_secs,
            seen: Mutex::default(),
            lost: Mutex::default(),
        })
    }

    /// Follows Ballista's cluster events to notice executors leaving.
    pub async fn follow(self: &Arc<Self>, scheduler: &SchedulerServer) {
        let events = match scheduler.cluster_state_events().await {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!("cannot follow executor events: {e}");
                return;
            }
        };
        let view = Arc::clone(self);
        tokio::spawn(async move {
            let mut events = events;
            while let Some(event) = events.next().await {
                match event {
                    ClusterStateEvent::RegisteredExecutor { executor_id } => {
                        tracing::info!(executor = %executor_id, "executor registered");
                        view.lost.lock().remove(&executor_id);
                    }
                    ClusterStateEvent::RemovedExecutor { executor_id } => {
                        tracing::warn!(executor = %executor_id, "executor lost");
                        let last = view.seen.lock().get(&executor_id).cloned();
                        if let Some(mut info) = last {
                            info.state = ExecutorState::Lost;
                            info.running_tasks = 0;
                            info.free_slots = 0;
                            info.lost_reason = Some(format!(
                                "removed by the scheduler (no heartbeat for {}s, or it stopped)",
                                view.executor_timeout_secs
                            ));
                            view.lost.lock().insert(executor_id, Lost { info });
                        }
                    }
                }
            }
        });
    }

    /// Every executor, alive ones first.
    pub async fn executors(&self, scheduler: &SchedulerServer, jobs: &JobService) -> Vec<ExecutorInfo> {
        let counts = jobs.executor_task_counts();
        let mut out = Vec::new();
        for (meta, heartbeat, metrics) in executor_states(scheduler).await {
            let last = heartbeat.map(|d| d.as_secs());
            let alive = is_alive(heartbeat, self.executor_timeout_secs);
            let (running, finished, failed) = counts.get(&meta.id).copied().unwrap_or_default();
            let mut memory_used = None;
            let mut memory_peak = None;
            for m in metrics.iter().filter_map(|m| m.metric) {
                match m {
                    Metric::ProcPhysicalMemory(b) => memory_used = Some(b),
                    Metric::PeakPhysicalMemory(b) if b > 0 => memory_peak = Some(b),
                    _ => {}
                }
            }
            let slots = meta.specification.vcores;
            let info = ExecutorInfo {
                id: meta.id.clone(),
                host: meta.host.clone(),
                port: meta.port,
                state: if alive {
                    ExecutorState::Alive
                } else {
                    ExecutorState::Lost
                },
                slots,
                free_slots: slots.saturating_sub(running.min(u32::MAX as u64) as u32),
                running_tasks: running,
                finished_tasks: finished,
                failed_tasks: failed,
                memory_used,
                memory_peak,
                last_heartbeat: last.map(|s| s * 1000),
                lost_reason: (!alive).then(|| "no heartbeat within the executor timeout".into()),
            };
            self.seen.lock().insert(meta.id.clone(), info.clone());
            out.push(info);
        }
        let present: Vec<String> = out.iter().map(|e| e.id.clone()).collect();
        for (id, lost) in self.lost.lock().iter() {
            if !present.contains(id) {
                let mut info = lost.info.clone();
                if let Some((_, finished, failed)) = counts.get(id).copied() {
                    info.finished_tasks = finished;
                    info.failed_tasks = failed;
                }
                out.push(info);
            }
        }
        out.sort_by(|a, b| {
            let lost = |e: &ExecutorInfo| e.state != ExecutorState::Alive;
            (lost(a), &a.host, a.port).cmp(&(lost(b), &b.host, b.port))
        });
        out
    }

    /// The overview page's numbers.
    pub async fn overview(&self, scheduler: &SchedulerServer, jobs: &JobService) -> ClusterOverview {
        let executors = self.executors(scheduler, jobs).await;
        let alive: Vec<&ExecutorInfo> = executors.iter().filter(|e| e.state == ExecutorState::Alive).collect();
        let (running, queued, total) = jobs.counts();
        ClusterOverview {
            version: env!("CARGO_PKG_VERSION").into(),
            started_at: self.started_at,
            executors_alive: alive.len(),
            executors_lost: executors.len() - alive.len(),
            slots_total: alive.iter().map(|e| e.slots as u64).sum(),
            slots_used: alive.iter().map(|e| (e.slots - e.free_slots) as u64).sum(),
            jobs_running: running,
            jobs_queued: queued,
            jobs_total: total,
        }
    }
}
