//! `quiver scheduler` and `quiver executor`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use quiver_core::cluster_secret::ClusterSecret;
use quiver_core::config::Settings;
use quiver_core::session::SessionFactory;
use quiver_core::storage::LocalPaths;
use quiver_core::tls::ClientTls;
use quiver_core::tls::ServerTls;
use quiver_executor::{ExecutorOptions, ExecutorTls};
use quiver_scheduler::SchedulerOptions;
use quiver_scheduler::history::HistoryLocation;
use quiver_scheduler::jobs::JobServiceOptions;

use super::UsageError;

const SECS_PER_DAY: u64 = 24 * 3600;

/// Which local files the jobs of a cluster process may read and write.
#[derive(Debug, Args)]
pub struct LocalPathArgs {
    /// Directories whose files jobs may read and write by local path or
    /// file:// URL (comma-separated in the environment variable). Without it,
    /// local paths are refused: scripts reach data through s3:// only.
    #[arg(long, env = "QUIVER_ALLOW_LOCAL_PATHS", value_name = "DIR", num_args = 1.., value_delimiter = ',')]
    allow_local_paths: Vec<PathBuf>,
}

/// The secret the scheduler and its executors share.
#[derive(Debug, Args)]
pub struct ClusterSecretArgs {
    /// File holding the cluster secret (or set QUIVER_CLUSTER_SECRET), the
    /// same on the scheduler and every executor: executors prove they hold
    /// it to register and report. Without it the cluster is open to any
    /// process that reaches the scheduler's port.
    #[arg(long, value_name = "FILE")]
    cluster_secret_file: Option<PathBuf>,
}

impl ClusterSecretArgs {
    fn load(&self) -> anyhow::Result<Option<ClusterSecret>> {
        ClusterSecret::load(self.cluster_secret_file.as_deref()).map_err(|e| UsageError(e.to_string()).into())
    }
}

impl LocalPathArgs {
    fn policy(&self) -> anyhow::Result<LocalPaths> {
        LocalPaths::under(&self.allow_local_paths).map_err(|e| UsageError(e.to_string()).into())
    }
}

#[derive(Debug, Args)]
pub struct SchedulerArgs {
    /// Address to listen on.
    #[arg(long, env = "QUIVER_BIND", default_value = SchedulerOptions::DEFAULT_BIND)]
    bind: String,
    /// Port for gRPC, REST, the UI and metrics.
    #[arg(long, short = 'p', env = "QUIVER_PORT", default_value_t = quiver_scheduler::DEFAULT_PORT)]
    port: u16,
    /// Host name executors and clients use to reach this scheduler.
    #[arg(long, env = "QUIVER_EXTERNAL_HOST", default_value = SchedulerOptions::DEFAULT_EXTERNAL_HOST)]
    external_host: String,
    /// Seconds without a heartbeat after which an executor is lost and its work rerun.
    #[arg(long, env = "QUIVER_EXECUTOR_TIMEOUT", value_name = "SECS",
          default_value_t = SchedulerOptions::DEFAULT_EXECUTOR_TIMEOUT.as_secs())]
    executor_timeout: u64,
    /// Where job history is kept: a directory, s3://bucket/prefix, or `memory`.
    #[arg(long, env = "QUIVER_HISTORY", default_value = "memory", value_name = "LOCATION")]
    history: HistoryLocation,
    /// Jobs kept in history.
    #[arg(long, env = "QUIVER_HISTORY_MAX_JOBS", default_value_t = JobServiceOptions::DEFAULT.max_history_jobs)]
    history_max_jobs: usize,
    /// Days finished jobs are kept in history.
    #[arg(long, env = "QUIVER_HISTORY_MAX_AGE_DAYS",
          default_value_t = JobServiceOptions::DEFAULT.max_history_age.as_secs() / SECS_PER_DAY)]
    history_max_age_days: u64,
    /// Scripts run at once; more wait as queued.
    #[arg(long, env = "QUIVER_MAX_RUNNING_JOBS", default_value_t = JobServiceOptions::DEFAULT.max_running_jobs)]
    max_running_jobs: usize,
    /// Scripts that may wait for a slot; more are refused (HTTP 503) until some start.
    #[arg(long, env = "QUIVER_MAX_QUEUED_JOBS", default_value_t = JobServiceOptions::DEFAULT.max_queued_jobs)]
    max_queued_jobs: usize,
    /// Longest a submitted script may run once started, in seconds (0: no
    /// limit); a job past it is stopped and fails. A request's own timeout
    /// can only be shorter.
    #[arg(long, env = "QUIVER_JOB_TIMEOUT", value_name = "SECS", default_value_t = 0)]
    job_timeout: u64,
    /// Rows kept from each query result of a submitted script.
    #[arg(long, env = "QUIVER_MAX_RESULT_ROWS", default_value_t = JobServiceOptions::DEFAULT.max_result_rows)]
    max_result_rows: usize,
    /// Bytes (in memory) kept of all the query results of one submitted
    /// script; results past it are cut, and the job says so.
    #[arg(long, env = "QUIVER_MAX_RESULT_BYTES", value_name = "BYTES", default_value_t = JobServiceOptions::DEFAULT.max_result_bytes)]
    max_result_bytes: usize,
    /// File holding the access token clients must send (or set QUIVER_TOKEN).
    #[arg(long, env = "QUIVER_TOKEN_FILE", value_name = "FILE")]
    token_file: Option<PathBuf>,
    #[command(flatten)]
    local_paths: LocalPathArgs,
    #[command(flatten)]
    cluster_secret: ClusterSecretArgs,
    /// Serve the port over TLS only, with this certificate (PEM: the
    /// certificate, then any intermediates). Clients then use
    /// https://HOST:PORT and, for a private CA, QUIVER_CA_FILE.
    #[arg(long, env = "QUIVER_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "QUIVER_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Executors serve TLS (they were started with --tls-cert): dial their
    /// task and Flight ports with it, trusting --ca-file.
    #[arg(long, env = "QUIVER_EXECUTOR_TLS")]
    executor_tls: bool,
    /// The CA (PEM) to trust in executors' certificates with --executor-tls;
    /// default: the system's roots.
    #[arg(long, env = quiver_core::tls::CA_FILE_ENV, value_name = "FILE")]
    ca_file: Option<PathBuf>,
}

/// What a process trusts: the CA in `ca_file`, else the system's roots.
fn trusted(ca_file: Option<&Path>) -> anyhow::Result<ClientTls> {
    match ca_file {
        Some(ca) => ClientTls::with_ca_file(ca).map_err(|e| UsageError(e.to_string()).into()),
        None => Ok(ClientTls::system_roots()),
    }
}

/// The certificate and key of `--tls-cert` and `--tls-key`, when given.
fn server_tls(cert: Option<&Path>, key: Option<&Path>) -> anyhow::Result<Option<ServerTls>> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(ServerTls::load(cert, key).map_err(|e| UsageError(e.to_string()))?)),
        _ => Ok(None),
    }
}

pub async fn scheduler(args: SchedulerArgs, config: Option<&Path>) -> anyhow::Result<ExitCode> {
    let factory = factory(config, args.local_paths.policy()?, args.history.warehouse())?;
    let token = match &args.token_file {
        Some(path) => Some(read_token_file(path)?),
        None => super::token_from_env(),
    };
    let options = SchedulerOptions {
        bind_host: args.bind,
        port: args.port,
        external_host: args.external_host,
        executor_timeout: Duration::from_secs(args.executor_timeout),
        history: args.history,
        jobs: JobServiceOptions {
            max_running_jobs: args.max_running_jobs,
            max_queued_jobs: args.max_queued_jobs,
            max_result_rows: args.max_result_rows,
            max_result_bytes: args.max_result_bytes,
            max_history_jobs: args.history_max_jobs,
            max_history_age: Duration::from_secs(args.history_max_age_days.saturating_mul(SECS_PER_DAY)),
            job_timeout: (args.job_timeout > 0).then(|| Duration::from_secs(args.job_timeout)),
            ..JobServiceOptions::default()
        },
        token,
        cluster_secret: args.cluster_secret.load()?,
        round_robin: true,
        tls: server_tls(args.tls_cert.as_deref(), args.tls_key.as_deref())?,
        executor_tls: match args.executor_tls {
            true => Some(trusted(args.ca_file.as_deref())?),
            false => None,
        },
    };
    let handle = quiver_scheduler::start(options, factory).await?;
    eprintln!(
        "quiver scheduler listening on {} (UI: {}/ui)",
        handle.addr(),
        handle.url()
    );
    handle.wait().await?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct ExecutorArgs {
    /// The scheduler, as HOST:PORT (https://HOST:PORT when it serves TLS).
    #[arg(long, env = "QUIVER_SCHEDULER", default_value = ExecutorOptions::DEFAULT_SCHEDULER)]
    scheduler: String,
    /// Address to bind the executor's services to.
    #[arg(long, env = "QUIVER_BIND", default_value = ExecutorOptions::DEFAULT_BIND)]
    bind: String,
    /// Host name the scheduler, other executors and clients use to reach this
    /// executor (its container name in Docker); default: the address the
    /// scheduler sees.
    #[arg(long, env = "QUIVER_EXTERNAL_HOST")]
    external_host: Option<String>,
    /// Advertise this machine's host name (a container's name on its Docker
    /// network, so `--scale` needs no per-executor settings).
    #[arg(long, env = "QUIVER_ADVERTISE_HOSTNAME", conflicts_with = "external_host")]
    advertise_hostname: bool,
    /// Arrow Flight port (shuffle data and results).
    #[arg(long, env = "QUIVER_FLIGHT_PORT", default_value_t = quiver_executor::DEFAULT_FLIGHT_PORT)]
    flight_port: u16,
    /// gRPC port the scheduler pushes tasks to.
    #[arg(long, env = "QUIVER_GRPC_PORT", default_value_t = quiver_executor::DEFAULT_GRPC_PORT)]
    grpc_port: u16,
    /// Port for /healthz and /readyz (0 disables them).
    #[arg(long, env = "QUIVER_HEALTH_PORT", default_value_t = quiver_executor::DEFAULT_HEALTH_PORT)]
    health_port: u16,
    /// Task slots (partitions run at once); 0 means one per CPU core.
    #[arg(long, short = 'c', env = "QUIVER_SLOTS", default_value_t = 0)]
    slots: usize,
    /// Memory for query operators, e.g. 4GiB or 512MB; beyond it they spill to
    /// disk. Default: 70% of the container's or host's memory.
    #[arg(long, env = "QUIVER_MEMORY_LIMIT", value_parser = parse_size)]
    memory_limit: Option<u64>,
    /// Directory for shuffle and spill files (default: a temporary directory).
    #[arg(long, env = "QUIVER_WORK_DIR")]
    work_dir: Option<PathBuf>,
    /// This executor's id (default: generated).
    #[arg(long, env = "QUIVER_EXECUTOR_ID")]
    id: Option<String>,
    /// Seconds between heartbeats to the scheduler.
    #[arg(long, env = "QUIVER_HEARTBEAT_INTERVAL", value_name = "SECS",
          default_value_t = ExecutorOptions::DEFAULT_HEARTBEAT_INTERVAL.as_secs())]
    heartbeat_interval: u64,
    /// Seconds to keep trying to reach the scheduler at startup.
    #[arg(long, env = "QUIVER_CONNECT_TIMEOUT", value_name = "SECS",
          default_value_t = ExecutorOptions::DEFAULT_CONNECT_TIMEOUT.as_secs())]
    connect_timeout: u64,
    #[command(flatten)]
    local_paths: LocalPathArgs,
    #[command(flatten)]
    cluster_secret: ClusterSecretArgs,
    /// The CA (PEM) to trust when --scheduler is https://... and in other
    /// executors' certificates with --tls-cert; default: the system's roots.
    #[arg(long, env = quiver_core::tls::CA_FILE_ENV, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// Serve the task and Flight ports over TLS only, with this certificate
    /// (PEM), and read shuffle data from other executors over TLS; every
    /// executor of the cluster needs one, and the scheduler --executor-tls.
    #[arg(long, env = "QUIVER_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "QUIVER_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

/// The token in `path`: an unreadable or empty file is a start-up error, not
/// a scheduler left open.
fn read_token_file(path: &Path) -> anyhow::Result<String> {
    let token = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read token file {}", path.display()))?
        .trim()
        .to_owned();
    if token.is_empty() {
        return Err(UsageError(format!(
            "token file {} is empty: write the token into it, or drop --token-file to run without one",
            path.display()
        ))
        .into());
    }
    Ok(token)
}

fn parse_size(s: &str) -> Result<u64, String> {
    s.parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| format!("'{s}' is not a size like 4GiB or 512MB: {e}"))
}

pub async fn executor(args: ExecutorArgs, config: Option<&Path>) -> anyhow::Result<ExitCode> {
    let factory = factory(config, args.local_paths.policy()?, None)?;
    let url = quiver::client::scheduler_url(&args.scheduler)?;
    let parsed = url::Url::parse(&url).map_err(|e| UsageError(format!("--scheduler: {e}")))?;
    let options = ExecutorOptions {
        scheduler_host: parsed.host_str().unwrap_or("localhost").to_owned(),
        scheduler_port: parsed.port().unwrap_or(quiver_core::api::DEFAULT_SCHEDULER_PORT),
        bind_host: args.bind,
        external_host: match args.advertise_hostname {
            true => Some(host_name()?),
            false => args.external_host,
        },
        flight_port: args.flight_port,
        grpc_port: args.grpc_port,
        health_port: (args.health_port != 0).then_some(args.health_port),
        slots: args.slots,
        memory_limit: args.memory_limit,
        work_dir: args.work_dir,
        id: args.id,
        heartbeat_interval: Duration::from_secs(args.heartbeat_interval.max(1)),
        connect_timeout: Duration::from_secs(args.connect_timeout),
        cluster_secret: args.cluster_secret.load()?,
        scheduler_tls: match parsed.scheme() {
            "https" => Some(trusted(args.ca_file.as_deref())?),
            _ => None,
        },
        tls: match server_tls(args.tls_cert.as_deref(), args.tls_key.as_deref())? {
            Some(server) => Some(ExecutorTls {
                server,
                peers: trusted(args.ca_file.as_deref())?,
            }),
            None => None,
        },
        ..ExecutorOptions::default()
    };
    quiver_executor::run(options, factory).await?;
    Ok(ExitCode::SUCCESS)
}

/// This machine's host name, as the kernel knows it.
fn host_name() -> anyhow::Result<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty());
    name.ok_or_else(|| {
        UsageError("--advertise-hostname: cannot read this machine's host name; use --external-host".into()).into()
    })
}

/// The session factory of this process, from its config file: a cluster
/// process's, or the embedded cluster's (which runs on the user's machine
/// and allows any local path). `warehouse` is the default of
/// `quiver.warehouse_dir` when the config file does not set it.
pub(super) fn factory(
    config: Option<&Path>,
    local_paths: LocalPaths,
    warehouse: Option<String>,
) -> anyhow::Result<SessionFactory> {
    const WAREHOUSE_KEY: &str = "quiver.warehouse_dir";
    let mut settings = Settings::load(config)?;
    if let Some(dir) = warehouse
        && settings.get(WAREHOUSE_KEY).is_none()
    {
        settings.set(WAREHOUSE_KEY, dir);
    }
    Ok(SessionFactory::with_local_paths(&settings, local_paths)?)
}
