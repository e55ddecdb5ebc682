//! DataFusion's own sqllogictest corpus (the `datafusion-sqllogictest`
//! crate's `test_files/`, read from the crate's copy) on the shared cluster,
//! each file against single-node DataFusion as the reference.
//!
//! `examples/slt_corpus.rs` runs the files and reports both outcomes; this
//! test compares them with `tests/slt/corpus/expected.toml`:
//!
//! * a file that passes single-node must pass on the cluster, unless it is
//!   listed under `[cluster_only]` (a Quiver gap, with its reason) or
//!   `[by_design]` (not runnable on a cluster, with why);
//! * a listed file that now passes on the cluster fails the test too, so the
//!   lists stay true.
//!
//! The suite runs the files of `suite` in `expected.toml`. With
//! `QUIVER_SLT_CORPUS=all` it runs every file and rewrites
//! `tests/slt/corpus/REPORT.md` and `results.tsv` (`scripts/slt-corpus`);
//! with `QUIVER_SLT_CORPUS=report` it renders `REPORT.md` again from
//! `results.tsv` and the reasons in `expected.toml`, without running; with
//! `QUIVER_SLT_CORPUS=files:a.slt,b.slt` it runs those files and puts their
//! rows into the saved report (after a fix, without a half-hour run).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde::Deserialize;
use serde_json::Value;

use crate::harness::shared;

const CORPUS_CRATE: &str = "datafusion-sqllogictest";

#[derive(Deserialize)]
struct Expected {
    suite: Vec<String>,
    #[serde(default)]
    cluster_only: BTreeMap<String, String>,
    #[serde(default)]
    by_design: BTreeMap<String, String>,
}

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/slt/corpus")
}

fn expected() -> Expected {
    let path = corpus_dir().join("expected.toml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The corpus crate's directory in cargo's registry and its version, from
/// `cargo metadata` (run once per test process: the harness's clusters need
/// the directory too).
pub fn corpus_source() -> &'static (PathBuf, String) {
    static SOURCE: std::sync::OnceLock<(PathBuf, String)> = std::sync::OnceLock::new();
    SOURCE.get_or_init(read_corpus_source)
}

fn read_corpus_source() -> (PathBuf, String) {
    let out = cargo()
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("running cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata's JSON");
    let package = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == CORPUS_CRATE)
        .unwrap_or_else(|| panic!("{CORPUS_CRATE} is not in the dependency graph"));
    let manifest = PathBuf::from(package["manifest_path"].as_str().unwrap());
    let version = package["version"].as_str().unwrap().to_owned();
    (manifest.parent().unwrap().to_owned(), version)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap_or_else(|e| panic!("{}: {e}", from.display())) {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// `cargo`, without the variables cargo sets for a test (`CARGO_PKG_NAME`,
/// `CARGO_MANIFEST_DIR`, ...): a build script that asks to be re-run when one
/// of them changes (ring's does) would otherwise be re-run, and every crate
/// above it rebuilt, once by this cargo and again by the next `cargo test`.
fn cargo() -> Command {
    let mut cmd = Command::new(env!("CARGO"));
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let set_for_tests = [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_BIN_",
            "CARGO_CRATE_",
            "CARGO_PRIMARY_",
        ]
        .iter()
        .any(|p| key.starts_with(p))
            || key == "OUT_DIR";
        if set_for_tests {
            cmd.env_remove(&*key);
        }
    }
    cmd
}

/// The runner, built now if `cargo test` did not build examples (e.g. `--test it`).
/// Built with the workspace's features, as `cargo test --workspace` (the
/// suite) builds it, so that nothing is built twice.
fn runner_bin() -> PathBuf {
    let status = cargo()
        .args(["build", "--quiet", "--workspace", "--example", "slt_corpus"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("running cargo build --example slt_corpus");
    assert!(status.success(), "cargo build --example slt_corpus failed");
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = profile_dir.join("examples/slt_corpus");
    assert!(bin.is_file(), "{} was not built", bin.display());
    bin
}

/// One file's outcome on one side, from the runner's JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Side {
    Pass,
    /// The failed records: line in the file (0: the whole file) and message.
    Fail(BTreeMap<u64, String>),
    Skipped(String),
    Timeout,
}

impl Side {
    fn from_json(v: &Value) -> Side {
        match v["outcome"].as_str() {
            Some("pass") => Side::Pass,
            Some("fail") => Side::Fail(
                v["failures"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|f| (f[0].as_u64().unwrap_or(0), f[1].as_str().unwrap_or_default().to_owned()))
                    .collect(),
            ),
            Some("skipped") => Side::Skipped(v["reason"].as_str().unwrap_or_default().to_owned()),
            Some("timeout") => Side::Timeout,
            other => panic!("unknown outcome {other:?} in {v}"),
        }
    }

    fn word(&self) -> &'static str {
        match self {
            Side::Pass => "pass",
            Side::Fail(_) => "fail",
            Side::Skipped(_) => "skipped",
            Side::Timeout => "timeout",
        }
    }

    fn failures(&self) -> usize {
        match self {
            Side::Fail(f) => f.len(),
            _ => 0,
        }
    }
}

struct FileResult {
    file: String,
    reference: Side,
    cluster: Side,
    records: u64,
    seconds: (f64, f64),
}

impl FileResult {
    /// Records that pass single-node and fail on the cluster (line 0: the
    /// whole file, when the cluster side did not finish or set up).
    fn cluster_only(&self) -> BTreeMap<u64, String> {
        match (&self.reference, &self.cluster) {
            (Side::Skipped(_), _) | (_, Side::Pass) => BTreeMap::new(),
            (Side::Timeout, Side::Timeout) => BTreeMap::new(),
            (_, Side::Timeout) => BTreeMap::from([(0, "timed out on the cluster".to_owned())]),
            (_, Side::Skipped(why)) => BTreeMap::from([(0, format!("skipped on the cluster: {why}"))]),
            (Side::Fail(reference), Side::Fail(cluster)) => cluster
                .iter()
                .filter(|(line, _)| !reference.contains_key(line))
                .map(|(l, m)| (*l, m.clone()))
                .collect(),
            (_, Side::Fail(cluster)) => cluster.clone(),
        }
    }
}

/// Where a file lands in the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Category {
    PassBoth,
    ClusterOnly,
    ByDesign,
    Unlisted,
    FailBoth,
    NotRun,
}

impl Category {
    fn title(self) -> &'static str {
        match self {
            Category::PassBoth => "passed on both",
            Category::ClusterOnly => "records that pass single-node fail on the cluster: known Quiver gaps",
            Category::ByDesign => {
                "records that pass single-node fail on the cluster: not runnable on a cluster by design"
            }
            Category::Unlisted => "records that pass single-node fail on the cluster: NOT LISTED",
            Category::FailBoth => "records fail single-node too, the same ones on the cluster (out of scope)",
            Category::NotRun => "not run (DataFusion's runner skips it)",
        }
    }
}

/// One file's outcome, as the report and `results.tsv` keep it.
struct Row {
    file: String,
    reference: String,
    cluster: String,
    records: u64,
    reference_failed: u64,
    cluster_only: u64,
    seconds: (f64, f64),
    /// The first record that passes single-node and fails on the cluster.
    first_cluster_only: String,
    /// The first record that fails single-node (or why the file was skipped).
    first_reference: String,
}

fn first(failures: &BTreeMap<u64, String>) -> String {
    failures
        .iter()
        .next()
        .map(|(line, e)| format!("line {line}: {e}"))
        .unwrap_or_default()
}

/// Keeps a message on one line of a table.
fn one_line(text: &str) -> String {
    text.replace(['\t', '\n'], " ")
}

impl From<&FileResult> for Row {
    fn from(r: &FileResult) -> Row {
        let only = r.cluster_only();
        Row {
            file: r.file.clone(),
            reference: r.reference.word().to_owned(),
            cluster: r.cluster.word().to_owned(),
            records: r.records,
            reference_failed: r.reference.failures() as u64,
            cluster_only: only.len() as u64,
            seconds: r.seconds,
            first_cluster_only: one_line(&first(&only)),
            first_reference: one_line(&match &r.reference {
                Side::Fail(f) => first(f),
                Side::Skipped(why) => why.clone(),
                other => other.word().to_owned(),
            }),
        }
    }
}

const TSV_HEADER: &str = "file\treference\tcluster\trecords\treference_failed\tcluster_only\treference_s\tcluster_s\tfirst_cluster_only\tfirst_reference";

impl Row {
    fn to_tsv(&self) -> String {
        format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            self.file,
            self.reference,
            self.cluster,
            self.records,
            self.reference_failed,
            self.cluster_only,
            self.seconds.0,
            self.seconds.1,
            self.first_cluster_only,
            self.first_reference
        )
    }

    /// A line of `results.tsv` (the error columns may be missing).
    fn from_tsv(line: &str) -> Row {
        let c: Vec<&str> = line.split('\t').collect();
        let num = |i: usize| c.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        let text = |i: usize| c.get(i).map_or(String::new(), |v| (*v).to_owned());
        Row {
            file: text(0),
            reference: text(1),
            cluster: text(2),
            records: num(3) as u64,
            reference_failed: num(4) as u64,
            cluster_only: num(5) as u64,
            seconds: (num(6), num(7)),
            first_cluster_only: text(8),
            first_reference: text(9),
        }
    }
}

fn categorize(r: &Row, expected: &Expected) -> Category {
    if r.reference == "skipped" {
        return Category::NotRun;
    }
    if r.cluster_only == 0 {
        return if r.reference == "pass" {
            Category::PassBoth
        } else {
            Category::FailBoth
        };
    }
    if expected.by_design.contains_key(&r.file) {
        Category::ByDesign
    } else if expected.cluster_only.contains_key(&r.file) {
        Category::ClusterOnly
    } else {
        Category::Unlisted
    }
}

/// Parses one line of the runner's output.
fn file_result(line: &str) -> FileResult {
    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    let seconds = |side: &Value| side["seconds"].as_f64().unwrap_or(0.0);
    FileResult {
        file: v["file"].as_str().unwrap().to_owned(),
        reference: Side::from_json(&v["reference"]),
        cluster: Side::from_json(&v["cluster"]),
        records: v["reference"]["records"].as_u64().unwrap_or(0),
        seconds: (seconds(&v["reference"]), seconds(&v["cluster"])),
    }
}

/// The outcome of a file the runner died on (a crash or the kernel's
/// out-of-memory killer), on the side it was running, so that one file
/// cannot end the run.
fn died_on(file: &str, stderr: &str, status: std::process::ExitStatus) -> FileResult {
    let died = format!("the runner died while running this file ({status})");
    let on_cluster = stderr
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("slt_corpus: "))
        .is_some_and(|l| l == format!("cluster {file}"));
    let (reference, cluster) = if on_cluster {
        (Side::Pass, Side::Fail(BTreeMap::from([(0, died)])))
    } else {
        (
            Side::Fail(BTreeMap::from([(0, died)])),
            Side::Skipped("the runner died on the reference side".to_owned()),
        )
    };
    FileResult {
        file: file.to_owned(),
        reference,
        cluster,
        records: 0,
        seconds: (0.0, 0.0),
    }
}

/// Runs `files` (every file of the corpus when empty) through the runner,
/// starting it again after the file it died on, if it dies.
fn run_corpus(source: &Path, files: &[String]) -> Vec<FileResult> {
    let s = shared();
    let work = tempfile::tempdir().unwrap();
    let copy = work.path().join("sqllogictest");
    copy_dir(&source.join("test_files"), &copy.join("test_files"));
    copy_dir(&source.join("data"), &copy.join("data"));
    let bin = runner_bin();
    let runner = |files: &[String]| {
        let mut cmd = Command::new(&bin);
        cmd.args(["--scheduler", &s.cluster.url])
            .arg("--work")
            .arg(&copy)
            .args(["--timeout-secs", "60"])
            .args(files)
            .env_remove("QUIVER_SCHEDULER")
            .env("RUST_LOG", "off");
        if let Some(token) = &s.cluster.token {
            cmd.env("QUIVER_TOKEN", token);
        }
        cmd
    };
    let mut remaining: Vec<String> = if files.is_empty() {
        let out = runner(&[]).arg("--list").output().expect("running slt_corpus --list");
        assert!(
            out.status.success(),
            "slt_corpus --list: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    } else {
        files.to_vec()
    };
    // Every failing record of every file, for sorting the failures into
    // classes (the report keeps only the first per file); written as the
    // run goes.
    let raw_path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("slt-corpus.jsonl");
    let mut raw = std::fs::File::create(&raw_path).unwrap();
    eprintln!("slt_corpus's output, every failing record: {}", raw_path.display());
    let stderr_path = work.path().join("runner.stderr");
    let mut results = Vec::new();
    while !remaining.is_empty() {
        let mut child = runner(&remaining)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .expect("running slt_corpus");
        for line in BufReader::new(child.stdout.take().unwrap()).lines() {
            let line = line.expect("reading slt_corpus's output");
            writeln!(raw, "{line}").unwrap();
            let result = file_result(&line);
            remaining.retain(|f| *f != result.file);
            results.push(result);
        }
        let status = child.wait().expect("waiting for slt_corpus");
        let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        if status.success() {
            assert!(
                remaining.is_empty(),
                "slt_corpus ended without reporting on {remaining:?}:\n{stderr}"
            );
            break;
        }
        let Some(file) = remaining.first().cloned() else { break };
        assert!(
            stderr.contains(&format!(" {file}\n")),
            "slt_corpus failed ({status}) before running {file}:\n{stderr}"
        );
        eprintln!("slt_corpus died on {file} ({status}); going on after it");
        remaining.remove(0);
        results.push(died_on(&file, &stderr, status));
    }
    results
}

/// Rewrites `REPORT.md` and `results.tsv` from a run over the whole corpus.
fn write_report(rows: &[Row], expected: &Expected, version: &str, wall: Option<f64>) {
    let mut by: BTreeMap<Category, Vec<&Row>> = BTreeMap::new();
    for r in rows {
        by.entry(categorize(r, expected)).or_default().push(r);
    }
    let count = |c: Category| by.get(&c).map_or(0, Vec::len);
    let records: u64 = rows.iter().map(|r| r.records).sum();
    let reference_ok: u64 = rows
        .iter()
        .filter(|r| r.reference == "pass" || r.reference == "fail")
        .map(|r| r.records - r.reference_failed)
        .sum();
    let cluster_only: u64 = rows.iter().map(|r| r.cluster_only).sum();
    let listed = |c: Category| by.get(&c).map_or(0, |v| v.iter().map(|r| r.cluster_only).sum::<u64>());
    let mut md = String::new();
    md.push_str("# DataFusion's sqllogictest corpus on a Quiver cluster\n\n");
    md.push_str(&format!(
        "Generated by `scripts/slt-corpus` from datafusion-sqllogictest {version}: every file of the \
         crate's `test_files/` run on single-node DataFusion and on a Quiver cluster (a scheduler \
         and two executors, each file in a fresh session, both with 4 target partitions), record \
         by record{}. Raw figures: `results.tsv`.\n\n",
        wall.map_or(String::new(), |w| format!(
            "; wall time {w:.0} s with a debug build on 2 cores"
        ))
    ));
    md.push_str(&format!(
        "{} files, {records} records (statements and queries). {reference_ok} records pass \
         single-node; {} of them ({:.1}%) pass on the cluster too. Of the {cluster_only} that do \
         not, {} are in files listed with a reason as known gaps, {} as not runnable on a cluster \
         by design, {} unlisted.\n\n",
        rows.len(),
        reference_ok - cluster_only,
        100.0 * (reference_ok - cluster_only) as f64 / reference_ok.max(1) as f64,
        listed(Category::ClusterOnly),
        listed(Category::ByDesign),
        listed(Category::Unlisted),
    ));
    md.push_str(
        "Records failing single-node mostly read data the crate does not ship \
         (`../../testing/`, `../core/tests/data/`, `../../parquet-testing/`).\n\n",
    );
    md.push_str("| files | count |\n|---|---:|\n");
    for c in [
        Category::PassBoth,
        Category::ClusterOnly,
        Category::ByDesign,
        Category::Unlisted,
        Category::FailBoth,
        Category::NotRun,
    ] {
        md.push_str(&format!("| {} | {} |\n", c.title(), count(c)));
    }
    for (c, files) in &by {
        md.push_str(&format!("\n## {} ({})\n\n", c.title(), files.len()));
        if *c == Category::PassBoth {
            let names: Vec<String> = files.iter().map(|r| format!("`{}`", r.file)).collect();
            md.push_str(&names.join(", "));
            md.push('\n');
            continue;
        }
        for r in files {
            let why = match c {
                Category::ClusterOnly => format!(
                    "{} of {} records. {}",
                    r.cluster_only, r.records, expected.cluster_only[&r.file]
                ),
                Category::ByDesign => format!(
                    "{} of {} records. {}",
                    r.cluster_only, r.records, expected.by_design[&r.file]
                ),
                Category::Unlisted => format!(
                    "{} of {} records; first: {}",
                    r.cluster_only, r.records, r.first_cluster_only
                ),
                Category::FailBoth => format!(
                    "{} of {} records fail on both; first: {}",
                    r.reference_failed, r.records, r.first_reference
                ),
                Category::NotRun => r.first_reference.clone(),
                Category::PassBoth => String::new(),
            };
            let why: String = why.replace('|', "\\|").chars().take(400).collect();
            md.push_str(&format!("- `{}`: {}\n", r.file, why.trim_end()));
        }
    }
    let mut tsv = format!("{TSV_HEADER}\n");
    for r in rows {
        tsv.push_str(&r.to_tsv());
        tsv.push('\n');
    }
    std::fs::write(corpus_dir().join("REPORT.md"), md).unwrap();
    std::fs::write(corpus_dir().join("results.tsv"), tsv).unwrap();
}

/// The rows of the committed `results.tsv`.
fn saved_rows() -> Vec<Row> {
    let path = corpus_dir().join("results.tsv");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(Row::from_tsv)
        .collect()
}

/// What `QUIVER_SLT_CORPUS` asks for.
#[derive(PartialEq)]
enum Mode {
    /// The files of `suite` in `expected.toml` (the default).
    Suite,
    /// Every file; the report is rewritten.
    All,
    /// No run: `REPORT.md` rendered again from `results.tsv` and
    /// `expected.toml` (after editing the reasons).
    Report,
    /// These files run; their rows replace theirs in the saved report.
    Files(Vec<String>),
}

#[test]
fn datafusion_corpus_answers_alike_on_the_cluster() {
    let expected = expected();
    let mode = match std::env::var("QUIVER_SLT_CORPUS").as_deref() {
        Ok("all") => Mode::All,
        Ok("report") => Mode::Report,
        Ok("") | Err(_) => Mode::Suite,
        Ok(other) => match other.strip_prefix("files:") {
            Some(files) => Mode::Files(
                files
                    .split(',')
                    .map(|f| f.trim().to_owned())
                    .filter(|f| !f.is_empty())
                    .collect(),
            ),
            None => panic!("QUIVER_SLT_CORPUS={other}: expected all, report or files:a.slt,b.slt"),
        },
    };
    let (source, version) = corpus_source();
    let started = Instant::now();
    let rows: Vec<Row> = match mode {
        Mode::Report => saved_rows(),
        Mode::All => run_corpus(source, &[]).iter().map(Row::from).collect(),
        Mode::Files(ref files) => {
            let mut fresh: BTreeMap<String, Row> = run_corpus(source, files)
                .iter()
                .map(|r| (r.file.clone(), Row::from(r)))
                .collect();
            let mut rows: Vec<Row> = saved_rows()
                .into_iter()
                .map(|saved| fresh.remove(&saved.file).unwrap_or(saved))
                .collect();
            assert!(
                fresh.is_empty(),
                "not files of the saved report: {:?}",
                fresh.keys().collect::<Vec<_>>()
            );
            rows.sort_by(|a, b| a.file.cmp(&b.file));
            rows
        }
        Mode::Suite => {
            let rows: Vec<Row> = run_corpus(source, &expected.suite).iter().map(Row::from).collect();
            assert_eq!(
                rows.len(),
                expected.suite.len(),
                "the runner reported on every suite file"
            );
            rows
        }
    };
    let wall = started.elapsed().as_secs_f64();
    if mode != Mode::Suite {
        write_report(&rows, &expected, version, (mode == Mode::All).then_some(wall));
    }
    let mut problems = Vec::new();
    let checked = |r: &Row| match &mode {
        Mode::Files(files) => files.contains(&r.file),
        _ => true,
    };
    for r in rows.iter().filter(|r| checked(r)) {
        let listed = expected.cluster_only.contains_key(&r.file) || expected.by_design.contains_key(&r.file);
        match categorize(r, &expected) {
            Category::Unlisted => problems.push(format!(
                "{}: {} records pass single-node and fail on the cluster, and the file is not listed in \
                 expected.toml; first: {}",
                r.file, r.cluster_only, r.first_cluster_only
            )),
            Category::PassBoth | Category::FailBoth if listed => problems.push(format!(
                "{}: listed as failing on the cluster but no longer does: remove it from expected.toml",
                r.file
            )),
            Category::NotRun if mode == Mode::Suite => {
                problems.push(format!("{}: in the suite but not run: {}", r.file, r.first_reference))
            }
            _ => {}
        }
    }
    let records: u64 = rows.iter().map(|r| r.records).sum();
    let cluster_only: u64 = rows.iter().map(|r| r.cluster_only).sum();
    eprintln!(
        "datafusion corpus: {} files, {records} records, {cluster_only} pass single-node but not on the cluster, {wall:.0} s",
        rows.len()
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
