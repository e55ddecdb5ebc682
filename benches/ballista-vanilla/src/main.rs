//! Ballista 55 as it ships: its scheduler, executors and client with their
//! default settings, built from the same crates Quiver links.
//!
//! This is the "vanilla" baseline of `benches/tpch/run.py`. Nothing here is
//! Quiver's: no extension codecs, no session defaults, no scheduler tuning.
//! The only settings given are the ones a user must give (addresses, ports,
//! task slots, work directory), so the numbers show what Ballista's defaults
//! cost and what Quiver's changes buy.
//!
//! ```text
//! ballista-vanilla scheduler --port 50050
//! ballista-vanilla executor --scheduler-port 50050 --port 50051 --grpc-port 50052 --slots 1 --work-dir /tmp/e1
//! ballista-vanilla sql --port 50050 -f queries.sql [--timing]
//! ```

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use ballista::prelude::{SessionConfigExt, SessionContextExt};
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::start_server;
use clap::{Parser, Subcommand};
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::DFParser;

/// Ballista's executor binary ships with mimalloc (its default
/// `build-binary` feature); the baseline keeps it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(version, about = "Ballista 55 with default settings (benchmark baseline)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Ballista's scheduler with `SchedulerConfig::default()` on 127.0.0.1.
    Scheduler {
        #[arg(long, default_value_t = 50050)]
        port: u16,
    },
    /// Ballista's executor with `ExecutorProcessConfig::default()` on 127.0.0.1.
    Executor {
        #[arg(long, default_value_t = 50050)]
        scheduler_port: u16,
        /// Arrow Flight port (shuffle reads and results).
        #[arg(long, default_value_t = 50051)]
        port: u16,
        #[arg(long, default_value_t = 50052)]
        grpc_port: u16,
        /// Concurrent task slots (Ballista's "vcores").
        #[arg(long, default_value_t = 1)]
        slots: usize,
        #[arg(long)]
        work_dir: Option<PathBuf>,
    },
    /// Runs the statements of a SQL file through `SessionContext::remote`,
    /// printing each SELECT's result as CSV (or, with `--timing`, only
    /// `Elapsed N seconds` per statement).
    Sql {
        #[arg(long, default_value_t = 50050)]
        port: u16,
        #[arg(short = 'f', long)]
        file: PathBuf,
        #[arg(long)]
        timing: bool,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    // Ballista logs through the `log` crate; its binaries print at info level
    // to stderr, and so does this one (RUST_LOG overrides).
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    // Ballista's own binaries run with a 32 MiB thread stack: deep plans
    // recurse a lot. Do the same so the baseline fails where they would.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(32 * 1024 * 1024)
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(run(cli.command))
}

async fn run(command: Command) -> Result<()> {
    match command {
        Command::Scheduler { port } => {
            let config = SchedulerConfig {
                bind_port: port,
                external_host: "127.0.0.1".into(),
                ..SchedulerConfig::default()
            };
            let cluster = BallistaCluster::new_from_config(&config)
                .await
                .context("creating the in-memory cluster state")?;
            let addr = format!("127.0.0.1:{port}").parse()?;
            start_server(cluster, addr, Arc::new(config))
                .await
                .context("running the Ballista scheduler")
        }
        Command::Executor {
            scheduler_port,
            port,
            grpc_port,
            slots,
            work_dir,
        } => {
            let config = ExecutorProcessConfig {
                external_host: Some("127.0.0.1".into()),
                port,
                grpc_port,
                scheduler_host: "127.0.0.1".into(),
                scheduler_port,
                vcores: slots,
                work_dir: work_dir.map(|p| p.display().to_string()),
                ..ExecutorProcessConfig::default()
            };
            start_executor_process(Arc::new(config))
                .await
                .context("running the Ballista executor")
        }
        Command::Sql { port, file, timing } => {
            let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            let state = SessionStateBuilder::new()
                .with_config(SessionConfig::new_with_ballista())
                .with_default_features()
                .build();
            let ctx = SessionContext::remote_with_state(&format!("df://127.0.0.1:{port}"), state)
                .await
                .context("connecting to the Ballista scheduler")?;
            let statements = DFParser::parse_sql(&text).context("parsing the SQL file")?;
            let mut stdout = std::io::stdout().lock();
            for statement in statements {
                let started = Instant::now();
                let plan = ctx.state().statement_to_plan(statement).await?;
                let batches = ctx.execute_logical_plan(plan).await?.collect().await?;
                let elapsed = started.elapsed().as_secs_f64();
                if timing {
                    writeln!(stdout, "Elapsed {elapsed:.3} seconds")?;
                } else if batches.iter().any(|b| b.num_columns() > 0) {
                    let mut writer = arrow::csv::WriterBuilder::new().with_header(true).build(&mut stdout);
                    for batch in &batches {
                        writer.write(batch)?;
                    }
                }
            }
            Ok(())
        }
    }
}
