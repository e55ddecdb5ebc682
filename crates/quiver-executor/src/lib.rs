//! The Quiver executor: the spark-worker of a Quiver cluster.
//!
//! An executor registers with the scheduler, receives the tasks of query
//! stages, runs them with DataFusion, and serves the shuffle files it wrote to
//! other executors (and results to clients, through the scheduler) over Arrow
//! Flight. It is Ballista's executor, set up with Quiver's sessions, storage and
//! codecs from [`quiver_core::session::SessionFactory`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), quiver_executor::ExecutorError> {
//! use quiver_core::{config::Settings, session::SessionFactory};
//! use quiver_executor::{ExecutorOptions, run};
//! let factory = SessionFactory::new(&Settings::new()).expect("config");
//! let options = ExecutorOptions { scheduler_host: "localhost".into(), slots: 2, ..ExecutorOptions::default() };
//! run(options, factory).await?; // until ctrl-c or SIGTERM
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod compact;
pub mod dynamic_filter;
pub mod engine;
pub mod guard;
pub mod task_errors;
pub mod task_port;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use ballista_core::config::TaskSchedulingPolicy;
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use ballista_executor::health::ExecutorHealth;
use quiver_core::cluster_secret::ClusterSecret;
use quiver_core::session::SessionFactory;
use quiver_core::task_port::TaskPort;
use quiver_core::tls::ClientTls;

pub use crate::guard::ExecutorTls;

/// Default port of the executor's Arrow Flight service (shuffle and results).
pub const DEFAULT_FLIGHT_PORT: u16 = 50051;
/// Default port of the executor's gRPC service (tasks pushed by the scheduler).
pub const DEFAULT_GRPC_PORT: u16 = 50052;
/// Default port of the executor's health endpoints.
pub const DEFAULT_HEALTH_PORT: u16 = 50053;

/// Largest Flight or task message the executor sends or accepts (Ballista's default).
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Where Ballista's own servers listen when Quiver guards the executor's
/// ports: reachable from this machine only.
const LOOPBACK: &str = "127.0.0.1";

/// How an executor runs.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// Scheduler host name.
    pub scheduler_host: String,
    /// Scheduler port.
    pub scheduler_port: u16,
    /// Address to bind the services to.
    pub bind_host: String,
    /// Host name other executors, the scheduler and clients use to reach this
    /// executor (a container name in Docker). `None`: the address the scheduler
    /// sees the connection come from.
    pub external_host: Option<String>,
    /// Arrow Flight port.
    pub flight_port: u16,
    /// gRPC port for tasks pushed by the scheduler.
    pub grpc_port: u16,
    /// Port for `/healthz` and `/readyz`; `None` disables them.
    pub health_port: Option<u16>,
    /// Task slots (concurrent partitions); 0 means one per CPU core.
    pub slots: usize,
    /// Memory for query operators, in bytes; operators spill to disk beyond it.
    /// `None`: 70% of the container's or host's memory.
    pub memory_limit: Option<u64>,
    /// Where shuffle and spill files go; a temporary directory when `None`.
    pub work_dir: Option<PathBuf>,
    /// This executor's id; generated when `None`.
    pub id: Option<String>,
    /// How often the executor tells the scheduler it is alive.
    pub heartbeat_interval: Duration,
    /// How long to keep retrying the first connection to the scheduler.
    pub connect_timeout: Duration,
    /// Shuffle files older than this are removed from the work directory;
    /// `None` leaves cleaning to whoever owns the directory.
    pub shuffle_ttl: Option<Duration>,
    /// The cluster secret whose proof the executor's calls to the scheduler
    /// carry; `None` for a cluster without one.
    pub cluster_secret: Option<ClusterSecret>,
    /// What to trust when the scheduler serves TLS; `None`: plain.
    pub scheduler_tls: Option<ClientTls>,
    /// TLS on the executor's task and Flight ports (and to other
    /// executors'); `None`: plain.
    pub tls: Option<ExecutorTls>,
}

impl ExecutorOptions {
    /// The scheduler an executor looks for unless told otherwise.
    pub const DEFAULT_SCHEDULER: &str = "localhost";
    /// Address an executor binds unless told otherwise: every interface.
    pub const DEFAULT_BIND: &str = "0.0.0.0";
    /// How often an executor tells the scheduler it is alive.
    pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(3);
    /// How long an executor keeps trying to reach the scheduler at startup.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(60);
}

impl Default for ExecutorOptions {
    fn default() -> Self {
        Self {
            scheduler_host: Self::DEFAULT_SCHEDULER.into(),
            scheduler_port: quiver_core::api::DEFAULT_SCHEDULER_PORT,
            bind_host: Self::DEFAULT_BIND.into(),
            external_host: None,
            flight_port: DEFAULT_FLIGHT_PORT,
            grpc_port: DEFAULT_GRPC_PORT,
            health_port: Some(DEFAULT_HEALTH_PORT),
            slots: 0,
            memory_limit: None,
            work_dir: None,
            id: None,
            heartbeat_interval: Self::DEFAULT_HEARTBEAT_INTERVAL,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            shuffle_ttl: Some(Duration::from_secs(24 * 3600)),
            cluster_secret: None,
            scheduler_tls: None,
            tls: None,
        }
    }
}

/// Why an executor stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    /// The work directory could not be created.
    #[error("cannot create work directory {path}: {source}")]
    WorkDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The health port could not be bound.
    #[error("cannot serve health endpoints on {addr}: {source}")]
    Health {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// A port could not be bound.
    #[error("cannot listen on {addr}: {message} (is another process using the port?)")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        message: String,
    },
    /// The executor itself failed (scheduler unreachable, port in use, ...).
    #[error("executor failed: {0}")]
    Runtime(String),
}

/// Runs an executor until it is stopped (ctrl-c, SIGTERM, or the scheduler).
pub async fn run(options: ExecutorOptions, factory: SessionFactory) -> Result<(), ExecutorError> {
    if let Some(dir) = &options.work_dir {
        std::fs::create_dir_all(dir).map_err(|source| ExecutorError::WorkDir {
            path: dir.clone(),
            source,
        })?;
    }
    let health = ExecutorHealth::new();
    if let Some(port) = options.health_port {
        serve_health(&options.bind_host, port, health.clone()).await?;
    }
    let ports = Ports::choose(&options)?;
    if let Ports::Guarded {
        task, ballista_task, ..
    } = &ports
    {
        task_port::serve(
            *task,
            *ballista_task,
            options.cluster_secret.clone(),
            options.tls.as_ref().map(|tls| &tls.server),
            MAX_MESSAGE_BYTES,
        )?;
    }
    let config = process_config(&options, &factory, health, &ports);
    tracing::info!(
        scheduler = %format!("{}:{}", options.scheduler_host, options.scheduler_port),
        flight_port = options.flight_port,
        task_port = options.grpc_port,
        tls = options.tls.is_some(),
        slots = config.vcores,
        "starting executor"
    );
    start_executor_process(Arc::new(config))
        .await
        .map_err(|e| ExecutorError::Runtime(quiver_core::secret::redact(&e.to_string()).into_owned()))
}

/// Who serves the executor's ports.
#[derive(Debug, Clone)]
pub enum Ports {
    /// Ballista serves them itself, with no check and no TLS: a cluster
    /// with neither a secret nor certificates.
    Ballista,
    /// Quiver serves the task and Flight ports (checking the cluster
    /// secret's proof, speaking TLS when given a certificate); Ballista's
    /// task server listens on a loopback port behind the task port.
    Guarded {
        /// The task port's address.
        task: SocketAddr,
        /// The Flight port's address.
        flight: SocketAddr,
        /// Ballista's task server's loopback port.
        ballista_task: u16,
    },
}

impl Ports {
    /// Guarded when the executor has a cluster secret or a certificate.
    pub fn choose(options: &ExecutorOptions) -> Result<Self, ExecutorError> {
        if options.cluster_secret.is_none() && options.tls.is_none() {
            return Ok(Ports::Ballista);
        }
        let address = |port: u16| {
            let addr = format!("{}:{port}", options.bind_host);
            let resolved = addr.to_socket_addrs().map(|mut all| all.next());
            match resolved {
                Ok(Some(resolved)) => Ok(resolved),
                Ok(None) => Err(ExecutorError::Bind {
                    addr,
                    message: "the bind address names no address".into(),
                }),
                Err(e) => Err(ExecutorError::Bind {
                    addr,
                    message: e.to_string(),
                }),
            }
        };
        let loopback = std::net::TcpListener::bind((LOOPBACK, 0))
            .and_then(|listener| listener.local_addr())
            .map_err(|e| ExecutorError::Bind {
                addr: format!("{LOOPBACK}:0"),
                message: e.to_string(),
            })?;
        Ok(Ports::Guarded {
            task: address(options.grpc_port)?,
            flight: address(options.flight_port)?,
            ballista_task: loopback.port(),
        })
    }
}

/// Ballista's executor configuration for these options and ports.
pub fn process_config(
    options: &ExecutorOptions,
    factory: &SessionFactory,
    health: ExecutorHealth,
    ports: &Ports,
) -> ExecutorProcessConfig {
    let slots = if options.slots == 0 {
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    } else {
        options.slots
    };
    let (bind_host, grpc_port, flight_service) = match ports {
        Ports::Ballista => (options.bind_host.clone(), options.grpc_port, None),
        Ports::Guarded {
            flight, ballista_task, ..
        } => (
            LOOPBACK.to_owned(),
            *ballista_task,
            Some(guard::flight_server(
                options.cluster_secret.clone(),
                options.tls.as_ref().map(|tls| tls.server.clone()),
                *flight,
                MAX_MESSAGE_BYTES,
            )),
        ),
    };
    let mut config = ExecutorProcessConfig {
        bind_host,
        external_host: options.external_host.clone(),
        port: options.flight_port,
        grpc_port,
        scheduler_host: options.scheduler_host.clone(),
        scheduler_port: options.scheduler_port,
        scheduler_connect_timeout_seconds: options.connect_timeout.as_secs().min(u16::MAX as u64) as u16,
        vcores: slots,
        task_scheduling_policy: TaskSchedulingPolicy::PushStaged,
        work_dir: options.work_dir.as_ref().map(|d| d.display().to_string()),
        executor_heartbeat_interval_seconds: options.heartbeat_interval.as_secs().max(1),
        memory_pool_size: options.memory_limit,
        job_data_ttl_seconds: options.shuffle_ttl.map_or(0, |t| t.as_secs()),
        job_data_clean_up_interval_seconds: if options.shuffle_ttl.is_some() { 600 } else { 0 },
        override_config_producer: Some(guard::peer_config_producer(
            factory.config_producer(),
            options.cluster_secret.as_ref(),
            options.tls.as_ref(),
        )),
        override_runtime_producer: Some(factory.runtime_producer(options.work_dir.clone())),
        override_logical_codec: Some(factory.logical_codec()),
        override_physical_codec: Some(factory.physical_codec()),
        override_function_registry: Some(factory.function_registry()),
        override_execution_engine: Some(Arc::new(engine::QuiverExecutionEngine::new(
            Duration::from_secs(30),
            options.cluster_secret.clone(),
        ))),
        override_create_grpc_client_endpoint: scheduler_endpoint_override(options, ports),
        override_arrow_flight_service: flight_service,
        health,
        ..ExecutorProcessConfig::default()
    };
    if let Some(id) = &options.id {
        config.executor_id = id.clone();
    }
    config
}

/// How the executor's scheduler connections are shaped: TLS when the
/// scheduler serves it, then a user agent with the cluster secret's proof
/// and the task port the scheduler is to dial ([`quiver_core::task_port`]).
fn scheduler_endpoint_override(
    options: &ExecutorOptions,
    ports: &Ports,
) -> Option<ballista_core::extension::EndpointOverrideFn> {
    let tls = options.scheduler_tls.as_ref().map(|tls| tls.endpoint_override(true));
    let mut agent: Vec<String> = options.cluster_secret.iter().map(ClusterSecret::user_agent).collect();
    if let Ports::Guarded { .. } = ports {
        let port = TaskPort {
            port: options.grpc_port,
            tls: options.tls.is_some(),
        };
        agent.push(port.word());
    }
    let agent = (!agent.is_empty()).then(|| quiver_core::proof::user_agent_override(agent.join(" ")));
    quiver_core::tls::chain(tls, agent)
}

async fn serve_health(bind_host: &str, port: u16, health: ExecutorHealth) -> Result<(), ExecutorError> {
    let addr = format!("{bind_host}:{port}");
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|source| ExecutorError::Health {
            addr: addr.clone(),
            source,
        })?;
    let app = Router::new().route("/healthz", get(|| async { "ok" })).route(
        "/readyz",
        get(move || {
            let ready = health.is_ready();
            async move {
                if ready {
                    (StatusCode::OK, "ready")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not registered with the scheduler")
                }
            }
        }),
    );
    let local: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(addr = ?local, "executor health endpoints listening");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!("executor health server stopped: {e}");
        }
    });
    Ok(())
}
