//! The Quiver scheduler: the spark-master of a Quiver cluster.
//!
//! One port (50050 by default) serves everything a cluster needs from its
//! scheduler:
//!
//! * Ballista's scheduler gRPC service (clients submit queries, executors
//!   register, heartbeat and report tasks);
//! * Arrow Flight: Flight SQL for ADBC, JDBC and BI tools, and the proxy
//!   clients fetch results through, so they never need to reach an executor
//!   ([`flight`]);
//! * the job service's REST API ([`api`]) and Prometheus metrics;
//! * the web UI ([`ui`]);
//! * `/healthz` and `/readyz` probes.
//!
//! ```no_run
//! # async fn demo() -> Result<(), quiver_scheduler::SchedulerError> {
//! use quiver_core::{config::Settings, session::SessionFactory};
//! use quiver_scheduler::{SchedulerOptions, start};
//! let factory = SessionFactory::new(&Settings::new()).expect("config");
//! let scheduler = start(SchedulerOptions::default(), factory).await?;
//! println!("listening on {}", scheduler.url());
//! scheduler.wait().await?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod api;
pub mod auth;
pub mod clock;
pub mod cluster;
pub mod flight;
pub mod history;
pub mod job_ids;
pub mod jobs;
pub mod metrics;
pub mod observe;
pub mod registrations;
pub mod tls;
pub mod ui;

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::flight_service_server::FlightServiceServer;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::serve::ListenerExt;
use ballista_core::extension::{BallistaConfigGrpcEndpoint, EndpointOverrideFn, SessionConfigExt};
use ballista_core::flight_proxy_service::BallistaFlightProxyService;
use ballista_core::serde::BallistaCodec;
use ballista_core::serde::protobuf::scheduler_grpc_server::SchedulerGrpcServer;
use ballista_scheduler::cluster::memory::{InMemoryClusterState, InMemoryJobState};
use ballista_scheduler::cluster::{BallistaCluster, JobState};
use ballista_scheduler::config::{SchedulerConfig, TaskDistributionPolicy};
use ballista_scheduler::metrics::default_metrics_collector;
use ballista_scheduler::state::session_manager::share_file_statistics_cache;
use datafusion::prelude::SessionConfig;
use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};
use quiver_core::cluster_secret::ClusterSecret;
use quiver_core::session::SessionFactory;
use quiver_core::tls::ClientTls;
use tokio::task::JoinHandle;

use crate::api::AppState;
use crate::auth::Auth;
use crate::cluster::ClusterView;
use crate::history::{HistoryLocation, HistoryStore};
use crate::job_ids::JobIds;
use crate::jobs::{JobService, JobServiceOptions};
use crate::metrics::SchedulerMetrics;
use crate::observe::ObservedJobState;
use crate::tls::{ServerTls, TlsListener};

/// Default scheduler port.
pub const DEFAULT_PORT: u16 = quiver_core::api::DEFAULT_SCHEDULER_PORT;

/// The distributed scheduler at the heart of a Quiver scheduler: Ballista's
/// `SchedulerServer` with the plan types Quiver's codecs carry.
pub type SchedulerServer = ballista_scheduler::scheduler_server::SchedulerServer<LogicalPlanNode, PhysicalPlanNode>;

/// How the scheduler runs.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    /// Address to bind.
    pub bind_host: String,
    /// Port to listen on; 0 picks a free one.
    pub port: u16,
    /// Host name executors and clients use to reach the scheduler.
    pub external_host: String,
    /// An executor with no heartbeat for this long is considered lost and its
    /// work is rescheduled.
    pub executor_timeout: Duration,
    /// Where job history is kept.
    pub history: HistoryLocation,
    /// Limits of the job service.
    pub jobs: JobServiceOptions,
    /// Access token required by the API, the UI and job submission.
    pub token: Option<String>,
    /// The secret executors must prove they hold to register and report;
    /// `None` leaves the executor calls open (said loudly at start-up).
    pub cluster_secret: Option<ClusterSecret>,
    /// Spread each stage's tasks evenly over executors (true) or fill one
    /// executor's slots first (false).
    pub round_robin: bool,
    /// Serve the port over TLS only, with this certificate; `None`: plain.
    pub tls: Option<ServerTls>,
    /// Executors serve their ports over TLS: dial them (tasks, result
    /// fetches) with it, trusting this; `None`: plain.
    pub executor_tls: Option<ClientTls>,
}

impl SchedulerOptions {
    /// Address a scheduler binds unless told otherwise: every interface.
    pub const DEFAULT_BIND: &str = "0.0.0.0";
    /// Host name a scheduler advertises unless told otherwise.
    pub const DEFAULT_EXTERNAL_HOST: &str = "localhost";
    /// How long an executor may stay silent before it is lost: three missed
    /// heartbeats at the executors' default interval. (Spark waits 60 s.)
    pub const DEFAULT_EXECUTOR_TIMEOUT: Duration = Duration::from_secs(10);
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        Self {
            bind_host: Self::DEFAULT_BIND.into(),
            port: DEFAULT_PORT,
            external_host: Self::DEFAULT_EXTERNAL_HOST.into(),
            executor_timeout: Self::DEFAULT_EXECUTOR_TIMEOUT,
            history: HistoryLocation::Memory,
            jobs: JobServiceOptions::default(),
            token: None,
            cluster_secret: None,
            round_robin: true,
            tls: None,
            executor_tls: None,
        }
    }
}

/// Why the scheduler could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// The port could not be bound.
    #[error("cannot listen on {addr}: {source} (is another scheduler running? use --port)")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// Job history could not be opened.
    #[error(transparent)]
    History(#[from] history::HistoryError),
    /// Ballista's scheduler failed.
    #[error("scheduler failed: {0}")]
    Ballista(String),
    /// The server stopped with an error.
    #[error("scheduler server stopped: {0}")]
    Serve(String),
}

/// A running scheduler.
pub struct SchedulerHandle {
    addr: SocketAddr,
    scheduler: SchedulerServer,
    url: String,
    jobs: Arc<JobService>,
    server: JoinHandle<Result<(), SchedulerError>>,
}

impl SchedulerHandle {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://host:port` (`https://` with TLS) for clients on this host.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// True once an executor has registered.
    pub fn is_ready(&self) -> bool {
        self.scheduler.is_ready()
    }

    /// The job service.
    pub fn jobs(&self) -> &Arc<JobService> {
        &self.jobs
    }

    /// Waits until the server stops.
    pub async fn wait(self) -> Result<(), SchedulerError> {
        self.server.await.map_err(|e| SchedulerError::Serve(e.to_string()))?
    }

    /// Stops the server.
    pub fn abort(&self) {
        self.server.abort();
    }
}

/// The sessions jobs run in: Quiver's, stamped with the cluster secret's
/// task proof when there is one, so executors know the tasks are this
/// scheduler's ([`ClusterSecret::stamp_tasks`]).
///
/// A client's `ballista.client.use_tls` is about its own connection to this
/// scheduler; it is turned off for the job: whether its tasks' shuffle reads
/// speak TLS is the executors' own setting (their `--tls-cert`).
fn session_builder(options: &SchedulerOptions, factory: &SessionFactory) -> quiver_core::session::SessionBuilder {
    let inner = factory.session_builder();
    let secret = options.cluster_secret.clone();
    Arc::new(move |config: SessionConfig| {
        let config = config.with_ballista_use_tls(false);
        inner(match &secret {
            Some(secret) => secret.stamp_tasks(config)?,
            None => config,
        })
    })
}

fn ballista_config(options: &SchedulerOptions, factory: &SessionFactory, port: u16) -> SchedulerConfig {
    let timeout = options.executor_timeout.as_secs().max(2);
    SchedulerConfig {
        external_host: options.external_host.clone(),
        bind_host: options.bind_host.clone(),
        bind_port: port,
        task_distribution: if options.round_robin {
            TaskDistributionPolicy::RoundRobin
        } else {
            TaskDistributionPolicy::Bias
        },
        executor_timeout_seconds: timeout,
        // Checked every second, so a loss is seen at most a second late.
        expire_dead_executor_interval_seconds: 1,
        no_executors_grace_period_seconds: timeout,
        // Shuffle data of finished queries goes after a minute, their state after an hour.
        finished_job_data_clean_up_interval_seconds: 60,
        finished_job_state_clean_up_interval_seconds: 3600,
        grpc_server_max_decoding_message_size: 256 * 1024 * 1024,
        grpc_server_max_encoding_message_size: 256 * 1024 * 1024,
        grpc_client_max_message_size: 256 * 1024 * 1024,
        enable_embedded_flight_proxy: true,
        min_ready_executors: 1,
        override_config_producer: Some(factory.config_producer()),
        override_session_builder: Some(session_builder(options, factory)),
        override_logical_codec: Some(factory.logical_codec()),
        override_physical_codec: Some(factory.physical_codec()),
        // Ballista's default generator keeps a thread ticking every millisecond.
        job_id_generator: Some(Arc::new(JobIds::new())),
        override_create_grpc_client_endpoint: executor_endpoint_override(options),
        ..SchedulerConfig::default()
    }
}

/// How the scheduler's connections to executors (task ports, Flight ports)
/// are shaped: TLS when executors serve it, then the cluster secret's proof,
/// which guarded executor ports require.
fn executor_endpoint_override(options: &SchedulerOptions) -> Option<EndpointOverrideFn> {
    let tls = options.executor_tls.as_ref().map(|tls| tls.endpoint_override(true));
    let proof = options.cluster_secret.as_ref().map(ClusterSecret::endpoint_override);
    quiver_core::tls::chain(tls, proof)
}

/// Starts a scheduler and returns once it accepts connections.
pub async fn start(options: SchedulerOptions, factory: SessionFactory) -> Result<SchedulerHandle, SchedulerError> {
    let (listener, addr) = bind(&format!("{}:{}", options.bind_host, options.port)).await?;
    let config = Arc::new(ballista_config(&options, &factory, addr.port()));
    config.validate().map_err(|e| SchedulerError::Ballista(e.to_string()))?;

    let metrics = SchedulerMetrics::new();
    let history = HistoryStore::open(&options.history, factory.storage())?;
    if options.history == HistoryLocation::Memory {
        tracing::info!(
            "job history is kept in memory only; pass --history DIR or s3://bucket/prefix to keep it across restarts"
        );
    }
    let jobs = JobService::new(history, factory.clone(), options.jobs.clone(), metrics.clone()).await?;

    let job_state = InMemoryJobState::new(
        config.scheduler_id.clone(),
        share_file_statistics_cache(session_builder(&options, &factory)),
        factory.config_producer(),
    );
    let observed: Arc<dyn JobState> = Arc::new(ObservedJobState::new(Arc::new(job_state), jobs.clone()));
    let cluster = BallistaCluster::new(Arc::new(InMemoryClusterState::default()), Arc::clone(&observed));
    let codec = BallistaCodec::new(factory.logical_codec(), factory.physical_codec());
    let collector = default_metrics_collector().map_err(|e| SchedulerError::Ballista(e.to_string()))?;
    let mut scheduler = SchedulerServer::new(
        config.scheduler_endpoint(),
        cluster,
        codec,
        Arc::clone(&config),
        collector,
    );
    scheduler
        .init()
        .await
        .map_err(|e| SchedulerError::Ballista(e.to_string()))?;

    let local_host = match addr.ip() {
        ip if ip.is_unspecified() => "127.0.0.1".to_string(),
        ip => ip.to_string(),
    };
    let scheme = if options.tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{local_host}:{}", addr.port());
    // The job service plans its scripts as a client of this port. Over TLS
    // it would need a CA for a name this process may not have, so it talks
    // to the same services through a plain listener on the loopback
    // interface only (the token and the cluster secret hold there as well).
    let loopback = match options.tls {
        Some(_) => {
            let (listener, own) = bind("127.0.0.1:0").await?;
            Some((listener, format!("http://{own}")))
        }
        None => None,
    };
    let own_url = loopback.as_ref().map_or_else(|| url.clone(), |(_, own)| own.clone());
    // Each job's result fetch proof derives from the cluster secret (so it
    // holds across restarts), or from a secret of this process's own.
    let tickets = options.cluster_secret.clone().unwrap_or_else(ClusterSecret::generate);
    jobs.attach(scheduler.clone(), observed, own_url, options.token.clone(), tickets);
    let view = ClusterView::new(config.executor_timeout_seconds);
    view.follow(&scheduler).await;

    let auth = Auth::new(options.token.clone()).with_cluster_secret(options.cluster_secret.clone());
    if options.cluster_secret.is_none() {
        tracing::warn!(
            "the cluster is open: any process that reaches port {} can register as an executor, receive tasks \
             and report results; set {} (or --cluster-secret-file) on the scheduler and every executor",
            addr.port(),
            quiver_core::cluster_secret::ENV
        );
    }
    let app = AppState {
        jobs: Arc::clone(&jobs),
        cluster: view,
        scheduler: scheduler.clone(),
        metrics,
        auth: auth.clone(),
    };
    let router = router(app, &config, auth, &options);
    tracing::info!(
        %addr,
        history = %options.history,
        auth = options.token.is_some(),
        cluster_secret = options.cluster_secret.is_some(),
        tls = options.tls.is_some(),
        executor_tls = options.executor_tls.is_some(),
        "Quiver scheduler listening (gRPC, Flight proxy, REST, UI)"
    );
    let public = match &options.tls {
        Some(tls) => {
            let listener = TlsListener::new(listener, tls).map_err(|source| SchedulerError::Bind {
                addr: addr.to_string(),
                source,
            })?;
            let service = router
                .clone()
                .layer(axum::middleware::from_fn(tls::peer_as_socket_addr))
                .into_make_service_with_connect_info::<tls::TlsPeer>();
            Box::pin(
                axum::serve(listener, service)
                    .with_graceful_shutdown(shutdown_signal())
                    .into_future(),
            )
        }
        None => serve_plain(listener, router.clone()),
    };
    let own = match loopback {
        Some((listener, _)) => serve_plain(listener, router),
        None => Box::pin(futures::future::pending()),
    };
    let server = tokio::spawn(async move {
        // Both listeners stop on the same signal; either one failing stops
        // the scheduler.
        tokio::select! {
            served = public => served,
            served = own => served,
        }
        .map_err(|e| SchedulerError::Serve(e.to_string()))
    });
    Ok(SchedulerHandle {
        addr,
        scheduler,
        url,
        jobs,
        server,
    })
}

fn router(app: AppState, config: &SchedulerConfig, auth: Auth, options: &SchedulerOptions) -> Router {
    let max_decoding = config.grpc_server_max_decoding_message_size as usize;
    let max_encoding = config.grpc_server_max_encoding_message_size as usize;
    let grpc = SchedulerGrpcServer::new(app.scheduler.clone())
        .max_decoding_message_size(max_decoding)
        .max_encoding_message_size(max_encoding);
    // With a cluster secret, executors serve Flight only to holders of it;
    // with certificates, only over TLS.
    let prove = executor_endpoint_override(options).map(|shape| Arc::new(BallistaConfigGrpcEndpoint::new(shape)));
    let proxy = BallistaFlightProxyService::new(max_decoding, max_encoding, options.executor_tls.is_some(), prove);
    let flight = flight::QuiverFlight::new(Arc::clone(&app.jobs), proxy, auth.clone());
    let mut routes = tonic::service::RoutesBuilder::default();
    routes.add_service(grpc);
    routes.add_service(
        FlightServiceServer::new(flight)
            .max_decoding_message_size(max_decoding)
            .max_encoding_message_size(max_encoding),
    );
    let tonic = routes.routes().into_axum_router();

    let health = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz));
    api::routes()
        .layer(axum::extract::DefaultBodyLimit::max(api::MAX_BODY_BYTES))
        .merge(ui::routes().layer(axum::middleware::from_fn(ui::security_headers)))
        .merge(health)
        .with_state(app)
        .merge(tonic)
        .layer(axum::middleware::from_fn_with_state(
            options.executor_tls.is_some(),
            registrations::check_registration,
        ))
        .layer(axum::middleware::from_fn_with_state(auth, auth::require_token))
}

async fn readyz(State(app): State<AppState>) -> (StatusCode, &'static str) {
    if app.scheduler.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "no executor has registered yet")
    }
}

/// The server of a plain listener, until the scheduler is stopped.
fn serve_plain(
    listener: tokio::net::TcpListener,
    router: Router,
) -> futures::future::BoxFuture<'static, std::io::Result<()>> {
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    Box::pin(
        axum::serve(listener.tap_io(nodelay), service)
            .with_graceful_shutdown(shutdown_signal())
            .into_future(),
    )
}

/// Sets TCP_NODELAY on a connection to the scheduler's port. Without it, a
/// response written in pieces (gRPC headers, then data, then trailers; a
/// job's status stream; Flight batches through the proxy) waits for the
/// client's delayed ACK: 40 ms per exchange on Linux. tonic sets it on its
/// own listeners; axum leaves it to the caller.
fn nodelay(tcp: &mut tokio::net::TcpStream) {
    if let Err(error) = tcp.set_nodelay(true) {
        tracing::warn!(%error, "could not set TCP_NODELAY on a scheduler connection");
    }
}

/// A listener on `addr`, and the address it got.
async fn bind(addr: &str) -> Result<(tokio::net::TcpListener, SocketAddr), SchedulerError> {
    let failed = |source| SchedulerError::Bind {
        addr: addr.to_owned(),
        source,
    };
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(failed)?;
    let local = listener.local_addr().map_err(failed)?;
    Ok((listener, local))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("scheduler shutting down");
}
