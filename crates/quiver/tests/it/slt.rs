//! SQL behaviour in sqllogictest files (`crates/quiver/tests/slt/*.slt`), run
//! against the shared cluster through the `quiver` library: each file is one
//! client session whose queries run on the scheduler and both executors.
//!
//! Files may use `control substitution on` and `$lake` (the test bucket as
//! `s3://lake`) and `$scratch` (a fresh prefix in it for writes). A line
//! `# session: key = value` gives the file's session that setting when it
//! starts, as `--conf key=value` does.

use std::path::PathBuf;
use std::sync::Arc;

use arrow::datatypes::DataType;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use quiver::Quiver;
use quiver_core::runner::{OutputKind, StatementRunner};
use quiver_core::script::Statement;
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType};

use crate::harness::{free_port, shared};

struct ClusterDb {
    quiver: Option<Quiver>,
    runner: StatementRunner,
    statements: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct SltError(String);

fn column_type(t: &DataType) -> DefaultColumnType {
    match t {
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => DefaultColumnType::Integer,
        DataType::Float16
        | DataType::Float32
        | DataType::Float64
        | DataType::Decimal128(_, _)
        | DataType::Decimal256(_, _) => DefaultColumnType::FloatingPoint,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => DefaultColumnType::Text,
        _ => DefaultColumnType::Any,
    }
}

#[async_trait::async_trait]
impl AsyncDB for ClusterDb {
    type Error = SltError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<Self::ColumnType>, Self::Error> {
        self.statements += 1;
        let statement = Statement {
            index: self.statements,
            line: 1,
            sql: sql.trim().trim_end_matches(';').to_owned(),
        };
        let out = self.runner.run(&statement).await.map_err(|f| SltError(f.message))?;
        match out.kind {
            OutputKind::Rows => {
                let options = FormatOptions::default().with_null("NULL");
                let mut rows = Vec::new();
                for batch in &out.batches {
                    let formatters: Vec<ArrayFormatter> = batch
                        .columns()
                        .iter()
                        .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).unwrap())
                        .collect();
                    for r in 0..batch.num_rows() {
                        rows.push(
                            formatters
                                .iter()
                                .map(|f| {
                                    let v = f.value(r).to_string();
                                    if v.is_empty() { "(empty)".into() } else { v }
                                })
                                .collect(),
                        );
                    }
                }
                Ok(DBOutput::Rows {
                    types: out.schema.fields().iter().map(|f| column_type(f.data_type())).collect(),
                    rows,
                })
            }
            OutputKind::Written { rows, .. } => Ok(DBOutput::StatementComplete(rows)),
            OutputKind::Done => Ok(DBOutput::StatementComplete(0)),
        }
    }

    async fn shutdown(&mut self) {
        if let Some(q) = self.quiver.take() {
            let _ = q.finish().await;
        }
    }

    fn engine_name(&self) -> &str {
        "quiver"
    }

    async fn sleep(dur: std::time::Duration) {
        tokio::time::sleep(dur).await;
    }
}

/// The file's `# session: key = value` lines.
fn session_settings(path: &std::path::Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter_map(|line| line.strip_prefix("# session:"))
        .map(|setting| {
            let (key, value) = setting
                .split_once('=')
                .unwrap_or_else(|| panic!("{}: `# session:{setting}` has no `=`", path.display()));
            (key.trim().to_owned(), value.trim().to_owned())
        })
        .collect()
}

fn slt_files() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/slt");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files in {}", dir.display());
    files
}

#[test]
fn sqllogictest_files_pass_on_the_cluster() {
    let s = shared();
    let url = s.cluster.url.clone();
    let env = s.cluster.env.clone();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut failures = Vec::new();
    for file in slt_files() {
        let path = file.clone();
        let url = url.clone();
        let env = env.clone();
        let settings = session_settings(&file);
        let result = runtime.block_on(async move {
            let mut runner = sqllogictest::Runner::new(move || {
                let url = url.clone();
                let env = env.clone();
                let settings = settings.clone();
                async move {
                    let mut builder = Quiver::builder("sqllogictest").scheduler(url);
                    for (key, value) in settings {
                        builder = builder.conf(key, value);
                    }
                    // The client plans, so it needs the same storage settings.
                    for (k, v) in &env {
                        let key = match *k {
                            "AWS_ACCESS_KEY_ID" => "s3.access_key_id",
                            "AWS_SECRET_ACCESS_KEY" => "s3.secret_access_key",
                            "AWS_REGION" => "s3.region",
                            "AWS_ENDPOINT_URL" => "s3.endpoint",
                            _ => continue,
                        };
                        builder = builder.conf(key, v.clone());
                    }
                    let quiver = builder.connect().await.map_err(|e| SltError(e.to_string()))?;
                    let runner = StatementRunner::new(quiver.context().clone(), Arc::clone(quiver.storage()));
                    Ok::<_, SltError>(ClusterDb {
                        quiver: Some(quiver),
                        runner,
                        statements: 0,
                    })
                }
            });
            runner.set_var("lake".into(), "s3://lake".into());
            runner.set_var("scratch".into(), format!("s3://lake/slt-{}", free_port()));
            runner.run_file_async(&path).await
        });
        if let Err(e) = result {
            failures.push(format!("{}:\n{}", file.display(), e.display(true)));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
