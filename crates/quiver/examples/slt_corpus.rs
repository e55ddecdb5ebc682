//! Runs DataFusion's sqllogictest corpus twice per file, on single-node
//! DataFusion (the reference) and on a Quiver cluster, and prints one JSON
//! line per file with both outcomes.
//!
//! Both runs use the same driver: every record's SQL goes through
//! `SessionContext::sql`, is planned and collected, and its rows are turned
//! into text by the corpus's own `convert_batches`; only the session differs
//! (DataFusion's `TestContext` for the file, or a Quiver session on the
//! cluster with the same target partitions, tables and functions). A file
//! that passes single-node and fails on the cluster is therefore a
//! difference the cluster makes.
//!
//! `tests/it/corpus.rs` starts a cluster, runs this program in a working copy
//! of the corpus and compares the outcomes with `tests/slt/corpus/`. By hand:
//!
//! ```text
//! cargo run --example slt_corpus -- --scheduler http://127.0.0.1:50050 \
//!     --work /tmp/corpus/sqllogictest aggregate.slt joins.slt
//! ```
//!
//! `--work` must be a copy of the `datafusion-sqllogictest` crate's
//! `test_files/` and `data/` (the files read and write paths relative to it).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use datafusion::physical_plan::common::collect;
use datafusion::physical_plan::execute_stream;
use datafusion::prelude::SessionContext;
use datafusion_sqllogictest::{
    DFColumnType, DFOutput, DFSqlLogicTestError, DataFusion, TestContext, convert_batches, convert_schema_to_types,
    df_value_validator, is_spark_path, setup_scratch_dir, value_normalizer,
};
use indicatif::ProgressBar;
use quiver::Quiver;
use quiver_core::session::ENGINE_DEFAULTS;
use serde::Serialize;
use sqllogictest::{AsyncDB, DBOutput, MakeConnection, Record, Runner, parse_file, strict_column_validator};

/// Target partitions of both runs, as DataFusion's own runner sets them so
/// that plans (and `EXPLAIN` output) do not depend on the machine.
const TARGET_PARTITIONS: &str = "4";

#[derive(Parser)]
#[command(about = "Run DataFusion's sqllogictest files on single-node DataFusion and on a Quiver cluster")]
struct Args {
    /// The Quiver scheduler to run the cluster side on.
    #[arg(long)]
    scheduler: String,
    /// Access token of the scheduler, if it has one.
    #[arg(long, env = "QUIVER_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Working copy of the corpus: holds `test_files/` and `data/`; the runs
    /// read and write paths relative to it.
    #[arg(long)]
    work: PathBuf,
    /// Time allowed for each file on each side, plus `--seconds-per-record`
    /// for each of its records.
    #[arg(long, default_value = "300")]
    timeout_secs: u64,
    /// Time allowed for each record of a file on top of `--timeout-secs`: a
    /// query on a cluster is a distributed job, and the largest files hold
    /// more than a thousand.
    #[arg(long, default_value = "0.3")]
    seconds_per_record: f64,
    /// Print the corpus's files, one per line, and run nothing.
    #[arg(long)]
    list: bool,
    /// Files to run, relative to `test_files/` (e.g. `aggregate.slt`,
    /// `spark/math/abs.slt`); all of them when empty.
    files: Vec<String>,
}

/// How one file went on one side.
#[derive(Debug, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
enum Outcome {
    /// Every record gave the expected answer.
    Pass { records: usize, seconds: f64 },
    /// Some records failed: each failure's line in the file and its
    /// message, shortened.
    Fail {
        records: usize,
        failures: Vec<(u32, String)>,
        seconds: f64,
    },
    /// The file could not be set up (e.g. the corpus runner skips it).
    Skipped { reason: String },
    /// The file did not finish in time.
    Timeout { seconds: f64 },
}

#[derive(Debug, Serialize)]
struct FileReport {
    file: String,
    reference: Outcome,
    cluster: Outcome,
}

/// The cluster side: a Quiver session, driven exactly as DataFusion's own
/// engine drives its single-node session.
struct ClusterEngine {
    ctx: SessionContext,
    spark: bool,
}

#[async_trait::async_trait]
impl AsyncDB for ClusterEngine {
    type Error = DFSqlLogicTestError;
    type ColumnType = DFColumnType;

    async fn run(&mut self, sql: &str) -> Result<DFOutput, DFSqlLogicTestError> {
        let df = self.ctx.sql(sql).await?;
        let task_ctx = Arc::new(df.task_ctx());
        let plan = df.create_physical_plan().await?;
        let schema = plan.schema();
        let stream = execute_stream(plan, task_ctx)?;
        let types = convert_schema_to_types(stream.schema().fields());
        let batches = collect(stream).await?;
        let rows = convert_batches(&schema, batches, self.spark)?;
        if rows.is_empty() && types.is_empty() {
            Ok(DBOutput::StatementComplete(0))
        } else {
            Ok(DBOutput::Rows { types, rows })
        }
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "quiver"
    }

    async fn sleep(dur: Duration) {
        tokio::time::sleep(dur).await;
    }
}

/// Records run and the failures (line, message).
type Run = (usize, Vec<(u32, String)>);

/// Runs every record of `path` (stopping at `halt`), as DataFusion's runner
/// does: the file goes on after a failed record, and each failure is kept.
async fn run_records<D, M>(runner: &mut Runner<D, M>, path: &Path) -> Result<Run>
where
    D: AsyncDB<ColumnType = DFColumnType>,
    M: MakeConnection<Conn = D>,
{
    runner.add_label("Datafusion");
    runner.with_column_validator(strict_column_validator);
    runner.with_normalizer(value_normalizer);
    runner.with_validator(df_value_validator);
    let records = parse_file::<DFColumnType>(path).with_context(|| format!("parsing {}", path.display()))?;
    let (mut total, mut failures) = (0, Vec::new());
    for record in records {
        if let Record::Halt { .. } = record {
            break;
        }
        let counted = matches!(record, Record::Query { .. } | Record::Statement { .. });
        total += usize::from(counted);
        if let Err(e) = runner.run_async(record).await {
            failures.push((e.location().line(), shorten(&e.to_string())));
        }
    }
    Ok((total, failures))
}

/// The first lines of an error, enough to tell failures apart in a report.
fn shorten(message: &str) -> String {
    let text: Vec<&str> = message.lines().filter(|l| !l.trim().is_empty()).take(4).collect();
    let text = text.join(" | ");
    match text.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text,
    }
}

fn outcome(result: Result<Run>, started: Instant) -> Outcome {
    let seconds = (started.elapsed().as_secs_f64() * 10.0).round() / 10.0;
    match result {
        Ok((records, failures)) if failures.is_empty() => Outcome::Pass { records, seconds },
        Ok((records, failures)) => Outcome::Fail {
            records,
            failures,
            seconds,
        },
        // Line 0: the file as a whole (it could not be parsed or set up).
        Err(e) => Outcome::Fail {
            records: 0,
            failures: vec![(0, shorten(&format!("{e:#}")))],
            seconds,
        },
    }
}

async fn reference(relative: &Path, path: &Path) -> Outcome {
    let Some(test_ctx) = TestContext::try_new_for_test_file(relative).await else {
        return Outcome::Skipped {
            reason: "DataFusion's runner skips it in this build".into(),
        };
    };
    if let Err(e) = setup_scratch_dir(relative) {
        return Outcome::Skipped {
            reason: format!("scratch directory: {e}"),
        };
    }
    let started = Instant::now();
    let ctx = test_ctx.session_ctx().clone();
    let relative = relative.to_owned();
    let mut runner = Runner::new(move || {
        let (ctx, relative) = (ctx.clone(), relative.clone());
        async move { Ok(DataFusion::new(ctx, relative, ProgressBar::hidden())) }
    });
    let result = run_records(&mut runner, path).await;
    outcome(result, started)
}

/// Gives the cluster session what the corpus's `TestContext` gives the
/// single-node one for this file: its tables and its extra functions. The
/// returned context owns the files some of those tables read (a temporary
/// directory), so the caller keeps it until the file has run.
async fn copy_test_context(relative: &Path, quiver: &SessionContext) -> Result<Option<TestContext>> {
    let Some(test_ctx) = TestContext::try_new_for_test_file(relative).await else {
        return Ok(None);
    };
    let source = test_ctx.session_ctx();
    if let Some(schema) = source.catalog("datafusion").and_then(|c| c.schema("public")) {
        for name in schema.table_names() {
            if let Some(table) = schema.table(&name).await? {
                quiver.register_table(name.as_str(), table)?;
            }
        }
    }
    let state = source.state();
    let have = quiver.state();
    for (name, udf) in state.scalar_functions() {
        if !have.scalar_functions().contains_key(name) {
            quiver.register_udf(udf.as_ref().clone());
        }
    }
    for (name, udaf) in state.aggregate_functions() {
        if !have.aggregate_functions().contains_key(name) {
            quiver.register_udaf(udaf.as_ref().clone());
        }
    }
    for (name, udwf) in state.window_functions() {
        if !have.window_functions().contains_key(name) {
            quiver.register_udwf(udwf.as_ref().clone());
        }
    }
    Ok(Some(test_ctx))
}

async fn cluster(args: &Args, relative: &Path, path: &Path) -> Outcome {
    if let Err(e) = setup_scratch_dir(relative) {
        return Outcome::Skipped {
            reason: format!("scratch directory: {e}"),
        };
    }
    let started = Instant::now();
    let mut builder = Quiver::builder(format!("slt {}", relative.display()))
        .scheduler(args.scheduler.clone())
        .conf("datafusion.execution.target_partitions", TARGET_PARTITIONS);
    // Where Quiver's defaults give Spark's answer instead of DataFusion's
    // (`ENGINE_DEFAULTS`), the corpus, written for DataFusion, gets
    // DataFusion's: it measures what the cluster changes, not those choices.
    let datafusion = datafusion::config::ConfigOptions::default().entries();
    for (key, _) in ENGINE_DEFAULTS.iter().filter(|(k, _)| k.starts_with("datafusion.")) {
        if let Some(value) = datafusion.iter().find(|e| e.key == *key).and_then(|e| e.value.clone()) {
            builder = builder.conf(*key, value);
        }
    }
    // As DataFusion's runner gives them: Spark's dialect and function library.
    if is_spark_path(relative) {
        builder = builder
            .conf("datafusion.sql_parser.dialect", "Spark")
            .conf("quiver.spark_functions", "true");
    }
    if let Some(token) = &args.token {
        builder = builder.token(token.clone());
    }
    let quiver = match builder.connect().await {
        Ok(q) => q,
        Err(e) => return outcome(Err(anyhow::anyhow!("connecting to {}: {e}", args.scheduler)), started),
    };
    let _test_files = match copy_test_context(relative, quiver.context()).await {
        Ok(test_ctx) => test_ctx,
        Err(e) => return outcome(Err(e.context("copying the test context's tables")), started),
    };
    let ctx = quiver.context().clone();
    let spark = is_spark_path(relative);
    let mut runner = Runner::new(move || {
        let ctx = ctx.clone();
        async move { Ok(ClusterEngine { ctx, spark }) }
    });
    let result = run_records(&mut runner, path).await;
    let _ = quiver.finish().await;
    outcome(result, started)
}

fn corpus_files(test_files: &Path) -> Result<Vec<String>> {
    let mut files = Vec::new();
    let mut dirs = vec![test_files.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "scratch") {
                    dirs.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "slt") {
                let relative = path.strip_prefix(test_files)?;
                files.push(relative.to_string_lossy().into_owned());
            }
        }
    }
    files.sort();
    Ok(files)
}

async fn timed(limit: Duration, run: impl Future<Output = Outcome>) -> Outcome {
    let started = Instant::now();
    tokio::time::timeout(limit, run)
        .await
        .unwrap_or_else(|_| Outcome::Timeout {
            seconds: started.elapsed().as_secs_f64().round(),
        })
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    std::env::set_current_dir(&args.work).with_context(|| format!("entering {}", args.work.display()))?;
    let test_files = PathBuf::from("test_files");
    if !test_files.is_dir() {
        bail!(
            "{} has no test_files/: pass a copy of the datafusion-sqllogictest crate's test_files/ and data/",
            args.work.display()
        );
    }
    let files = if args.files.is_empty() {
        corpus_files(&test_files)?
    } else {
        args.files.clone()
    };
    if args.list {
        for file in files {
            println!("{file}");
        }
        return Ok(());
    }
    for file in files {
        let path = test_files.join(&file);
        if !path.is_file() {
            bail!("{} is not a file of the corpus", path.display());
        }
        let records = parse_file::<DFColumnType>(&path).map_or(0, |r| r.len());
        let limit = Duration::from_secs(args.timeout_secs)
            + Duration::from_secs_f64(args.seconds_per_record.max(0.0) * records as f64);
        let relative = PathBuf::from(&file);
        // Which side is running, for a caller whose runner died mid-file.
        eprintln!("slt_corpus: reference {file}");
        let reference = timed(limit, reference(&relative, &path)).await;
        eprintln!("slt_corpus: cluster {file}");
        let cluster = timed(limit, cluster(&args, &relative, &path)).await;
        let line = serde_json::to_string(&FileReport {
            file,
            reference,
            cluster,
        })?;
        println!("{line}");
    }
    Ok(())
}
