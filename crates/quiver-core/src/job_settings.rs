//! Settings a statement gives itself, carried to the cluster with its job.
//!
//! Ballista sends a job's settings from the session of the task that runs
//! the distributed query, not from the plan. `COPY ... OPTIONS
//! ('execution.keep_partition_by_columns' 'true')` names a setting of the
//! statement alone, and the plan format drops a `COPY`'s options: on a
//! cluster the partition columns were left out of the files. A
//! [`JobSettingsExec`] runs the distributed query with such settings in its
//! task's session, so the scheduler plans that job, and no other, with them.

use std::fmt;
use std::sync::Arc;

use datafusion::common::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::dml::CopyTo;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan};

use crate::batch_map::single_input_methods;

/// The `COPY` option that is a session setting of the statement, and the
/// setting it stands for.
const KEEP_PARTITION_BY_COLUMNS: (&str, &str) = (
    "execution.keep_partition_by_columns",
    "datafusion.execution.keep_partition_by_columns",
);

/// The session settings `copy`'s options give the statement, checked as one
/// process checks them.
///
/// ```
/// # use std::sync::Arc;
/// # use datafusion::prelude::SessionContext;
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> datafusion::common::Result<()> {
/// use datafusion::logical_expr::LogicalPlan;
/// use quiver_core::job_settings::copy_settings;
///
/// let ctx = SessionContext::new();
/// let sql = "COPY (SELECT 1 AS a, 2 AS b) TO '/tmp/out/' STORED AS PARQUET PARTITIONED BY (b) \
///            OPTIONS (execution.keep_partition_by_columns true)";
/// let LogicalPlan::Copy(copy) = ctx.state().create_logical_plan(sql).await? else { unreachable!() };
/// assert_eq!(
///     copy_settings(&copy)?,
///     vec![("datafusion.execution.keep_partition_by_columns".to_string(), "true".to_string())],
/// );
/// # Ok(()) }
/// ```
pub fn copy_settings(copy: &CopyTo) -> Result<Vec<(String, String)>> {
    let (option, setting) = KEEP_PARTITION_BY_COLUMNS;
    match copy.options.get(option).map(|v| v.trim()) {
        None => Ok(vec![]),
        Some(value @ ("true" | "false")) => Ok(vec![(setting.to_string(), value.to_string())]),
        Some(value) => Err(DataFusionError::Configuration(format!(
            "provided value for '{option}' was not recognized: \"{value}\""
        ))),
    }
}

/// Runs its input with `settings` in its task's session; see the
/// [module docs](self).
#[derive(Debug)]
pub struct JobSettingsExec {
    input: Arc<dyn ExecutionPlan>,
    settings: Vec<(String, String)>,
}

impl JobSettingsExec {
    /// `input`, run with `settings` (full keys, such as
    /// `datafusion.execution.batch_size`).
    pub fn new(input: Arc<dyn ExecutionPlan>, settings: Vec<(String, String)>) -> Self {
        Self { input, settings }
    }
}

impl DisplayAs for JobSettingsExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("JobSettingsExec:")?;
        for (key, value) in &self.settings {
            write!(f, " {key}={value}")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for JobSettingsExec {
    fn name(&self) -> &str {
        "JobSettingsExec"
    }

    single_input_methods!("JobSettingsExec", |this, input| Self::new(input, this.settings.clone()));

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let mut config = context.session_config().clone();
        for (key, value) in &self.settings {
            config.options_mut().set(key, value)?;
        }
        let context = TaskContext::new(
            context.task_id(),
            context.session_id(),
            config,
            context.scalar_functions().clone(),
            context.higher_order_functions().clone(),
            context.aggregate_functions().clone(),
            context.window_functions().clone(),
            context.runtime_env(),
        );
        self.input.execute(partition, Arc::new(context))
    }
}
