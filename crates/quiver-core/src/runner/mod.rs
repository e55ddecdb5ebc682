//! Running SQL statements on a session: the engine behind `submit`, `sql` and REST jobs.
//!
//! [`StatementRunner::run`] executes one [`Statement`] and returns what it
//! produced: rows for a query, a count and a target for a write, a note for
//! DDL. Failures come back as a [`StatementFailure`] that names the statement
//! and says what to do, with secrets scrubbed.
//!
//! This module dispatches statements; `CREATE TABLE ... AS` into files and
//! Delta is [`create_table`], turning a failure into a message is
//! [`failure`], and keeping secrets out of what a statement returns is
//! [`masking`].

mod create_table;
mod failure;
mod masking;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arrow::array::{Array, UInt64Array};
use arrow::datatypes::{Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{DdlStatement, LogicalPlan};
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;

use crate::ctas::parse_ctas;
use crate::delta::sql::Outcome as DeltaOutcome;
use crate::script::Statement;
use crate::storage::StorageContext;
use masking::mask_secret_settings;

/// What a statement did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputKind {
    /// A query: [`StatementOutput::batches`] hold its rows.
    Rows,
    /// A write (INSERT, COPY, CREATE TABLE AS) of `rows` rows to `target`.
    Written {
        /// Rows written.
        rows: u64,
        /// The table or location written to.
        target: String,
    },
    /// DDL or SET: nothing to show but the summary.
    Done,
}

/// The result of one statement.
#[derive(Debug, Clone)]
pub struct StatementOutput {
    /// 1-based position of the statement in its script.
    pub index: usize,
    /// What it did.
    pub kind: OutputKind,
    /// A one-line summary, e.g. `3 rows` or `120 rows written to s3://b/out/`.
    pub summary: String,
    /// Result schema (empty for non-queries).
    pub schema: SchemaRef,
    /// Result rows (queries only).
    pub batches: Vec<RecordBatch>,
    /// True when `batches` stop at the runner's row or byte limit.
    pub truncated: bool,
    /// Wall time of the statement.
    pub elapsed: Duration,
}

impl StatementOutput {
    /// Rows in the result.
    pub fn row_count(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// A failed statement.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("statement {index} (line {line}: {first_line}) failed: {message}")]
pub struct StatementFailure {
    /// 1-based position of the statement in its script.
    pub index: usize,
    /// 1-based line where it starts.
    pub line: usize,
    /// Its first line, shortened.
    pub first_line: String,
    /// The engine's message, made readable, with a hint when one applies.
    pub message: String,
}

/// Runs statements on one session.
#[derive(Clone)]
pub struct StatementRunner {
    ctx: SessionContext,
    storage: Arc<StorageContext>,
    max_rows: Option<usize>,
    /// The byte limit of results, and the bytes this runner and its clones
    /// (one job) may still keep.
    bytes_left: Option<(usize, Arc<AtomicUsize>)>,
}

impl StatementRunner {
    /// A runner for `ctx`, whose object stores come from `storage`.
    pub fn new(ctx: SessionContext, storage: Arc<StorageContext>) -> Self {
        Self {
            ctx,
            storage,
            max_rows: None,
            bytes_left: None,
        }
    }

    /// Keeps at most `max_rows` rows of each query result (the rest is not
    /// fetched); the output says when it stopped short.
    pub fn with_max_rows(mut self, max_rows: Option<usize>) -> Self {
        self.max_rows = max_rows;
        self
    }

    /// Keeps at most `max_bytes` bytes (in memory) of query results over all
    /// the statements this runner and its clones run: a job's budget. A
    /// result that would pass it is cut, and the output says so.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use datafusion::prelude::SessionContext;
    /// # use quiver_core::{runner::StatementRunner, script::Statement, storage::StorageContext};
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let runner = StatementRunner::new(SessionContext::new(), Arc::new(StorageContext::default()))
    ///     .with_max_bytes(Some(64 * 1024));
    /// let query = Statement { index: 1, line: 1, sql: "SELECT * FROM generate_series(1, 1000000)".into() };
    /// let out = runner.run(&query).await.unwrap();
    /// assert!(out.truncated && out.row_count() < 1_000_000);
    /// assert!(out.summary.contains("byte limit"), "{}", out.summary);
    /// // The budget is the job's: a second result gets what is left, here nothing.
    /// let again = runner.clone().run(&query).await.unwrap();
    /// assert_eq!(again.row_count(), 0);
    /// # });
    /// ```
    pub fn with_max_bytes(mut self, max_bytes: Option<usize>) -> Self {
        self.bytes_left = max_bytes.map(|max| (max, Arc::new(AtomicUsize::new(max))));
        self
    }

    /// The session.
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// Runs one statement to completion.
    pub async fn run(&self, statement: &Statement) -> Result<StatementOutput, StatementFailure> {
        let started = Instant::now();
        let result = match parse_ctas(&statement.sql) {
            Ok(Some(ctas)) => self.create_table_as(ctas).await.map(|p| (p, false)),
            Ok(None) => self.run_other(&statement.sql).await,
            Err(message) => Err(RunError::User(message)),
        };
        match result {
            Ok(((kind, summary, schema, batches), truncated)) => Ok(StatementOutput {
                index: statement.index,
                kind,
                summary,
                schema,
                batches,
                truncated,
                elapsed: started.elapsed(),
            }),
            Err(err) => Err(self.failure(statement, err).await),
        }
    }

    /// Delta statements (UPDATE, MERGE, VACUUM, time travel, ...), then plain SQL.
    async fn run_other(&self, sql: &str) -> Result<(Produced, bool), RunError> {
        match crate::delta::sql::run(&self.ctx, sql).await? {
            Some(DeltaOutcome::Rows(schema, batches)) => {
                let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
                let summary = format!("{rows} row{}", if rows == 1 { "" } else { "s" });
                Ok(((OutputKind::Rows, summary, schema, batches), false))
            }
            Some(DeltaOutcome::Changed { rows, summary, target }) => Ok((
                (OutputKind::Written { rows, target }, summary, empty_schema(), vec![]),
                false,
            )),
            None => {
                let sql = crate::delta::sql::rewrite_time_travel(&self.ctx, sql).await?;
                self.run_sql(&sql).await
            }
        }
    }

    async fn run_sql(&self, sql: &str) -> Result<(Produced, bool), RunError> {
        let state = self.ctx.state();
        let plan = mask_secret_settings(state.create_logical_plan(sql).await?, &state)?;
        if let Some(message) = crate::spark_functions::refused_change(&plan, state.config()) {
            return Err(RunError::User(message));
        }
        let explains = matches!(plan, LogicalPlan::Explain(_) | LogicalPlan::Analyze(_));
        match &plan {
            LogicalPlan::Ddl(ddl) => {
                let summary = ddl_summary(ddl);
                self.ctx.execute_logical_plan(plan).await?.collect().await?;
                Ok(((OutputKind::Done, summary, empty_schema(), vec![]), false))
            }
            LogicalPlan::Statement(_) => {
                self.ctx.execute_logical_plan(plan).await?.collect().await?;
                Ok(((OutputKind::Done, "OK".into(), empty_schema(), vec![]), false))
            }
            LogicalPlan::Dml(dml) => {
                let target = dml.table_name.to_string();
                let batches = self.ctx.execute_logical_plan(plan).await?.collect().await?;
                let rows = count_of(&batches);
                Ok((written(rows, target), false))
            }
            LogicalPlan::Copy(copy) => {
                let target = copy.output_url.clone();
                // Refused here, by name: the engine's write path would only say
                // that finalizing the writes failed.
                let url = datafusion::datasource::listing::ListingTableUrl::parse(&target)?;
                self.storage.local_paths().check_url(url.as_ref())?;
                let batches = self.ctx.execute_logical_plan(plan).await?.collect().await?;
                let rows = count_of(&batches);
                Ok((written(rows, target), false))
            }
            _ => {
                let df = self.ctx.execute_logical_plan(plan).await?;
                let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
                let (mut batches, cut) = self.collect(df).await?;
                let truncated = cut.is_some();
                if explains {
                    batches = batches
                        .iter()
                        .map(crate::secret::redact_batch)
                        .collect::<Result<_, _>>()
                        .map_err(DataFusionError::from)?;
                }
                let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
                let mut summary = format!("{rows} row{}", if rows == 1 { "" } else { "s" });
                if let Some(cut) = cut {
                    summary.push_str(&format!(" (result cut at {cut}; write large results with COPY ... TO)"));
                }
                Ok(((OutputKind::Rows, summary, schema, batches), truncated))
            }
        }
    }
}

type Produced = (OutputKind, String, SchemaRef, Vec<RecordBatch>);

/// Which limit cut a query's result short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    /// The rows kept per result.
    Rows(usize),
    /// The bytes kept per job.
    Bytes(usize),
}

impl std::fmt::Display for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cut::Rows(max) => write!(f, "the {max}-row limit"),
            Cut::Bytes(max) => write!(f, "the job's {} byte limit", bytesize::ByteSize(*max as u64)),
        }
    }
}

enum RunError {
    User(String),
    Engine(DataFusionError),
}

impl From<DataFusionError> for RunError {
    fn from(e: DataFusionError) -> Self {
        RunError::Engine(e)
    }
}

impl StatementRunner {
    /// Collects a query's rows up to the row limit and what is left of the
    /// job's byte budget; says which limit cut it, if one did. What is not
    /// kept is not fetched.
    async fn collect(
        &self,
        df: datafusion::dataframe::DataFrame,
    ) -> Result<(Vec<RecordBatch>, Option<Cut>), DataFusionError> {
        if self.max_rows.is_none() && self.bytes_left.is_none() {
            return Ok((df.collect().await?, None));
        }
        let mut stream = df.execute_stream().await?;
        let mut batches = Vec::new();
        let mut rows = 0;
        while let Some(batch) = stream.try_next().await? {
            if let Some(max) = self.max_rows
                && rows + batch.num_rows() > max
            {
                let (kept, cut) = self.take_bytes(batch.slice(0, max - rows));
                return Ok((push(batches, kept), cut.or(Some(Cut::Rows(max)))));
            }
            rows += batch.num_rows();
            match self.take_bytes(batch) {
                (kept, None) => batches.push(kept),
                (kept, cut) => return Ok((push(batches, kept), cut)),
            }
        }
        Ok((batches, None))
    }

    /// Takes `batch` out of the byte budget: all of it, or the rows that fit
    /// and the cut.
    fn take_bytes(&self, batch: RecordBatch) -> (RecordBatch, Option<Cut>) {
        let Some((max, left)) = &self.bytes_left else {
            return (batch, None);
        };
        if batch.num_rows() == 0 {
            return (batch, None);
        }
        let size = batch.get_array_memory_size();
        let taken = left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |l| l.checked_sub(size));
        match taken {
            Ok(_) => (batch, None),
            Err(remaining) => {
                left.store(0, Ordering::SeqCst);
                // Rows in proportion to what is left: batches are measured
                // in memory, where rows of one batch cost about the same.
                let fit = (batch.num_rows() * remaining).checked_div(size).unwrap_or(0);
                (batch.slice(0, fit), Some(Cut::Bytes(*max)))
            }
        }
    }
}

fn push(mut batches: Vec<RecordBatch>, batch: RecordBatch) -> Vec<RecordBatch> {
    if batch.num_rows() > 0 {
        batches.push(batch);
    }
    batches
}

fn empty_schema() -> SchemaRef {
    Arc::new(Schema::empty())
}

fn written(rows: u64, target: String) -> Produced {
    let summary = format!("{rows} row{} written to {target}", if rows == 1 { "" } else { "s" });
    (OutputKind::Written { rows, target }, summary, empty_schema(), vec![])
}

fn ddl_summary(ddl: &DdlStatement) -> String {
    match ddl {
        DdlStatement::CreateExternalTable(t) => format!("table {} created", t.name),
        DdlStatement::CreateMemoryTable(t) => format!("table {} created", t.name),
        DdlStatement::CreateView(v) => format!("view {} created", v.name),
        DdlStatement::DropTable(t) => format!("table {} dropped", t.name),
        DdlStatement::DropView(v) => format!("view {} dropped", v.name),
        DdlStatement::CreateCatalogSchema(s) => format!("schema {} created", s.schema_name),
        _ => "OK".into(),
    }
}

/// The row count a DML or COPY plan returns (one `count` column).
fn count_of(batches: &[RecordBatch]) -> u64 {
    batches
        .iter()
        .filter(|b| b.num_columns() > 0)
        .filter_map(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<UInt64Array>()
                .map(|a| a.iter().flatten().sum::<u64>())
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use crate::script::Script;
    use crate::session::SessionFactory;
    use crate::storage::S3Settings;
    use std::collections::BTreeMap;

    fn runner() -> StatementRunner {
        let storage = Arc::new(StorageContext::with_defaults(S3Settings::default()));
        let factory = SessionFactory::with_storage(Arc::clone(&storage), Settings::new()).unwrap();
        StatementRunner::new(factory.local_context(&Settings::new()).unwrap(), storage)
    }

    async fn run_script(runner: &StatementRunner, text: &str) -> Vec<Result<StatementOutput, StatementFailure>> {
        let script = Script::parse(text, &BTreeMap::new()).unwrap();
        let mut out = vec![];
        for s in &script.statements {
            out.push(runner.run(s).await);
        }
        out
    }

    #[tokio::test]
    async fn ctas_writes_partitioned_files_and_registers_the_table() {
        let dir = tempfile::tempdir().unwrap();
        let loc = dir.path().join("t");
        let r = runner();
        let results = run_script(
            &r,
            &format!(
                "CREATE TABLE t USING parquet PARTITIONED BY (k) LOCATION '{}' AS \
                 SELECT * FROM (VALUES (1, 'a'), (2, 'b'), (3, 'a')) AS v(x, k);\n\
                 SELECT k, sum(x) AS s FROM t GROUP BY k ORDER BY k;",
                loc.display()
            ),
        )
        .await;
        let created = results[0].as_ref().unwrap();
        assert!(
            matches!(created.kind, OutputKind::Written { rows: 3, .. }),
            "{created:?}"
        );
        assert!(loc.join("k=a").is_dir());
        let rows = results[1].as_ref().unwrap();
        let text = arrow::util::pretty::pretty_format_batches(&rows.batches)
            .unwrap()
            .to_string();
        assert!(text.contains("| a | 4 |") && text.contains("| b | 2 |"), "{text}");

        // A second CTAS into the same location is refused, not mixed in.
        let again = run_script(
            &r,
            &format!(
                "CREATE TABLE t2 USING parquet LOCATION '{}' AS SELECT 1 AS x",
                loc.display()
            ),
        )
        .await;
        let err = again[0].as_ref().unwrap_err();
        assert!(err.message.contains("already holds data"), "{err}");
    }

    #[tokio::test]
    async fn failures_name_the_statement_and_script_line() {
        let r = runner();
        let results = run_script(&r, "SELECT 1;\n\nSELEC oops FROM t;").await;
        let err = results[1].as_ref().unwrap_err();
        assert_eq!(err.index, 2);
        assert_eq!(err.line, 3);
        assert!(
            err.to_string()
                .starts_with("statement 2 (line 3: SELEC oops FROM t) failed"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn show_masks_secret_settings() {
        let r = runner();
        let results = run_script(
            &r,
            "SET s3.secret_access_key = 'topsecret-show';\nSHOW s3.secret_access_key",
        )
        .await;
        let out = results[1].as_ref().unwrap();
        let text = arrow::util::pretty::pretty_format_batches(&out.batches)
            .unwrap()
            .to_string();
        assert!(!text.contains("topsecret-show"), "{text}");
        assert!(text.contains(crate::secret::MASK), "{text}");
    }

    #[tokio::test]
    async fn a_file_that_cannot_be_decoded_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.csv"), "x\n1\n").unwrap();
        std::fs::write(dir.path().join("b.csv"), "x\n2\n3,4,5\n").unwrap();
        let r = runner();
        let results = run_script(
            &r,
            &format!(
                "CREATE EXTERNAL TABLE t (x BIGINT) STORED AS CSV LOCATION '{}/' OPTIONS ('format.has_header' 'true');\n\
                 SELECT sum(x) FROM t;",
                dir.path().display()
            ),
        )
        .await;
        let err = results[1].as_ref().unwrap_err();
        assert!(
            err.message.contains("in file: file://") && err.message.ends_with("b.csv"),
            "{err}"
        );
    }
}
