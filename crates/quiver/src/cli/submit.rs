//! `quiver submit FILE.sql`: run a script as one job, like `spark-submit`.
//!
//! The script goes to the scheduler's job service, which runs it (cluster
//! deploy mode); this command follows the job, prints each query's rows as
//! its statement finishes, and exits 0 only if every statement succeeded.
//! With no scheduler, an embedded one runs in this process.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use quiver::client::ApiClient;
use quiver::embedded::EmbeddedCluster;
use quiver_core::api::{JobDetail, JobSource, JobState, SubmitJob};
use quiver_core::output::{OutputFormat, render};
use quiver_core::script::{Script, short_first_line};
use quiver_core::storage::LocalPaths;

use super::{UsageError, pairs, parse_format, servers};

#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The SQL script: statements separated by `;`.
    file: PathBuf,
    /// The scheduler, as HOST:PORT (https://HOST:PORT when it serves TLS);
    /// without one, the job runs embedded.
    #[arg(long, env = "QUIVER_SCHEDULER")]
    scheduler: Option<String>,
    /// The job's name (default: the file's name).
    #[arg(long)]
    name: Option<String>,
    /// A session setting, e.g. --conf s3.region=eu-west-1 (repeatable).
    #[arg(long = "conf", value_name = "KEY=VALUE")]
    conf: Vec<String>,
    /// A value for a ${name} placeholder, e.g. --param day=2024-01-31 (repeatable).
    #[arg(long = "param", value_name = "NAME=VALUE")]
    params: Vec<String>,
    /// How to print query results.
    #[arg(long, default_value = "table", value_parser = parse_format)]
    format: OutputFormat,
    /// Seconds the job may run once started; past them it is stopped and
    /// fails (the scheduler's --job-timeout, when set, caps it).
    #[arg(long, value_name = "SECS")]
    timeout: Option<u64>,
    /// Submit, print the job id and return without waiting.
    #[arg(long)]
    detach: bool,
    /// Task slots of the embedded executor (0: one per core).
    #[arg(long, default_value_t = 0)]
    embedded_slots: usize,
}

/// The scheduler to use: the one named, or an embedded one.
pub(super) async fn target(
    scheduler: Option<&str>,
    config: Option<&Path>,
    embedded_slots: usize,
) -> anyhow::Result<(ApiClient, Option<EmbeddedCluster>)> {
    match scheduler.filter(|s| !s.trim().is_empty()) {
        Some(address) => Ok((ApiClient::new(address, super::token_from_env())?, None)),
        None => {
            // Tables without a LOCATION go under the working directory, as
            // Spark's spark-warehouse does.
            let warehouse = std::env::current_dir()
                .map(|d| format!("{}/", d.join("quiver-warehouse").display()))
                .ok();
            let factory = servers::factory(config, LocalPaths::Any, warehouse)?;
            let cluster = EmbeddedCluster::start(factory, embedded_slots)
                .await
                .context("cannot start the embedded cluster")?;
            let api = ApiClient::new(cluster.url(), None)?;
            Ok((api, Some(cluster)))
        }
    }
}

pub async fn run(args: SubmitArgs, config: Option<&Path>) -> anyhow::Result<ExitCode> {
    let sql = std::fs::read_to_string(&args.file)
        .map_err(|e| UsageError(format!("cannot read {}: {e}", args.file.display())))?;
    let params: BTreeMap<String, String> = pairs(&args.params, "--param")?
        .iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
    let conf: BTreeMap<String, String> = pairs(&args.conf, "--conf")?
        .iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
    // Check the script here so a typo fails before anything starts.
    let script = Script::parse(&sql, &params).with_context(|| format!("{}", args.file.display()))?;
    let name = args.name.clone().unwrap_or_else(|| {
        args.file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "sql-job".into())
    });

    let (api, cluster) = target(args.scheduler.as_deref(), config, args.embedded_slots).await?;
    if args.detach && cluster.is_some() {
        return Err(UsageError(
            "--detach needs a scheduler (--scheduler or QUIVER_SCHEDULER): an embedded job ends with this process"
                .into(),
        )
        .into());
    }
    let job = api
        .submit(&SubmitJob {
            sql,
            name: Some(name),
            params,
            conf,
            source: Some(JobSource::Submit),
            timeout_secs: args.timeout,
        })
        .await?;
    if args.detach {
        println!("{}", job.id);
        return Ok(ExitCode::SUCCESS);
    }
    let total = script.statements.len();
    let follow = follow(&api, &job.id, total, args.format);
    tokio::select! {
        result = follow => result,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("\nquiver: interrupted; cancelling job {}", job.id);
            if let Err(e) = api.cancel(&job.id).await {
                eprintln!("quiver: could not cancel job {}: {e}", job.id);
            }
            Ok(ExitCode::from(130))
        }
    }
}

/// Follows a job to its end, printing results as statements finish.
async fn follow(api: &ApiClient, id: &str, total: usize, format: OutputFormat) -> anyhow::Result<ExitCode> {
    let interactive = std::io::stderr().is_terminal();
    let bar = interactive.then(|| {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} tasks  {msg}")
                .expect("valid template"),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    });
    let mut reported = 0usize; // statements whose outcome was printed
    let mut announced = 0usize; // statements announced as started (plain mode)
    loop {
        let detail = api.job(id).await?;
        if let Some(bar) = &bar {
            update_bar(bar, &detail, total);
        } else {
            let start = announced;
            for s in detail
                .statements
                .iter()
                .filter(|s| s.state != JobState::Queued && s.index > start)
            {
                eprintln!("[{}/{total}] running: {}", s.index, short_first_line(&s.sql, 70));
                announced = s.index;
            }
        }
        let done = reported;
        for s in detail
            .statements
            .iter()
            .filter(|s| s.index > done && s.state.is_terminal())
        {
            if s.state != JobState::Succeeded {
                break;
            }
            let print = |text: &str| match &bar {
                Some(bar) => bar.suspend(|| eprintln!("{text}")),
                None => eprintln!("{text}"),
            };
            if s.result_rows.is_some() {
                let (schema, batches) = api.result(id, s.index).await?;
                let text = render(format, &schema, &batches).context("cannot format the result")?;
                let mut out = std::io::stdout().lock();
                match &bar {
                    Some(bar) => bar.suspend(|| out.write_all(text.as_bytes())),
                    None => out.write_all(text.as_bytes()),
                }
                .context("cannot write the result")?;
                let _ = out.flush();
            }
            if let Some(summary) = &s.summary {
                let secs = s
                    .finished_at
                    .zip(s.started_at)
                    .map(|(f, st)| f.saturating_sub(st) as f64 / 1000.0);
                print(&format!(
                    "[{}/{total}] {summary}{}",
                    s.index,
                    secs.map(|t| format!(" in {t:.2}s")).unwrap_or_default()
                ));
            }
            reported = s.index;
        }
        if detail.summary.state.is_terminal() {
            if let Some(bar) = &bar {
                bar.finish_and_clear();
            }
            let secs = detail.summary.duration_ms.unwrap_or(0) as f64 / 1000.0;
            return Ok(match detail.summary.state {
                JobState::Succeeded => {
                    eprintln!("job {id} succeeded in {secs:.2}s");
                    ExitCode::SUCCESS
                }
                state => {
                    let error = detail.summary.error.clone().unwrap_or_else(|| state.to_string());
                    eprintln!("quiver: job {id} {state}: {error}");
                    ExitCode::from(1)
                }
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn update_bar(bar: &ProgressBar, detail: &JobDetail, total: usize) {
    let p = &detail.summary.progress;
    bar.set_length(p.tasks_total.max(1));
    bar.set_position(p.tasks_done);
    let current = detail
        .statements
        .iter()
        .find(|s| s.state == JobState::Running)
        .map(|s| format!("statement {}/{total}: {}", s.index, short_first_line(&s.sql, 70)))
        .unwrap_or_else(|| detail.summary.state.to_string());
    bar.set_message(format!("stages {}/{}  {current}", p.stages_done, p.stages_total));
}
