//! `quiver jobs list | show ID | cancel ID`, over the scheduler's REST API.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use comfy_table::{Table, presets::ASCII_MARKDOWN};
use quiver::client::ApiClient;
use quiver_core::api::{JobDetail, JobSummary};

use super::UsageError;

#[derive(Debug, Args)]
pub struct Target {
    /// The scheduler, as HOST:PORT (https://HOST:PORT when it serves TLS).
    #[arg(long, env = "QUIVER_SCHEDULER")]
    scheduler: Option<String>,
}

impl Target {
    fn client(&self) -> anyhow::Result<ApiClient> {
        let address = self
            .scheduler
            .as_deref()
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| {
                UsageError("jobs live on a scheduler: pass --scheduler HOST:PORT or set QUIVER_SCHEDULER".into())
            })?;
        Ok(ApiClient::new(address, super::token_from_env())?)
    }
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// List jobs, newest first.
    List {
        #[command(flatten)]
        target: Target,
        /// Only jobs in this state (queued, running, succeeded, failed, cancelled).
        #[arg(long)]
        state: Option<String>,
        /// Only jobs whose name or id contains this.
        #[arg(long)]
        name: Option<String>,
        /// How many jobs.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one job: its statements, queries and stages.
    Show {
        #[command(flatten)]
        target: Target,
        /// The job's id.
        id: String,
        /// Print the full record as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Cancel a job.
    Cancel {
        #[command(flatten)]
        target: Target,
        /// The job's id.
        id: String,
    },
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(ASCII_MARKDOWN);
    t.set_header(header.iter().copied());
    t
}

fn duration(ms: Option<u64>) -> String {
    match ms {
        None => "-".into(),
        Some(ms) if ms < 60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        Some(ms) => format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60),
    }
}

fn time(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .map(|t| t.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

fn summary_row(s: &JobSummary) -> Vec<String> {
    vec![
        s.id.clone(),
        s.name.clone(),
        s.source.to_string(),
        s.state.to_string(),
        time(s.submitted_at),
        duration(s.duration_ms),
        format!("{}/{}", s.progress.tasks_done, s.progress.tasks_total),
    ]
}

pub async fn run(command: JobsCommand) -> anyhow::Result<ExitCode> {
    match command {
        JobsCommand::List {
            target,
            state,
            name,
            limit,
            json,
        } => {
            let api = target.client()?;
            let mut query = vec![("limit", limit.to_string())];
            if let Some(s) = state {
                query.push(("state", s));
            }
            if let Some(n) = name {
                query.push(("q", n));
            }
            let list = api.jobs(&query).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                let mut t = table(&["id", "name", "source", "state", "submitted", "duration", "tasks"]);
                for s in &list.jobs {
                    t.add_row(summary_row(s));
                }
                println!("{t}");
                eprintln!("{} of {} jobs", list.jobs.len(), list.total);
            }
        }
        JobsCommand::Show { target, id, json } => {
            let api = target.client()?;
            let detail = api.job(&id).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&detail)?);
            } else {
                print!("{}", show(&detail));
            }
        }
        JobsCommand::Cancel { target, id } => {
            let api = target.client()?;
            let s = api.cancel(&id).await?;
            eprintln!("job {} is {}", s.id, s.state);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn show(d: &JobDetail) -> String {
    let s = &d.summary;
    let mut out = format!(
        "job {}  {}  ({}, {})\nsubmitted {}  duration {}  tasks {}/{}  stages {}/{}\n",
        s.id,
        s.name,
        s.source,
        s.state,
        time(s.submitted_at),
        duration(s.duration_ms),
        s.progress.tasks_done,
        s.progress.tasks_total,
        s.progress.stages_done,
        s.progress.stages_total
    );
    if let Some(e) = &s.error {
        out.push_str(&format!("error: {e}\n"));
    }
    if !d.statements.is_empty() {
        let mut t = table(&["#", "line", "state", "statement", "outcome"]);
        for st in &d.statements {
            t.add_row(vec![
                st.index.to_string(),
                st.line.to_string(),
                st.state.to_string(),
                quiver_core::script::short_first_line(&st.sql, 60),
                st.error.clone().or_else(|| st.summary.clone()).unwrap_or_default(),
            ]);
        }
        out.push_str(&format!("\n{t}\n"));
    }
    for q in &d.queries {
        out.push_str(&format!(
            "\nquery {} ({}){}\n",
            q.id,
            q.state,
            q.statement.map(|n| format!(" for statement {n}")).unwrap_or_default()
        ));
        let mut t = table(&[
            "stage",
            "state",
            "tasks",
            "rows in",
            "rows out",
            "shuffle write",
            "spill",
            "executors",
        ]);
        for st in &q.stages {
            let mut executors: Vec<&str> = st.tasks.iter().filter_map(|t| t.executor_id.as_deref()).collect();
            executors.sort_unstable();
            executors.dedup();
            t.add_row(vec![
                st.id.to_string(),
                st.state.to_string(),
                format!("{}/{}", st.progress.tasks_done, st.progress.tasks_total),
                st.metrics.input_rows.to_string(),
                st.metrics.output_rows.to_string(),
                bytes(st.metrics.shuffle_write_bytes),
                bytes(st.metrics.spill_bytes),
                executors.join(", "),
            ]);
        }
        out.push_str(&format!("{t}\n"));
    }
    out
}

fn bytes(n: u64) -> String {
    bytesize::ByteSize::b(n).to_string()
}
