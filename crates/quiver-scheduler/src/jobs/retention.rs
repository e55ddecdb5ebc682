//! History retention: finished jobs beyond `--history-max-jobs` or older than
//! `--history-max-age-days` are removed, with their results.

use super::JobService;
use crate::clock::now_ms;

impl JobService {
    /// Removes finished jobs beyond the configured count and age.
    pub(super) async fn prune_history(&self) {
        let cutoff = now_ms().saturating_sub(self.options.max_history_age.as_millis() as u64);
        let doomed = self.registry.lock().take_expired(self.options.max_history_jobs, cutoff);
        for id in doomed {
            if let Err(e) = self.history.delete_job(&id).await {
                tracing::warn!(job = %id, "cannot remove job from history: {e}");
            }
        }
    }
}
