//! Quiver: distributed SQL and DataFrames on Apache Arrow, for the Docker data-lake stack.
//!
//! This crate is the `quiver` command and the library DataFrame programs use.
//! [`Quiver::builder`] connects to a cluster (or starts one in this process)
//! and gives a DataFusion [`SessionContext`] whose queries run on it, with S3
//! storage already configured. The program shows up in the scheduler's UI as a
//! named job, like a Spark application.
//!
//! ```no_run
//! use quiver::Quiver;
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Uses QUIVER_SCHEDULER when set, otherwise runs embedded.
//! let quiver = Quiver::builder("daily-report").connect().await?;
//! let ctx = quiver.context();
//! ctx.sql("CREATE EXTERNAL TABLE orders STORED AS PARQUET LOCATION 's3://lake/orders/'").await?;
//! ctx.sql("SELECT count(*) FROM orders").await?.show().await?;
//! quiver.finish().await?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod client;
pub mod embedded;

use std::sync::Arc;
use std::time::Duration;

use datafusion::prelude::SessionContext;
use quiver_core::api::{JobSource, OpenSession, OpenedSession};
use quiver_core::config::Settings;
use quiver_core::session::{JobInfo, SessionError, SessionFactory};
use quiver_core::storage::StorageContext;
use tokio::task::JoinHandle;

pub use client::{ApiClient, ClientError, SCHEDULER_ENV, TOKEN_ENV};
pub use embedded::EmbeddedCluster;
pub use quiver_core;

/// Why a connection could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Configuration was refused.
    #[error(transparent)]
    Config(#[from] quiver_core::config::ConfigError),
    /// The session could not be built.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// The scheduler could not be reached or refused the job.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The embedded cluster did not start.
    #[error(transparent)]
    Embedded(#[from] embedded::EmbeddedError),
}

/// Options for [`Quiver::connect`](QuiverBuilder::connect).
#[derive(Debug, Clone)]
pub struct QuiverBuilder {
    name: String,
    source: JobSource,
    scheduler: Option<String>,
    token: Option<String>,
    settings: Settings,
    config_file: Option<std::path::PathBuf>,
    embedded_slots: usize,
}

impl QuiverBuilder {
    /// The scheduler to use (`host:port`); overrides `QUIVER_SCHEDULER`.
    pub fn scheduler(mut self, address: impl Into<String>) -> Self {
        self.scheduler = Some(address.into());
        self
    }

    /// Runs in this process even when `QUIVER_SCHEDULER` is set.
    pub fn embedded(mut self) -> Self {
        self.scheduler = Some(String::new());
        self
    }

    /// The scheduler's access token; overrides `QUIVER_TOKEN`.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// A session setting (`s3.region`, `datafusion.execution.batch_size`, ...).
    pub fn conf(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.set(key, value);
        self
    }

    /// Session settings.
    pub fn settings(mut self, settings: &Settings) -> Self {
        self.settings.merge(settings);
        self
    }

    /// The config file to read instead of `QUIVER_CONFIG`'s.
    pub fn config_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.config_file = Some(path.into());
        self
    }

    /// What the job is, as the UI shows its source (`dataframe` by default).
    pub fn source(mut self, source: JobSource) -> Self {
        self.source = source;
        self
    }

    /// Task slots of the embedded executor (0: one per core).
    pub fn embedded_slots(mut self, slots: usize) -> Self {
        self.embedded_slots = slots;
        self
    }

    /// Connects (or starts the embedded cluster) and opens the job.
    pub async fn connect(self) -> Result<Quiver, ConnectError> {
        let file = Settings::load(self.config_file.as_deref())?;
        let factory = SessionFactory::new(&file)?;
        let address = self
            .scheduler
            .clone()
            .or_else(|| std::env::var(SCHEDULER_ENV).ok())
            .filter(|s| !s.trim().is_empty());
        let token = self
            .token
            .clone()
            .or_else(|| std::env::var(TOKEN_ENV).ok())
            .filter(|t| !t.is_empty());
        let (cluster, address) = match address {
            Some(a) => (None, a),
            None => {
                let cluster = EmbeddedCluster::start(factory.clone(), self.embedded_slots).await?;
                let url = cluster.url().to_owned();
                (Some(Arc::new(cluster)), url)
            }
        };
        let api = ApiClient::new(&address, token.clone())?;
        let OpenedSession { job, fetch_proof } = api
            .open_session(&OpenSession {
                name: self.name.clone(),
                source: self.source,
            })
            .await?;
        let info = JobInfo {
            name: self.name,
            source: self.source,
            job_id: Some(job.id.clone()),
        };
        // Partitions per stage follow the cluster's task slots; a cluster
        // with no executors yet keeps Ballista's default.
        let slots = match api.cluster().await {
            Ok(overview) => usize::try_from(overview.slots_total).ok(),
            Err(e) => {
                tracing::debug!("cannot read the cluster's task slots: {e}");
                None
            }
        };
        let ctx = factory.remote_context(
            api.base_url(),
            &info,
            &self.settings,
            token.as_deref(),
            Some(&fetch_proof),
            slots,
        )?;
        let heartbeat = {
            let api = api.clone();
            let id = job.id.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(5));
                loop {
                    tick.tick().await;
                    if let Err(e) = api.heartbeat(&id).await {
                        tracing::debug!("session heartbeat failed: {e}");
                    }
                }
            })
        };
        Ok(Quiver {
            ctx,
            api,
            job_id: job.id,
            storage: Arc::clone(factory.storage()),
            heartbeat,
            finished: false,
            _cluster: cluster,
        })
    }
}

/// A connection to a Quiver cluster, as one job; see the [crate docs](crate).
pub struct Quiver {
    ctx: SessionContext,
    api: ApiClient,
    job_id: String,
    storage: Arc<StorageContext>,
    heartbeat: JoinHandle<()>,
    finished: bool,
    _cluster: Option<Arc<EmbeddedCluster>>,
}

impl std::fmt::Debug for Quiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quiver")
            .field("job_id", &self.job_id)
            .field("api", &self.api)
            .finish()
    }
}

impl Quiver {
    /// Starts building a connection for a job called `name`.
    pub fn builder(name: impl Into<String>) -> QuiverBuilder {
        QuiverBuilder {
            name: name.into(),
            source: JobSource::Dataframe,
            scheduler: None,
            token: None,
            settings: Settings::new(),
            config_file: None,
            embedded_slots: 0,
        }
    }

    /// The session: its queries run on the cluster.
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// The job's id on the scheduler.
    pub fn job_id(&self) -> &str {
        &self.job_id
    }

    /// The scheduler's REST API.
    pub fn api(&self) -> &ApiClient {
        &self.api
    }

    /// This process's storage (for runners that need it).
    pub fn storage(&self) -> &Arc<StorageContext> {
        &self.storage
    }

    /// Ends the job as succeeded.
    pub async fn finish(mut self) -> Result<(), ClientError> {
        self.close(None).await
    }

    /// Ends the job as failed with `error`.
    pub async fn fail(mut self, error: impl std::fmt::Display) -> Result<(), ClientError> {
        self.close(Some(error.to_string())).await
    }

    async fn close(&mut self, error: Option<String>) -> Result<(), ClientError> {
        self.heartbeat.abort();
        self.finished = true;
        self.api.close_session(&self.job_id, error).await.map(|_| ())
    }
}

impl Drop for Quiver {
    fn drop(&mut self) {
        self.heartbeat.abort();
        if !self.finished {
            // Not finished explicitly: the job was abandoned, probably by an
            // error path. Tell the scheduler if the runtime still runs.
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                let api = self.api.clone();
                let id = self.job_id.clone();
                handle.spawn(async move {
                    let _ = api
                        .close_session(&id, Some("the program ended without finishing its job".into()))
                        .await;
                });
            }
        }
    }
}
