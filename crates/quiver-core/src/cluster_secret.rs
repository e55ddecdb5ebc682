//! The cluster secret: what proves a process is one of the cluster's own
//! executors.
//!
//! The operator gives the scheduler and every executor the same secret
//! (`QUIVER_CLUSTER_SECRET`, or `--cluster-secret-file`). An executor sends
//! a proof derived from it ([`crate::proof`]: never the secret itself) with
//! every call it makes to the scheduler, in its gRPC `user-agent` header:
//! Ballista's executor lets Quiver shape the endpoint it dials, not add
//! headers. The scheduler refuses executor calls (register,
//! heartbeat, task status, poll, stop) without the proof, so a process that
//! merely reaches the scheduler's port can neither join the cluster, receive
//! tasks and their credentials, nor report forged results.
//!
//! Tasks go the other way, from the scheduler to the executors' gRPC port,
//! which Ballista serves with no hook for a header check. So the scheduler
//! stamps each job's settings, which travel with every task, with a second
//! proof ([`ClusterSecret::stamp_tasks`]), and an executor runs only tasks
//! that carry it ([`ClusterSecret::accepts_task`]): a task from anyone else
//! is refused before its plan runs.
//!
//! ```
//! use quiver_core::cluster_secret::ClusterSecret;
//! let secret = ClusterSecret::new("a-long-shared-secret").unwrap();
//! assert!(secret.accepts_user_agent(&format!("{} tonic/0.14", secret.user_agent())));
//! assert!(!secret.accepts_user_agent("tonic/0.14"));
//! assert!(!secret.user_agent().contains("a-long-shared-secret"));
//! ```

use std::path::Path;

use datafusion::prelude::SessionConfig;

use crate::config::ConfigError;
use crate::proof::{Proof, ProofKind};
use crate::secret::Digest;

/// The environment variable that holds the secret.
pub const ENV: &str = "QUIVER_CLUSTER_SECRET";

/// The shortest secret accepted: shorter ones are guessed too easily.
const MIN_LEN: usize = 16;

/// A cluster's shared secret, kept only as the proof derived from it.
#[derive(Clone)]
pub struct ClusterSecret {
    proof: Proof,
    /// What the scheduler's tasks carry in `quiver.task_proof`.
    task: Proof,
}

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(****)")
    }
}

impl ClusterSecret {
    /// The secret `value`; refused when shorter than 16 characters.
    pub fn new(value: &str) -> Result<Self, ConfigError> {
        let value = value.trim();
        if value.len() < MIN_LEN {
            return Err(ConfigError::InvalidValue {
                key: ENV.into(),
                message: format!(
                    "the cluster secret must be at least {MIN_LEN} characters (e.g. `openssl rand -hex 32`)"
                ),
            });
        }
        crate::secret::register(value);
        Ok(Self {
            proof: Proof::derive(ProofKind::Executor, value),
            task: Proof::derive(ProofKind::Task, value),
        })
    }

    /// A fresh random secret, for a cluster that lives in one process
    /// (embedded mode): its executor holds it, nothing else does.
    pub fn generate() -> Self {
        let value = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
        Self::new(&value).expect("64 hex characters are long enough")
    }

    /// The secret from `file` when given, else from `QUIVER_CLUSTER_SECRET`;
    /// `None` when neither is set. An unreadable or empty file is an error.
    pub fn load(file: Option<&Path>) -> Result<Option<Self>, ConfigError> {
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError::InvalidValue {
                key: "--cluster-secret-file".into(),
                message: format!("cannot read {}: {e}", path.display()),
            })?;
            return Self::new(&text).map(Some);
        }
        match std::env::var(ENV) {
            Ok(v) if !v.trim().is_empty() => Self::new(&v).map(Some),
            _ => Ok(None),
        }
    }

    /// The user agent an executor's calls to the scheduler carry.
    pub fn user_agent(&self) -> String {
        self.proof.user_agent()
    }

    /// An endpoint override (for Ballista's clients) that makes every call
    /// through the endpoint carry this secret's proof.
    pub fn endpoint_override(&self) -> ballista_core::extension::EndpointOverrideFn {
        self.proof.endpoint_override()
    }

    /// True when `user_agent` carries this secret's proof.
    pub fn accepts_user_agent(&self, user_agent: &str) -> bool {
        self.proof.accepts_user_agent(user_agent)
    }

    /// `config` with the proof that its tasks come from this cluster's
    /// scheduler (in `quiver.task_proof`, replacing any value a client set).
    pub fn stamp_tasks(&self, mut config: SessionConfig) -> datafusion::error::Result<SessionConfig> {
        config.options_mut().set(TASK_PROOF_KEY, self.task.value())?;
        Ok(config)
    }

    /// True when a task's settings carry the proof [`Self::stamp_tasks`] puts there.
    ///
    /// ```
    /// use datafusion::prelude::SessionConfig;
    /// use quiver_core::cluster_secret::ClusterSecret;
    /// use quiver_core::options::QuiverOptions;
    /// let secret = ClusterSecret::new("a-long-shared-secret").unwrap();
    /// let config = SessionConfig::new().with_option_extension(QuiverOptions::default());
    /// assert!(!secret.accepts_task(&config));
    /// let stamped = secret.stamp_tasks(config.clone()).unwrap();
    /// assert!(secret.accepts_task(&stamped));
    /// let other = ClusterSecret::new("another-long-secret").unwrap();
    /// assert!(!other.accepts_task(&stamped));
    /// ```
    pub fn accepts_task(&self, config: &SessionConfig) -> bool {
        let presented = crate::options::quiver_options(config).task_proof.unwrap_or_default();
        self.task.accepts(&presented)
    }

    /// The proof that opens job `job_id`'s results through the scheduler's
    /// Flight proxy: the scheduler gives it to the client that opened the
    /// job (a shell or DataFrame session) and to its own runs of the job's
    /// statements, and fetches of any other job's results are refused with
    /// it ([`Self::accepts_job_fetch`]). Derived from the secret and the job
    /// id, so it holds across scheduler restarts and no client can derive
    /// another job's.
    ///
    /// ```
    /// use quiver_core::cluster_secret::ClusterSecret;
    /// use quiver_core::proof::fetch_user_agent;
    /// let secret = ClusterSecret::new("a-long-shared-secret").unwrap();
    /// let mine = fetch_user_agent(None, Some(&secret.job_fetch_proof("job-1")));
    /// assert!(secret.accepts_job_fetch("job-1", &mine));
    /// assert!(!secret.accepts_job_fetch("job-2", &mine));
    /// assert!(!secret.accepts_job_fetch("job-1", "quiver-client"));
    /// ```
    pub fn job_fetch_proof(&self, job_id: &str) -> String {
        Digest::of(&[JOB_FETCH_LABEL, self.task.value().as_bytes(), b"\0", job_id.as_bytes()]).hex()
    }

    /// True when `user_agent` carries job `job_id`'s fetch proof.
    pub fn accepts_job_fetch(&self, job_id: &str, user_agent: &str) -> bool {
        let presented = crate::proof::presented_job_proof(user_agent);
        Digest::of(&[presented.as_bytes()]).matches(&Digest::of(&[self.job_fetch_proof(job_id).as_bytes()]))
    }
}

/// What job fetch proofs are derived with.
const JOB_FETCH_LABEL: &[u8] = b"quiver-job-fetch-proof\0";

/// The setting a task's proof travels in.
const TASK_PROOF_KEY: &str = "quiver.task_proof";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_secrets_are_refused_and_proofs_differ_per_secret() {
        assert!(ClusterSecret::new("short").is_err());
        let a = ClusterSecret::new("secret-number-one-0001").unwrap();
        let b = ClusterSecret::new("secret-number-two-0002").unwrap();
        assert!(!a.accepts_user_agent(&b.user_agent()));
        let proof = a.user_agent().rsplit('=').next().unwrap().to_owned();
        assert!(!format!("{a:?}").contains(&proof));
    }
}
