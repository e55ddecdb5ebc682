//! Scripts submitted over REST: checked, queued for a job slot, and run
//! statement by statement by the scheduler as a client of its own cluster.
//! A read-only statement whose query the [`watchdog`] failed as stalled is
//! run again, up to [`watchdog::MAX_ATTEMPTS`] times.

use std::sync::Arc;
use std::time::Duration;

use datafusion::prelude::SessionContext;
use quiver_core::api::{JobSource, JobState, JobSummary, StatementInfo, SubmitJob};
use quiver_core::config::Settings;
use quiver_core::runner::{OutputKind, StatementRunner};
use quiver_core::script::Script;
use quiver_core::secret;
use quiver_core::session::{JobInfo, apply_settings};
use tokio_util::sync::CancellationToken;

use super::registry::new_detail;
use super::{JobError, JobService, watchdog};
use crate::clock::now_ms;

impl JobService {
    /// Accepts a script and starts it (or queues it when the job slots are full).
    pub async fn submit_script(self: &Arc<Self>, request: SubmitJob) -> Result<JobSummary, JobError> {
        let script = Script::parse(&request.sql, &request.params).map_err(|e| JobError::BadRequest(e.to_string()))?;
        let conf = Settings::unchecked(request.conf.clone());
        let mut probe = self.factory.base_config();
        apply_settings(&mut probe, &conf).map_err(|e| JobError::BadRequest(e.to_string()))?;
        conf.register_secrets();
        let name = request
            .name
            .clone()
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| "sql-job".into());
        let source = request.source.unwrap_or(JobSource::Rest);

        // Nothing is recorded before every secret the request carries is
        // known: secret-named params, and values the statements SET.
        secret::register_settings(request.params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let statements: Vec<StatementInfo> = script
            .statements
            .iter()
            .map(|s| StatementInfo::queued(s.index, s.line, secret::redact_sql(&s.sql)))
            .collect();
        let filled: Vec<&str> = script.statements.iter().map(|s| s.sql.as_str()).collect();
        let sql = secret::redact(&(filled.join(";\n\n") + ";")).into_owned();
        let params = request
            .params
            .iter()
            .map(|(k, v)| (k.clone(), secret::display_value(k, v).into_owned()))
            .collect();

        let (detail, cancel) = {
            let mut registry = self.registry.lock();
            let (_, queued, _) = registry.counts();
            if queued >= self.options.max_queued_jobs {
                return Err(JobError::Busy(format!(
                    "the job queue is full ({queued} jobs wait for one of {} job slots); \
                     submit again later, or start the scheduler with a larger --max-queued-jobs",
                    self.options.max_running_jobs
                )));
            }
            let id = registry.new_id();
            let mut detail = new_detail(id, name, source, JobState::Queued);
            detail.statements = statements;
            detail.sql = Some(sql);
            detail.params = params;
            detail.conf = conf.redacted();
            let cancel = registry.insert_active(detail.clone());
            (detail, cancel)
        };
        self.metrics.job_submitted();
        self.history.put_job(&detail).await?;
        tracing::info!(job = %detail.summary.id, name = %detail.summary.name, source = %detail.summary.source, statements = script.statements.len(), "job submitted");
        let service = Arc::clone(self);
        let job = ScriptJob {
            id: detail.summary.id.clone(),
            name: detail.summary.name.clone(),
            source,
            script,
            conf,
            timeout: self.options.timeout_for(request.timeout_secs),
        };
        tokio::spawn(async move { service.run_script(job, cancel).await });
        Ok(detail.summary)
    }

    async fn run_script(self: Arc<Self>, job: ScriptJob, cancel: CancellationToken) {
        let ScriptJob {
            id,
            name,
            source,
            script,
            conf,
            timeout,
        } = job;
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
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);

        let runner = match self.runner_for(&id, name, source, &conf).await {
            Ok(runner) => runner,
            Err(message) => {
                self.finish(&id, JobState::Failed, Some(message)).await;
                return;
            }
        };

        for statement in &script.statements {
            self.update(&id, |job| {
                job.running_statement = Some(statement.index);
                if let Some(s) = job.detail.statements.get_mut(statement.index - 1) {
                    s.state = JobState::Running;
                    s.started_at = Some(now_ms());
                }
            });
            let mut attempt = 1;
            let outcome = loop {
                let outcome = tokio::select! {
                    r = runner.run(statement) => Ok(r),
                    _ = cancel.cancelled() => Err(Stop::Cancelled),
                    _ = expiry(deadline) => Err(Stop::TimedOut),
                };
                if matches!(outcome, Ok(Err(_)))
                    && attempt < watchdog::MAX_ATTEMPTS
                    && self.take_stall(&id, statement.index)
                    && statement.is_read_only()
                {
                    attempt += 1;
                    tracing::warn!(job = %id, statement = statement.index, attempt, "re-running a read-only statement whose query stalled");
                    continue;
                }
                break outcome;
            };
            match outcome {
                Err(stop) => {
                    self.cancel_queries(&id).await;
                    let (state, reason) = match stop {
                        Stop::Cancelled => (JobState::Cancelled, "cancelled by user".to_owned()),
                        Stop::TimedOut => (
                            JobState::Failed,
                            format!(
                                "timed out: the job ran longer than its {} s limit (the request's timeout_secs \
                                 or the scheduler's --job-timeout) and was stopped",
                                timeout.unwrap_or_default().as_secs()
                            ),
                        ),
                    };
                    self.update(&id, |job| {
                        if let Some(s) = job.detail.statements.get_mut(statement.index - 1) {
                            s.state = state;
                            s.finished_at = Some(now_ms());
                            if state == JobState::Failed {
                                s.error = Some(reason.clone());
                            }
                        }
                    });
                    self.finish(&id, state, Some(reason)).await;
                    return;
                }
                Ok(Ok(out)) => {
                    let mut stored = true;
                    if out.kind == OutputKind::Rows
                        && let Err(e) = self.store_result(&id, out.index, &out.schema, &out.batches).await
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
                Ok(Err(failure)) => {
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

    /// Keeps a statement's result in history, with the secrets this process
    /// knows scrubbed from its text.
    async fn store_result(
        &self,
        id: &str,
        index: usize,
        schema: &arrow::datatypes::SchemaRef,
        batches: &[arrow::record_batch::RecordBatch],
    ) -> Result<(), String> {
        let scrubbed = batches
            .iter()
            .map(secret::redact_batch)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        self.history
            .put_result(id, index, schema, &scrubbed)
            .await
            .map_err(|e| e.to_string())
    }

    /// True (once) when the watchdog failed a query of statement `index` of
    /// job `id` as stalled.
    fn take_stall(&self, id: &str, index: usize) -> bool {
        let mut registry = self.registry.lock();
        registry
            .active
            .get_mut(id)
            .is_some_and(|job| job.stalled_statements.remove(&index))
    }

    /// A runner whose session plans on this scheduler's own cluster, as the
    /// job `id`.
    async fn runner_for(
        &self,
        id: &str,
        name: String,
        source: JobSource,
        conf: &Settings,
    ) -> Result<StatementRunner, String> {
        let info = JobInfo {
            name,
            source,
            job_id: Some(id.to_owned()),
        };
        let ctx = self.cluster_context(&info, conf).await?;
        Ok(StatementRunner::new(ctx, Arc::clone(self.factory.storage()))
            .with_max_rows(Some(self.options.max_result_rows))
            .with_max_bytes(Some(self.options.max_result_bytes)))
    }

    /// A session that plans on this scheduler's own cluster for `job`, with
    /// as many partitions per stage as the cluster has task slots.
    pub(crate) async fn cluster_context(&self, job: &JobInfo, conf: &Settings) -> Result<SessionContext, String> {
        let url = self.scheduler_url.get().cloned().unwrap_or_default();
        let token = self.token.get().cloned().flatten();
        let fetch_proof = job.job_id.as_deref().and_then(|id| self.fetch_proof(id));
        let slots = match self.scheduler.get() {
            Some(scheduler) => Some(crate::cluster::alive_slots(scheduler).await),
            None => None,
        };
        self.factory
            .remote_context(&url, job, conf, token.as_deref(), fetch_proof.as_deref(), slots)
            .map_err(|e| e.to_string())
    }
}

/// A submitted script, ready to run once a job slot is free.
struct ScriptJob {
    id: String,
    name: String,
    source: JobSource,
    script: Script,
    conf: Settings,
    /// How long it may run once started.
    timeout: Option<Duration>,
}

/// Why a script stopped before its statement ended.
enum Stop {
    Cancelled,
    TimedOut,
}

/// Resolves at `deadline`, or never without one.
async fn expiry(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
