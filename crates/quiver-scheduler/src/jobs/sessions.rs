//! Client sessions: a shell or DataFrame program opens a job, keeps it alive
//! with heartbeats and closes it; a session that falls silent is ended.

use std::time::Instant;

use quiver_core::api::{JobSource, JobState, JobSummary, OpenSession};
use quiver_core::secret;

use super::registry::new_detail;
use super::{JobError, JobService};

impl JobService {
    /// Opens a client session as a running job.
    pub async fn open_session(&self, request: OpenSession) -> Result<JobSummary, JobError> {
        if !matches!(request.source, JobSource::Shell | JobSource::Dataframe) {
            return Err(JobError::BadRequest(
                "sessions are opened by a shell or a dataframe program".into(),
            ));
        }
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
        Ok(detail.summary)
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
            if !registry.active.contains_key(id) {
                return match registry.summaries.get(id) {
                    Some(s) => Ok(s.clone()),
                    None => Err(JobError::NotFound(format!("no job {id}"))),
                };
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
                    matches!(j.detail.summary.source, JobSource::Shell | JobSource::Dataframe)
                        && j.last_heartbeat.elapsed() > self.options.session_timeout
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
