//! `quiver sql`: an interactive shell like `spark-sql` or `psql`, or one-shot
//! `-e SQL` / `-f FILE`.
//!
//! The shell is a client session: it plans here and runs each query on the
//! cluster (or the embedded one), and the whole session is one job in the
//! scheduler's UI. Meta-commands: `\d`, `\d NAME`, `\timing`, `\format`, `\q`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use quiver::Quiver;
use quiver_core::api::JobSource;
use quiver_core::output::{OutputFormat, render};
use quiver_core::runner::{OutputKind, StatementOutput, StatementRunner};
use quiver_core::script::{Script, Statement, is_complete};
use rustyline::error::ReadlineError;

use super::{UsageError, describe, pairs, parse_format};

#[derive(Debug, Args)]
pub struct SqlArgs {
    /// The scheduler, as HOST:PORT (https://HOST:PORT when it serves TLS);
    /// without one, queries run embedded.
    #[arg(long, env = "QUIVER_SCHEDULER")]
    scheduler: Option<String>,
    /// Run this SQL and exit.
    #[arg(short = 'e', long = "execute", value_name = "SQL", conflicts_with = "file")]
    execute: Option<String>,
    /// Run the statements in this file and exit.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: Option<PathBuf>,
    /// A session setting, e.g. --conf s3.region=eu-west-1 (repeatable).
    #[arg(long = "conf", value_name = "KEY=VALUE")]
    conf: Vec<String>,
    /// A value for a ${name} placeholder (repeatable); -d as in spark-sql.
    #[arg(long = "param", short = 'd', value_name = "NAME=VALUE")]
    params: Vec<String>,
    /// How to print query results.
    #[arg(long, default_value = "table", value_parser = parse_format)]
    format: OutputFormat,
    /// The session's job name.
    #[arg(long, default_value = "quiver-sql")]
    name: String,
    /// Task slots of the embedded executor (0: one per core).
    #[arg(long, default_value_t = 0)]
    embedded_slots: usize,
    /// Print how long each statement took (`Time: 0.123s`) on stderr, as `\timing` does.
    #[arg(long)]
    timing: bool,
}

struct Shell {
    runner: StatementRunner,
    format: OutputFormat,
    timing: bool,
    params: BTreeMap<String, String>,
}

impl Shell {
    /// Runs statements; returns false at the first failure.
    async fn run_text(&self, text: &str, stop_on_error: bool) -> bool {
        let script = match Script::parse(text, &self.params) {
            Ok(s) => s,
            Err(quiver_core::script::ScriptError::Empty) => return true,
            Err(e) => {
                eprintln!("quiver: {e}");
                return false;
            }
        };
        let mut ok = true;
        for statement in &script.statements {
            if !self.run_statement(statement).await {
                ok = false;
                if stop_on_error {
                    break;
                }
            }
        }
        ok
    }

    async fn run_statement(&self, statement: &Statement) -> bool {
        let started = Instant::now();
        match self.runner.run(statement).await {
            Ok(out) => {
                self.print(&out);
                if self.timing {
                    eprintln!("Time: {:.3}s", started.elapsed().as_secs_f64());
                }
                true
            }
            Err(failure) => {
                eprintln!("quiver: {failure}");
                false
            }
        }
    }

    fn print(&self, out: &StatementOutput) {
        match &out.kind {
            OutputKind::Rows => match render(self.format, &out.schema, &out.batches) {
                Ok(text) => {
                    print!("{text}");
                    if self.format == OutputFormat::Table {
                        eprintln!("{}", out.summary);
                    }
                }
                Err(e) => eprintln!("quiver: cannot format the result: {e}"),
            },
            OutputKind::Written { .. } | OutputKind::Done => eprintln!("{}", out.summary),
        }
    }

    /// Handles a `\` command; returns false to quit.
    async fn meta(&mut self, line: &str) -> bool {
        let mut words = line.split_whitespace();
        let command = words.next().unwrap_or("");
        let arg = words.collect::<Vec<_>>().join(" ");
        match command {
            "\\q" | "\\quit" => return false,
            "\\d" => {
                let text = if arg.is_empty() {
                    describe::list_tables(self.runner.context()).await
                } else {
                    describe::describe_table(self.runner.context(), &arg).await
                };
                match text {
                    Ok(t) => print!("{t}"),
                    Err(e) => eprintln!("quiver: {e}"),
                }
            }
            "\\timing" => {
                self.timing = match arg.as_str() {
                    "on" => true,
                    "off" => false,
                    _ => !self.timing,
                };
                eprintln!("Timing is {}.", if self.timing { "on" } else { "off" });
            }
            "\\format" => match arg.parse() {
                Ok(f) => {
                    self.format = f;
                    eprintln!("Output format is {f}.");
                }
                Err(e) => eprintln!("quiver: {e}"),
            },
            "\\?" | "\\h" | "\\help" => eprintln!("{HELP}"),
            other => eprintln!("quiver: unknown command {other}; \\? lists the commands"),
        }
        true
    }
}

const HELP: &str = "\
Statements end with ';' and may span lines.
  \\d              list tables and views
  \\d NAME         describe a table: columns, format, location
  \\timing [on|off] show how long each statement takes
  \\format table|csv|json  how results are printed
  \\q              quit (also: quit; exit; ctrl-d)";

pub async fn run(args: SqlArgs, config: Option<&Path>) -> anyhow::Result<ExitCode> {
    let settings = pairs(&args.conf, "--conf")?;
    let params: BTreeMap<String, String> = pairs(&args.params, "--param")?
        .iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
    let script_text = match (&args.execute, &args.file) {
        (Some(sql), _) => Some(sql.clone()),
        (None, Some(file)) => Some(
            std::fs::read_to_string(file).map_err(|e| UsageError(format!("cannot read {}: {e}", file.display())))?,
        ),
        (None, None) => None,
    };
    if let Some(text) = &script_text {
        // Fail on a bad script before connecting.
        Script::parse(text, &params).context("the SQL given")?;
    }

    let mut builder = Quiver::builder(args.name.clone())
        .source(JobSource::Shell)
        .settings(&settings)
        .embedded_slots(args.embedded_slots);
    if let Some(config) = config {
        builder = builder.config_file(config);
    }
    builder = match args.scheduler.as_deref().filter(|s| !s.trim().is_empty()) {
        Some(s) => builder.scheduler(s),
        None => builder.embedded(),
    };
    let quiver = builder.connect().await?;
    let runner = StatementRunner::new(quiver.context().clone(), Arc::clone(quiver.storage()));
    let mut shell = Shell {
        runner,
        format: args.format,
        timing: args.timing,
        params,
    };

    let ok = match script_text {
        Some(text) => shell.run_text(&text, true).await,
        None => interactive(&mut shell).await?,
    };
    let close = if ok {
        quiver.finish().await
    } else {
        quiver.fail("a statement failed").await
    };
    if let Err(e) = close {
        tracing::warn!("could not end the session's job: {e}");
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn history_file() -> Option<PathBuf> {
    std::env::var_os("QUIVER_HISTORY_FILE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".quiver_history")))
}

async fn interactive(shell: &mut Shell) -> anyhow::Result<bool> {
    let mut editor = rustyline::DefaultEditor::new().context("cannot start the line editor")?;
    let history = history_file();
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    eprintln!(
        "Quiver {} SQL shell. Statements end with ';'. \\? for help, \\q to quit.",
        env!("CARGO_PKG_VERSION")
    );
    let mut buffer = String::new();
    loop {
        let prompt = if buffer.is_empty() { "quiver> " } else { "   ...> " };
        // The editor blocks; run it off the async workers.
        let (result, back) = tokio::task::spawn_blocking(move || {
            let r = editor.readline(prompt);
            (r, editor)
        })
        .await
        .context("line editor task failed")?;
        editor = back;
        match result {
            Ok(line) => {
                let trimmed = line.trim();
                if buffer.is_empty() && trimmed.starts_with('\\') {
                    let _ = editor.add_history_entry(trimmed);
                    if !shell.meta(trimmed).await {
                        break;
                    }
                    continue;
                }
                if buffer.is_empty()
                    && matches!(
                        trimmed.trim_end_matches(';').to_ascii_lowercase().as_str(),
                        "quit" | "exit"
                    )
                {
                    break;
                }
                if !buffer.is_empty() {
                    buffer.push('\n');
                }
                buffer.push_str(&line);
                if is_complete(&buffer) {
                    let _ = editor.add_history_entry(buffer.as_str());
                    let text = std::mem::take(&mut buffer);
                    shell.run_text(&text, false).await;
                }
            }
            Err(ReadlineError::Interrupted) => {
                buffer.clear();
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e).context("cannot read input"),
        }
    }
    if let Some(h) = &history {
        let _ = editor.save_history(h);
    }
    Ok(true)
}
