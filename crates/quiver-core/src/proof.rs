//! Proofs of a secret carried in a gRPC `user-agent` header.
//!
//! Where Ballista lets Quiver shape the endpoint a client dials but not add
//! headers to its calls, a caller shows that it holds a secret by a value
//! derived from it (SHA-256 of a label and the secret, never the secret
//! itself), as the word `<key>=<proof>` of its user agent. Two calls need
//! this:
//!
//! * an executor's calls to the scheduler and to other executors prove the
//!   cluster secret ([`crate::cluster_secret`]);
//! * a client's result fetches through the scheduler's Flight proxy prove
//!   the scheduler's access token.
//!
//! A third kind travels in a task's settings rather than a header: the
//! scheduler stamps every job's sessions with a proof of the cluster secret
//! (`quiver.task_proof`), and executors run only tasks that carry it
//! ([`crate::cluster_secret::ClusterSecret::accepts_task`]).
//!
//! The side that checks keeps only the proof's digest and compares digests
//! in constant time.
//!
//! ```
//! use quiver_core::proof::{Proof, ProofKind};
//! let proof = Proof::derive(ProofKind::ResultFetch, "the-access-token");
//! assert!(proof.accepts_user_agent(&format!("{} tonic/0.14", proof.user_agent())));
//! assert!(!proof.accepts_user_agent("tonic/0.14"));
//! assert!(!proof.user_agent().contains("the-access-token"));
//! // A proof of one kind does not open the other.
//! let executor = Proof::derive(ProofKind::Executor, "the-access-token");
//! assert!(!proof.accepts_user_agent(&executor.user_agent()));
//! ```

use crate::secret::Digest;

/// What a proof opens: each kind has its own label, so a proof of one kind
/// derived from the same secret does not pass as the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProofKind {
    /// An executor of the cluster (the cluster secret).
    Executor,
    /// A client fetching results through the scheduler's Flight proxy (the
    /// scheduler's access token).
    ResultFetch,
    /// A task the scheduler launched (the cluster secret), in its settings.
    Task,
}

impl ProofKind {
    /// What the proof is derived with, so it differs from the secret.
    fn label(self) -> &'static [u8] {
        match self {
            ProofKind::Executor => b"quiver-executor-proof\0",
            ProofKind::ResultFetch => b"quiver-result-fetch-proof\0",
            ProofKind::Task => b"quiver-task-proof\0",
        }
    }

    /// Where the proof sits in the user agent.
    fn key(self) -> &'static str {
        match self {
            ProofKind::Executor => "quiver-cluster-proof=",
            ProofKind::ResultFetch => "quiver-token-proof=",
            ProofKind::Task => "quiver-task-proof=",
        }
    }

    /// The product name the user agent starts with.
    fn agent(self) -> &'static str {
        match self {
            ProofKind::Executor => "quiver-executor",
            ProofKind::ResultFetch => "quiver-client",
            ProofKind::Task => "quiver-scheduler",
        }
    }
}

/// A proof derived from a secret, and its digest.
#[derive(Clone)]
pub struct Proof {
    kind: ProofKind,
    proof: String,
    /// What presented proofs are compared with.
    digest: Digest,
}

impl std::fmt::Debug for Proof {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Proof({:?}, ****)", self.kind)
    }
}

impl Proof {
    /// The proof of `kind` for `secret` (surrounding whitespace ignored). The
    /// proof is registered for masking, like the secret it comes from.
    pub fn derive(kind: ProofKind, secret: &str) -> Self {
        let proof = Digest::of(&[kind.label(), secret.trim().as_bytes()]).hex();
        crate::secret::register(&proof);
        let digest = Digest::of(&[proof.as_bytes()]);
        Self { kind, proof, digest }
    }

    /// The user agent that carries the proof.
    pub fn user_agent(&self) -> String {
        format!("{} {}", self.kind.agent(), self.word())
    }

    /// An endpoint override (for Ballista's clients) that makes every call
    /// through the endpoint carry the proof.
    pub fn endpoint_override(&self) -> ballista_core::extension::EndpointOverrideFn {
        user_agent_override(self.user_agent())
    }

    /// The word of a user agent that carries the proof: `<key>=<proof>`.
    pub fn word(&self) -> String {
        format!("{}{}", self.kind.key(), self.proof)
    }

    /// True when `user_agent` carries this proof.
    pub fn accepts_user_agent(&self, user_agent: &str) -> bool {
        let presented = user_agent
            .split_whitespace()
            .find_map(|word| word.strip_prefix(self.kind.key()))
            .unwrap_or("");
        self.accepts(presented)
    }

    /// The proof itself, for where it travels as a value (a task's settings).
    pub fn value(&self) -> &str {
        &self.proof
    }

    /// True when `presented` is this proof (compared in constant time).
    pub fn accepts(&self, presented: &str) -> bool {
        self.digest.matches(&Digest::of(&[presented.as_bytes()]))
    }
}

/// Where a client's job fetch proof sits in its user agent (see
/// [`fetch_user_agent`]).
pub const JOB_PROOF_KEY: &str = "quiver-job-proof=";

/// The user agent of a client's result fetches through the scheduler's
/// Flight proxy: the proof of the scheduler's access token when it has one,
/// and the job fetch proof the scheduler gave the client's job (its
/// session), which opens that job's results and no other's
/// ([`crate::cluster_secret::ClusterSecret::job_fetch_proof`]).
///
/// ```
/// use quiver_core::proof::{Proof, ProofKind, fetch_user_agent};
/// let token = Proof::derive(ProofKind::ResultFetch, "the-access-token");
/// let agent = fetch_user_agent(Some(&token), Some("0123abcd"));
/// assert!(token.accepts_user_agent(&agent));
/// assert!(agent.contains("quiver-job-proof=0123abcd"));
/// ```
pub fn fetch_user_agent(token: Option<&Proof>, job_proof: Option<&str>) -> String {
    let mut agent = ProofKind::ResultFetch.agent().to_owned();
    if let Some(token) = token {
        agent.push(' ');
        agent.push_str(&token.word());
    }
    if let Some(job) = job_proof {
        agent.push_str(&format!(" {JOB_PROOF_KEY}{job}"));
    }
    agent
}

/// The job fetch proof a user agent presents, or `""`.
pub fn presented_job_proof(user_agent: &str) -> &str {
    user_agent
        .split_whitespace()
        .find_map(|word| word.strip_prefix(JOB_PROOF_KEY))
        .unwrap_or("")
}

/// An endpoint override (for Ballista's clients) whose calls carry
/// `user_agent`.
pub fn user_agent_override(user_agent: String) -> ballista_core::extension::EndpointOverrideFn {
    std::sync::Arc::new(move |endpoint| Ok(endpoint.user_agent(user_agent.clone())?))
}
