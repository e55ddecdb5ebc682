//! Embedded mode: a scheduler and an executor inside this process.
//!
//! With no scheduler given, `quiver submit`, `quiver sql` and DataFrame
//! programs start an [`EmbeddedCluster`] on 127.0.0.1 and use it exactly as
//! they would a remote cluster: same job service, same plans, same results.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use quiver_core::cluster_secret::ClusterSecret;
use quiver_core::session::SessionFactory;
use quiver_executor::ExecutorOptions;
use quiver_scheduler::history::HistoryLocation;
use quiver_scheduler::{SchedulerHandle, SchedulerOptions};
use tokio::task::JoinHandle;

/// A scheduler and one executor running in this process.
pub struct EmbeddedCluster {
    scheduler: SchedulerHandle,
    executor: JoinHandle<()>,
    _work_dir: tempfile::TempDir,
}

impl std::fmt::Debug for EmbeddedCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedCluster")
            .field("url", &self.scheduler.url())
            .finish()
    }
}

/// Why the embedded cluster could not start.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// The scheduler did not start.
    #[error("embedded scheduler: {0}")]
    Scheduler(#[from] quiver_scheduler::SchedulerError),
    /// No free port or no temporary directory.
    #[error("embedded cluster: {0}")]
    Io(#[from] std::io::Error),
    /// The executor did not register in time.
    #[error("the embedded executor did not start within {0:?}")]
    Timeout(Duration),
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl EmbeddedCluster {
    /// Starts a scheduler and an executor with `slots` task slots (0: one per
    /// core) and waits until the executor has registered.
    pub async fn start(factory: SessionFactory, slots: usize) -> Result<Self, EmbeddedError> {
        // Only this process's executor may join: another local process that
        // finds the port cannot.
        let secret = ClusterSecret::generate();
        let scheduler = quiver_scheduler::start(
            SchedulerOptions {
                bind_host: "127.0.0.1".into(),
                port: 0,
                external_host: "127.0.0.1".into(),
                history: HistoryLocation::Memory,
                cluster_secret: Some(secret.clone()),
                ..SchedulerOptions::default()
            },
            factory.clone(),
        )
        .await?;
        let work_dir = tempfile::Builder::new().prefix("quiver-embedded-").tempdir()?;
        let options = ExecutorOptions {
            scheduler_host: "127.0.0.1".into(),
            scheduler_port: scheduler.addr().port(),
            bind_host: "127.0.0.1".into(),
            external_host: Some("127.0.0.1".into()),
            flight_port: free_port()?,
            grpc_port: free_port()?,
            health_port: None,
            slots,
            work_dir: Some(work_dir.path().to_owned()),
            id: Some("embedded".into()),
            shuffle_ttl: None,
            cluster_secret: Some(secret),
            ..ExecutorOptions::default()
        };
        let executor = tokio::spawn(async move {
            if let Err(e) = quiver_executor::run(options, factory).await {
                tracing::error!("embedded executor stopped: {e}");
            }
        });
        let limit = Duration::from_secs(30);
        let started = Instant::now();
        while !scheduler.is_ready() {
            if started.elapsed() > limit || executor.is_finished() {
                scheduler.abort();
                executor.abort();
                return Err(EmbeddedError::Timeout(limit));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Self {
            scheduler,
            executor,
            _work_dir: work_dir,
        })
    }

    /// The scheduler's URL.
    pub fn url(&self) -> &str {
        self.scheduler.url()
    }
}

impl Drop for EmbeddedCluster {
    fn drop(&mut self) {
        self.executor.abort();
        self.scheduler.abort();
    }
}
