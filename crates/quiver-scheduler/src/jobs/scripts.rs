//! Scripts submitted over REST: checked, queued for a job slot, and run
//! statement by statement by the scheduler as a client of its own cluster.
//! A read-only statement whose query the [`watchdog`] failed as stalled is
//! run again, up to [`watchdog::MAX_ATTEMPTS`] times.

use std::sync::Arc;

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
            // Nothing is recorded before every secret the request carries is
            // known: secret-named params, and values the statements SET.
            secret::register_settings(request.params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            detail.statements = script
                .statements
                .iter()
                .map(|s| StatementInfo::queued(s.index, s.line, secret::redact_sql(&s.sql)))
                .collect();
            let filled: Vec<&str> = script.statements.iter().map(|s| s.sql.as_str()).collect();
            detail.sql = Some(secret::redact(&(filled.join(";\n\n") + ";")).into_owned());
            detail.params = request
                .params
                .iter()
                .map(|(k, v)| (k.clone(), secret::display_value(k, v).into_owned()))
                .collect();
            detail.conf = conf.redacted();
            let cancel = registry.insert_active(detail.clone());
            (detail, cancel)
        };
        self.metrics.job_submitted();
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
                    r = runner.run(statement) => Some(r),
                    _ = cancel.cancelled() => None,
                };
                if matches!(outcome, Some(Err(_)))
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
            .with_max_rows(Some(self.options.max_result_rows)))
    }

    /// A session that plans on this scheduler's own cluster for `job`, with
    /// as many partitions per stage as the cluster has task slots.
    pub(crate) async fn cluster_context(&self, job: &JobInfo, conf: &Settings) -> Result<SessionContext, String> {
        let url = self.scheduler_url.get().cloned().unwrap_or_default();
        let token = self.token.get().cloned().flatten();
        let slots = match self.scheduler.get() {
            Some(scheduler) => Some(crate::cluster::alive_slots(scheduler).await),
            None => None,
        };
        self.factory
            .remote_context(&url, job, conf, token.as_deref(), slots)
            .map_err(|e| e.to_string())
    }
}
