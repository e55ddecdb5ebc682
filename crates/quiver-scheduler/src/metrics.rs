//! Prometheus metrics of the scheduler, served at `/metrics`.
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `quiver_jobs_submitted_total` | counter | jobs accepted (scripts and sessions) |
//! | `quiver_jobs_finished_total{state}` | counter | jobs ended, by `succeeded`, `failed`, `cancelled` |
//! | `quiver_job_duration_seconds` | histogram | run time of finished jobs |
//! | `quiver_running_tasks` | gauge | tasks running on executors |
//! | `quiver_executors_alive` | gauge | executors with a recent heartbeat |
//! | `quiver_jobs_running`, `quiver_jobs_queued` | gauge | jobs running and waiting |
//!
//! Ballista's own scheduler metrics (`job_exec_time_seconds`, ...) are served too.

use prometheus::{Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};
use quiver_core::api::JobState;

/// The scheduler's metrics.
#[derive(Clone)]
pub struct SchedulerMetrics {
    registry: Registry,
    submitted: IntCounter,
    finished: IntCounterVec,
    duration: Histogram,
    running_tasks: IntGauge,
    executors_alive: IntGauge,
    jobs_running: IntGauge,
    jobs_queued: IntGauge,
}

impl std::fmt::Debug for SchedulerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchedulerMetrics").finish_non_exhaustive()
    }
}

impl Default for SchedulerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl SchedulerMetrics {
    /// Creates the metrics in a registry of their own.
    pub fn new() -> Self {
        let registry = Registry::new();
        let submitted =
            IntCounter::new("quiver_jobs_submitted_total", "Jobs accepted by the scheduler").expect("valid metric");
        let finished = IntCounterVec::new(
            Opts::new("quiver_jobs_finished_total", "Jobs ended, by final state"),
            &["state"],
        )
        .expect("valid metric");
        let duration = Histogram::with_opts(
            HistogramOpts::new("quiver_job_duration_seconds", "Run time of finished jobs")
                .buckets(vec![0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0]),
        )
        .expect("valid metric");
        let running_tasks = IntGauge::new("quiver_running_tasks", "Tasks running on executors").expect("valid metric");
        let executors_alive =
            IntGauge::new("quiver_executors_alive", "Executors with a recent heartbeat").expect("valid metric");
        let jobs_running = IntGauge::new("quiver_jobs_running", "Jobs running").expect("valid metric");
        let jobs_queued = IntGauge::new("quiver_jobs_queued", "Jobs waiting for a job slot").expect("valid metric");
        for c in [
            Box::new(submitted.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(finished.clone()),
            Box::new(duration.clone()),
            Box::new(running_tasks.clone()),
            Box::new(executors_alive.clone()),
            Box::new(jobs_running.clone()),
            Box::new(jobs_queued.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        // Make every state visible from the start, at zero.
        for state in ["succeeded", "failed", "cancelled"] {
            finished.with_label_values(&[state]);
        }
        Self {
            registry,
            submitted,
            finished,
            duration,
            running_tasks,
            executors_alive,
            jobs_running,
            jobs_queued,
        }
    }

    /// A job was accepted.
    pub fn job_submitted(&self) {
        self.submitted.inc();
    }

    /// A job ended.
    pub fn job_finished(&self, state: JobState, duration_ms: Option<u64>) {
        self.finished.with_label_values(&[state.as_str()]).inc();
        if let Some(ms) = duration_ms {
            self.duration.observe(ms as f64 / 1000.0);
        }
    }

    /// Sets the gauges that describe the cluster now.
    pub fn set_cluster(&self, executors_alive: usize, running_tasks: u64, jobs_running: usize, jobs_queued: usize) {
        self.executors_alive.set(executors_alive as i64);
        self.running_tasks.set(running_tasks as i64);
        self.jobs_running.set(jobs_running as i64);
        self.jobs_queued.set(jobs_queued as i64);
    }

    /// The text exposition of Quiver's and Ballista's metrics.
    pub fn render(&self) -> String {
        let mut families = self.registry.gather();
        families.extend(prometheus::gather());
        let mut buf = Vec::new();
        if TextEncoder::new().encode(&families, &mut buf).is_err() {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_show_in_the_exposition() {
        let m = SchedulerMetrics::new();
        m.job_submitted();
        m.job_finished(JobState::Failed, Some(1500));
        m.set_cluster(2, 3, 1, 0);
        let text = m.render();
        assert!(text.contains("quiver_jobs_submitted_total 1"), "{text}");
        assert!(
            text.contains("quiver_jobs_finished_total{state=\"failed\"} 1"),
            "{text}"
        );
        assert!(text.contains("quiver_executors_alive 2"), "{text}");
        assert!(text.contains("quiver_job_duration_seconds_count 1"), "{text}");
    }
}
