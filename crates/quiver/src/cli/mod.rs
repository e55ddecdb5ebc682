//! Command-line parsing and dispatch.

mod config;
mod describe;
mod fs;
mod health;
mod jobs;
mod servers;
mod shell;
mod submit;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use quiver_core::config::Settings;
use quiver_core::output::OutputFormat;

/// Quiver: a distributed SQL and DataFrame engine on Apache Arrow.
///
/// Start a cluster with `quiver scheduler` and `quiver executor`, then run SQL
/// with `quiver submit` or `quiver sql`. Without a scheduler (no --scheduler,
/// no QUIVER_SCHEDULER), `submit` and `sql` run everything in this process.
#[derive(Debug, Parser)]
#[command(name = "quiver", version, max_term_width = 100)]
pub struct Cli {
    /// Config file (TOML) with `s3.*` storage keys and session settings.
    #[arg(long, global = true, env = "QUIVER_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a scheduler (the spark-master): gRPC, REST API and web UI on one port.
    Scheduler(servers::SchedulerArgs),
    /// Run an executor (a spark-worker) for a scheduler.
    Executor(servers::ExecutorArgs),
    /// Run a SQL script as one job and print its results.
    Submit(submit::SubmitArgs),
    /// An interactive SQL shell, or run SQL with -e / -f.
    Sql(shell::SqlArgs),
    /// List, show and cancel jobs on a scheduler.
    #[command(subcommand)]
    Jobs(jobs::JobsCommand),
    /// Buckets and objects in S3: `mb`, `ls`, `cp` (as `mc` or `aws s3`).
    #[command(subcommand)]
    Fs(fs::FsCommand),
    /// Settings Quiver knows: `quiver config keys`.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Probe a scheduler's or executor's health endpoint (the containers' health check).
    Health(health::HealthArgs),
}

/// An error that is the user's to fix (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Parses the command line (exits on `--help` or bad flags).
pub fn parse() -> Cli {
    Cli::parse()
}

/// Runs the command and turns its outcome into an exit code.
pub async fn run(cli: Cli) -> ExitCode {
    let default_log = match cli.command {
        Command::Scheduler(_) | Command::Executor(_) => "info",
        // deltalake warns about metrics it could not collect; users cannot act on that.
        _ => "warn,deltalake_core=error",
    };
    quiver_core::logging::init(default_log);
    let result = match cli.command {
        Command::Scheduler(args) => servers::scheduler(args, cli.config.as_deref()).await,
        Command::Executor(args) => servers::executor(args, cli.config.as_deref()).await,
        Command::Submit(args) => submit::run(args, cli.config.as_deref()).await,
        Command::Sql(args) => shell::run(args, cli.config.as_deref()).await,
        Command::Jobs(command) => jobs::run(command).await,
        Command::Fs(command) => fs::run(command, cli.config.as_deref()).await,
        Command::Config(command) => config::run(command),
        Command::Health(args) => health::run(args).await,
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            let text = quiver_core::secret::redact(&format!("{err:#}")).into_owned();
            eprintln!("quiver: {text}");
            let usage = err.chain().any(|e| {
                e.is::<UsageError>()
                    || e.is::<quiver_core::config::ConfigError>()
                    || e.is::<quiver_core::script::ScriptError>()
                    || e.is::<quiver::client::ClientError>()
                        && matches!(
                            e.downcast_ref::<quiver::client::ClientError>(),
                            Some(quiver::client::ClientError::BadAddress(_))
                        )
            });
            ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}

/// `--conf key=value` / `--param key=value` arguments as settings.
fn pairs(values: &[String], flag: &str) -> anyhow::Result<Settings> {
    Settings::parse_pairs(values).map_err(|e| UsageError(format!("{flag}: {e}")).into())
}

fn parse_format(s: &str) -> Result<OutputFormat, String> {
    s.parse()
}

/// The token from `QUIVER_TOKEN`, if set.
fn token_from_env() -> Option<String> {
    std::env::var(quiver::TOKEN_ENV).ok().filter(|t| !t.trim().is_empty())
}
