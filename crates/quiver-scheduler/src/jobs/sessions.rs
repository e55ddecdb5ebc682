//! Client sessions: a shell or DataFrame program opens a job, keeps it alive
//! with heartbeats and closes it; a session that falls silent is ended.
//! A Flight SQL statement is a job of its own, opened and ended by the
//! scheduler's Flight service around its execution.

use std::time::Instant;

use quiver_core::api::{JobSource, JobState, JobSummary, OpenSession, OpenedSession, StatementInfo};
use quiver_core::secret;

use super::registry::new_detail;
use super::{JobError, JobService};
use crate::clock::now_ms;

/// How a single-statement job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatementEnd {
    /// It ran to the end.
    Succeeded,
    /// It failed; why.
    Failed(String),
    /// The client went away before reading all of it; why.
    Cancelled(String),
}

impl JobService {
    /// Opens a client session as a running job.
    pub async fn open_session(&self, request: OpenSession) -> Result<OpenedSession, JobError> {
        if !is_session(request.source) {
            return Err(JobError::BadRequest(
                "sessions are opened by a shell or a dataframe program".into(),
            ));
        }
        let tickets = self.tickets.get().ok_or_else(|| {
            JobError::Busy("the scheduler is still starting: open the session again in a moment".into())
        })?;
        let detail = {
            let mut registry = self.registry.lock();
            let id = registry.new_id();
            let detail = new_detail(id, request.name, request.source, JobState::Running);
            registry.insert_active(detail.clone());
            detail
        };
        self.metrics.job_submitted();
        self.history.put_job(&detail).await?;
        tracing::info!(job = %detail.summary.id, source = %detail.summary.source, "session opened");
        Ok(OpenedSession {
            fetch_proof: tickets.job_fetch_proof(&detail.summary.id),
            job: detail.summary,
        })
    }

    /// Opens a running job for one statement a client sent (Flight SQL).
    pub async fn open_statement(&self, name: &str, source: JobSource, sql: &str) -> Result<JobSummary, JobError> {
        let detail = {
            let mut registry = self.registry.lock();
            let id = registry.new_id();
            let mut detail = new_detail(id, name.to_owned(), source, JobState::Running);
            let text = secret::redact_sql(sql);
            let mut statement = StatementInfo::queued(1, 1, text.clone());
            statement.state = JobState::Running;
            statement.started_at = Some(now_ms());
            detail.sql = Some(text);
            detail.statements = vec![statement];
            registry.insert_active(detail.clone());
            detail
        };
        self.metrics.job_submitted();
        self.history.put_job(&detail).await?;
        Ok(detail.summary)
    }

    /// Ends a job [`open_statement`](Self::open_statement) opened.
    pub async fn end_statement(&self, id: &str, end: StatementEnd) {
        let (state, error) = match end {
            StatementEnd::Succeeded => (JobState::Succeeded, None),
            StatementEnd::Failed(e) => (JobState::Failed, Some(secret::redact(&e).into_owned())),
            StatementEnd::Cancelled(e) => (JobState::Cancelled, Some(e)),
        };
        self.update(id, |job| {
            if let Some(s) = job.detail.statements.first_mut() {
                s.state = state;
                s.finished_at = Some(now_ms());
                s.error.clone_from(&error);
            }
        });
        self.finish(id, state, error).await;
    }

    /// Records that a client session is alive.
    pub fn heartbeat(&self, id: &str) -> Result<(), JobError> {
        let mut registry = self.registry.lock();
        if let Some(job) = registry.active.get_mut(id) {
            job.last_heartbeat = Instant::now();
            return Ok(());
        }
        match registry.summaries.get(id) {
            Some(_) => Err(JobError::Conflict(format!("job {id} has already ended"))),
            None => Err(JobError::NotFound(format!("no job {id}"))),
        }
    }

    /// Ends a client session: succeeded, or failed with `error`.
    pub async fn close_session(&self, id: &str, error: Option<String>) -> Result<JobSummary, JobError> {
        {
            let registry = self.registry.lock();
            let Some(job) = registry.active.get(id) else {
                return match registry.summaries.get(id) {
                    Some(s) => Ok(s.clone()),
                    None => Err(JobError::NotFound(format!("no job {id}"))),
                };
            };
            // Only a session's own client ends it: a submitted script, or a
            // Flight SQL statement, ends when it has run (or is cancelled).
            if !is_session(job.detail.summary.source) {
                return Err(JobError::Conflict(format!(
                    "job {id} is not a session ({}); cancel it instead",
                    job.detail.summary.source
                )));
            }
        }
        let state = if error.is_some() {
            JobState::Failed
        } else {
            JobState::Succeeded
        };
        self.finish(id, state, error.map(|e| secret::redact(&e).into_owned()))
            .await;
        self.summary(id)
            .ok_or_else(|| JobError::NotFound(format!("no job {id}")))
    }

    /// Ends the sessions whose client stopped sending heartbeats.
    pub(super) async fn expire_sessions(&self) {
        let expired: Vec<String> = {
            let registry = self.registry.lock();
            registry
                .active
                .iter()
                .filter(|(_, j)| {
                    is_session(j.detail.summary.source) && j.last_heartbeat.elapsed() > self.options.session_timeout
                })
                .map(|(id, _)| id.clone())
                .collect()
        };
        for id in expired {
            tracing::warn!(job = %id, "client session stopped sending heartbeats; ending it");
            self.finish(
                &id,
                JobState::Failed,
                Some(format!(
                    "the client stopped sending heartbeats for {}s (it exited or lost its connection)",
                    self.options.session_timeout.as_secs()
                )),
            )
            .await;
        }
    }
}

/// Sources whose jobs are client sessions, opened and closed by their client.
fn is_session(source: JobSource) -> bool {
    matches!(source, JobSource::Shell | JobSource::Dataframe)
}
