//! A failing task's error, sent to the scheduler in a form the client can
//! rebuild.
//!
//! Ballista reports a task's error as its Debug text, which no client can
//! turn back into the error one process would have raised. [`TaskErrors`]
//! wraps each stage's executor so that its errors leave as a
//! [`TaskError`](quiver_core::remote_error::TaskError), whose text the
//! client's [`restore`](quiver_core::remote_error::restore) reads back.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use ballista_core::serde::protobuf::{RuntimeStatsReport, ShuffleWritePartition, TaskColumnStats, WindowStateReport};
use ballista_executor::execution_engine::QueryStageExecutor;
use datafusion::common::Result;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::metrics::MetricsSet;
use quiver_core::remote_error::TaskError;

/// A query stage's executor whose errors the client can rebuild; see the
/// [module docs](self). Everything else is the inner executor's.
pub struct TaskErrors {
    inner: Arc<dyn QueryStageExecutor>,
}

impl TaskErrors {
    /// Wraps `inner`.
    pub fn wrap(inner: Arc<dyn QueryStageExecutor>) -> Arc<dyn QueryStageExecutor> {
        Arc::new(Self { inner })
    }
}

impl fmt::Debug for TaskErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.inner, f)
    }
}

impl fmt::Display for TaskErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

#[async_trait]
impl QueryStageExecutor for TaskErrors {
    async fn execute_query_stage(
        &self,
        task_id: usize,
        context: Arc<TaskContext>,
    ) -> Result<Vec<ShuffleWritePartition>> {
        self.inner
            .execute_query_stage(task_id, context)
            .await
            .map_err(TaskError::wrap)
    }

    fn collect_plan_metrics(&self) -> Vec<MetricsSet> {
        self.inner.collect_plan_metrics()
    }

    fn collect_runtime_stats_reports(&self) -> Vec<RuntimeStatsReport> {
        self.inner.collect_runtime_stats_reports()
    }

    fn collect_window_state_reports(&self) -> Result<Vec<WindowStateReport>> {
        self.inner.collect_window_state_reports()
    }

    fn collect_column_stats(&self) -> Vec<TaskColumnStats> {
        self.inner.collect_column_stats()
    }
}
