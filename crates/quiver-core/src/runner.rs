//! Running SQL statements on a session: the engine behind `submit`, `sql` and REST jobs.
//!
//! [`StatementRunner::run`] executes one [`Statement`] and returns what it
//! produced: rows for a query, a count and a target for a write, a note for
//! DDL. Failures come back as a [`StatementFailure`] that names the statement
//! and says what to do, with secrets scrubbed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, ArrayRef, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::common::config::TableOptions;
use datafusion::dataframe::DataFrameWriteOptions;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::json::JsonFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{DdlStatement, LogicalPlan};
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;

use crate::ctas::{CreateTableAs, TableFormat, parse_ctas};
use crate::delta::sql::Outcome as DeltaOutcome;
use crate::script::Statement;
use crate::secret;
use crate::storage::{S3Options, StorageContext, explain_storage_error};

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
    /// True when `batches` stop at the runner's row limit.
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
}

impl StatementRunner {
    /// A runner for `ctx`, whose object stores come from `storage`.
    pub fn new(ctx: SessionContext, storage: Arc<StorageContext>) -> Self {
        Self {
            ctx,
            storage,
            max_rows: None,
        }
    }

    /// Keeps at most `max_rows` rows of each query result (the rest is not
    /// fetched); the output says when it stopped short.
    pub fn with_max_rows(mut self, max_rows: Option<usize>) -> Self {
        self.max_rows = max_rows;
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
        let plan = state.create_logical_plan(sql).await?;
        let shows_settings = mentions_settings(&plan, sql);
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
                let batches = self.ctx.execute_logical_plan(plan).await?.collect().await?;
                let rows = count_of(&batches);
                Ok((written(rows, target), false))
            }
            _ => {
                let df = self.ctx.execute_logical_plan(plan).await?;
                let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
                let (mut batches, truncated) = match self.max_rows {
                    None => (df.collect().await?, false),
                    Some(max) => collect_at_most(df, max).await?,
                };
                if shows_settings {
                    batches = batches.iter().map(mask_setting_values).collect::<Result<_, _>>()?;
                }
                let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
                let mut summary = format!("{rows} row{}", if rows == 1 { "" } else { "s" });
                if truncated {
                    summary.push_str(" (result cut at the row limit; write large results with COPY ... TO)");
                }
                Ok(((OutputKind::Rows, summary, schema, batches), truncated))
            }
        }
    }

    /// Checks that a CTAS may create `ctas.name`: `Ok(Some(..))` when there is nothing to do.
    fn check_new_name(&self, ctas: &CreateTableAs) -> Result<Option<Produced>, RunError> {
        let exists = self.ctx.table_exist(ctas.name.as_str())?;
        if exists && ctas.if_not_exists {
            return Ok(Some((
                OutputKind::Done,
                format!("table {} already exists", ctas.name),
                empty_schema(),
                vec![],
            )));
        }
        if exists && !ctas.or_replace {
            return Err(RunError::User(format!(
                "table '{}' already exists; use CREATE TABLE IF NOT EXISTS, CREATE OR REPLACE TABLE, or INSERT INTO",
                ctas.name
            )));
        }
        Ok(None)
    }

    /// The location of a new table, which must hold nothing yet.
    async fn empty_location(&self, location: &str) -> Result<(String, ListingTableUrl), RunError> {
        let location = if location.ends_with('/') {
            location.to_owned()
        } else {
            format!("{location}/")
        };
        let table_url = ListingTableUrl::parse(&location)?;
        let store = self.ctx.runtime_env().object_store(&table_url)?;
        let existing = store
            .list(Some(table_url.prefix()))
            .try_next()
            .await
            .map_err(DataFusionError::from)?;
        if let Some(object) = existing {
            return Err(RunError::User(format!(
                "LOCATION {location} already holds data ({}); CREATE TABLE AS writes to an empty location. \
                 Use INSERT INTO to add rows to an existing table",
                object.location
            )));
        }
        Ok((location, table_url))
    }

    /// `CREATE TABLE t USING delta ... AS SELECT`: one distributed write, one commit.
    async fn create_delta_table_as(&self, ctas: CreateTableAs) -> Result<Produced, RunError> {
        if let Some(done) = self.check_new_name(&ctas)? {
            return Ok(done);
        }
        let (location, _) = self.empty_location(&ctas.location).await?;
        let df = self.ctx.sql(&ctas.query).await?;
        let query_schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let pending = crate::delta::DeltaTable::pending(&location, query_schema, ctas.partition_by.clone())?;
        // Columns in the table's order (partition columns last).
        let columns: Vec<datafusion::prelude::Expr> = datafusion::catalog::TableProvider::schema(&pending)
            .fields()
            .iter()
            .map(|f| datafusion::prelude::col(datafusion::common::Column::from_name(f.name())))
            .collect();
        let df = df.select(columns)?;
        let replaced = if self.ctx.table_exist(ctas.name.as_str())? {
            self.ctx.deregister_table(ctas.name.as_str())?
        } else {
            None
        };
        self.ctx.register_table(ctas.name.as_str(), Arc::new(pending))?;
        let written = df.write_table(&ctas.name, DataFrameWriteOptions::new()).await;
        self.ctx.deregister_table(ctas.name.as_str())?;
        let batches = match written {
            Ok(b) => b,
            Err(e) => {
                if let Some(previous) = replaced {
                    self.ctx.register_table(ctas.name.as_str(), previous)?;
                }
                return Err(e.into());
            }
        };
        let rows = count_of(&batches);
        let created =
            crate::delta::DeltaTable::open(&location, crate::delta::TableVersion::Latest, &self.ctx.copied_config())
                .await?;
        self.ctx.register_table(ctas.name.as_str(), Arc::new(created))?;
        Ok((
            OutputKind::Written {
                rows,
                target: location.clone(),
            },
            format!("Delta table {} created: {rows} rows written to {location}", ctas.name),
            empty_schema(),
            vec![],
        ))
    }

    async fn create_table_as(&self, ctas: CreateTableAs) -> Result<Produced, RunError> {
        if ctas.format == TableFormat::Delta {
            return self.create_delta_table_as(ctas).await;
        }
        if let Some(done) = self.check_new_name(&ctas)? {
            return Ok(done);
        }
        let exists = self.ctx.table_exist(ctas.name.as_str())?;
        let (location, table_url) = self.empty_location(&ctas.location).await?;

        let df = self.ctx.sql(&ctas.query).await?;
        let query_schema = df.schema().as_arrow().clone();
        for col in &ctas.partition_by {
            if query_schema.field_with_name(col).is_err() {
                return Err(RunError::User(format!(
                    "PARTITIONED BY column '{col}' is not a column of the query"
                )));
            }
        }
        let write_options = DataFrameWriteOptions::new()
            .with_single_file_output(false)
            .with_partition_by(ctas.partition_by.clone());
        let mut table_options = TableOptions::default_from_session_config(self.ctx.state().config_options());
        let (format, ext): (Arc<dyn FileFormat>, &str) = match ctas.format {
            TableFormat::Parquet => {
                table_options.set_config_format(datafusion::common::config::ConfigFileType::PARQUET);
                table_options.alter_with_string_hash_map(&prefixed(&ctas.options))?;
                (
                    Arc::new(ParquetFormat::default().with_options(table_options.parquet.clone())),
                    ".parquet",
                )
            }
            TableFormat::Csv => {
                table_options.set_config_format(datafusion::common::config::ConfigFileType::CSV);
                table_options.alter_with_string_hash_map(&prefixed(&ctas.options))?;
                let csv = table_options.csv.clone().with_has_header(true);
                (Arc::new(CsvFormat::default().with_options(csv)), ".csv")
            }
            TableFormat::Delta => return self.create_delta_table_as(ctas).await,
            TableFormat::Json => {
                table_options.set_config_format(datafusion::common::config::ConfigFileType::JSON);
                table_options.alter_with_string_hash_map(&prefixed(&ctas.options))?;
                (
                    Arc::new(JsonFormat::default().with_options(table_options.json.clone())),
                    ".json",
                )
            }
        };
        let batches = match ctas.format {
            TableFormat::Parquet => {
                df.write_parquet(&location, write_options, Some(table_options.parquet.clone()))
                    .await?
            }
            TableFormat::Csv => {
                df.write_csv(
                    &location,
                    write_options,
                    Some(table_options.csv.clone().with_has_header(true)),
                )
                .await?
            }
            TableFormat::Json | TableFormat::Delta => {
                df.write_json(&location, write_options, Some(table_options.json.clone()))
                    .await?
            }
        };
        let rows = count_of(&batches);

        // The table's schema is the query's, partition columns last (as they
        // are read back from the directory names).
        let partition_cols: Vec<(String, DataType)> = ctas
            .partition_by
            .iter()
            .map(|c| {
                let field = query_schema.field_with_name(c).expect("checked above");
                (c.clone(), field.data_type().clone())
            })
            .collect();
        let file_fields: Vec<Field> = query_schema
            .fields()
            .iter()
            .filter(|f| !ctas.partition_by.contains(f.name()))
            .map(|f| f.as_ref().clone())
            .collect();
        let listing = ListingOptions::new(format)
            .with_file_extension(ext)
            .with_table_partition_cols(partition_cols);
        let config = ListingTableConfig::new(table_url)
            .with_listing_options(listing)
            .with_schema(Arc::new(Schema::new(file_fields)));
        let table = ListingTable::try_new(config)?;
        if exists {
            self.ctx.deregister_table(ctas.name.as_str())?;
        }
        self.ctx.register_table(ctas.name.as_str(), Arc::new(table))?;
        let (kind, _, schema, batches) = written(rows, location.clone());
        Ok((
            kind,
            format!("table {} created: {rows} rows written to {location}", ctas.name),
            schema,
            batches,
        ))
    }

    async fn failure(&self, statement: &Statement, err: RunError) -> StatementFailure {
        let message = match err {
            RunError::User(message) => message,
            RunError::Engine(e) => {
                let mut message = self.describe(&e, statement.line);
                if is_decode_error(&message) {
                    let sql = match parse_ctas(&statement.sql) {
                        Ok(Some(ctas)) => ctas.query,
                        _ => statement.sql.clone(),
                    };
                    if let Some(file) = self.find_unreadable_file(&sql).await {
                        message = format!("{message}\n  in file: {file}");
                    }
                }
                message
            }
        };
        let first_line = crate::script::short_first_line(&statement.sql, 80);
        StatementFailure {
            index: statement.index,
            line: statement.line,
            first_line: secret::redact(&first_line).into_owned(),
            message: secret::redact(&message).into_owned(),
        }
    }

    /// Finds the file a failed scan could not decode: reads each file of the
    /// statement's tables on its own, here, until one fails. Engine errors do
    /// not say which file they came from; users need to know.
    async fn find_unreadable_file(&self, sql: &str) -> Option<String> {
        const MAX_FILES: usize = 1000;
        let plan = self.ctx.state().create_logical_plan(sql).await.ok()?;
        let mut tables: Vec<Arc<dyn datafusion::catalog::TableProvider>> = Vec::new();
        let _ = plan.apply_with_subqueries(|node| {
            if let LogicalPlan::TableScan(scan) = node
                && let Ok(provider) = datafusion::catalog::default_table_source::source_as_provider(&scan.source)
                && provider.downcast_ref::<ListingTable>().is_some()
            {
                tables.push(provider);
            }
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        });
        let local = SessionContext::new_with_state(
            datafusion::execution::SessionStateBuilder::new()
                .with_config(self.ctx.copied_config())
                .with_runtime_env(self.ctx.runtime_env())
                .with_default_features()
                .build(),
        );
        let mut probed = 0;
        for provider in tables {
            let table = provider.downcast_ref::<ListingTable>()?;
            let options = table.options().clone();
            let file_schema = crate::tables::file_schema(table);
            for path in table.table_paths() {
                let store = self.ctx.runtime_env().object_store(path).ok()?;
                let files: Vec<_> = store.list(Some(path.prefix())).try_collect().await.ok()?;
                for meta in files {
                    let key = meta.location.to_string();
                    if !key.ends_with(&options.file_extension) || !path.contains(&meta.location, true) {
                        continue;
                    }
                    probed += 1;
                    if probed > MAX_FILES {
                        return None;
                    }
                    let url = format!("{}{}", path.object_store().as_str(), key);
                    let Ok(file_url) = ListingTableUrl::parse(&url) else {
                        continue;
                    };
                    let single_options = ListingOptions::new(Arc::clone(&options.format))
                        .with_file_extension(options.file_extension.clone());
                    let config = ListingTableConfig::new(file_url)
                        .with_listing_options(single_options)
                        .with_schema(Arc::clone(&file_schema));
                    let Ok(single) = ListingTable::try_new(config) else {
                        continue;
                    };
                    let read = async { local.read_table(Arc::new(single))?.collect().await };
                    if read.await.is_err() {
                        return Some(url);
                    }
                }
            }
        }
        None
    }

    /// Turns an engine error into a message for a person: parser positions are
    /// given in script lines, storage failures get a hint.
    fn describe(&self, err: &DataFusionError, first_line: usize) -> String {
        let mut message = clean_message(&err.to_string());
        message = script_positions(&message, first_line);
        let session_s3 = self
            .ctx
            .state()
            .config()
            .options()
            .extensions
            .get::<S3Options>()
            .map(S3Options::settings)
            .unwrap_or_default();
        let effective = self.storage.effective(&session_s3);
        if let Some(hint) = explain_storage_error(&message, &effective) {
            message = format!("{message}\n  hint: {hint}");
        }
        message
    }
}

type Produced = (OutputKind, String, SchemaRef, Vec<RecordBatch>);

enum RunError {
    User(String),
    Engine(DataFusionError),
}

impl From<DataFusionError> for RunError {
    fn from(e: DataFusionError) -> Self {
        RunError::Engine(e)
    }
}

/// Collects up to `max` rows; true when more were available.
async fn collect_at_most(
    df: datafusion::dataframe::DataFrame,
    max: usize,
) -> Result<(Vec<RecordBatch>, bool), DataFusionError> {
    let mut stream = df.execute_stream().await?;
    let mut batches = Vec::new();
    let mut rows = 0;
    while let Some(batch) = stream.try_next().await? {
        if rows + batch.num_rows() > max {
            batches.push(batch.slice(0, max - rows));
            return Ok((batches, true));
        }
        rows += batch.num_rows();
        batches.push(batch);
    }
    Ok((batches, false))
}

fn empty_schema() -> SchemaRef {
    Arc::new(Schema::empty())
}

fn written(rows: u64, target: String) -> Produced {
    let summary = format!("{rows} row{} written to {target}", if rows == 1 { "" } else { "s" });
    (OutputKind::Written { rows, target }, summary, empty_schema(), vec![])
}

fn prefixed(options: &std::collections::BTreeMap<String, String>) -> std::collections::HashMap<String, String> {
    options
        .iter()
        .map(|(k, v)| {
            let key = if k.starts_with("format.") {
                k.clone()
            } else {
                format!("format.{k}")
            };
            (key, v.clone())
        })
        .collect()
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

fn mentions_settings(plan: &LogicalPlan, sql: &str) -> bool {
    let head = sql.trim_start().to_ascii_lowercase();
    head.starts_with("show") || head.contains("df_settings") || matches!(plan, LogicalPlan::DescribeTable(_))
}

/// Masks the `value` column of rows whose `name` is a secret setting.
fn mask_setting_values(batch: &RecordBatch) -> Result<RecordBatch, DataFusionError> {
    let schema = batch.schema();
    let (Ok(name_idx), Ok(value_idx)) = (schema.index_of("name"), schema.index_of("value")) else {
        return Ok(batch.clone());
    };
    let cast = |i: usize| arrow::compute::cast(batch.column(i), &DataType::Utf8);
    let names = cast(name_idx)?;
    let values = cast(value_idx)?;
    let names = names.as_any().downcast_ref::<StringArray>().expect("cast to Utf8");
    let values = values.as_any().downcast_ref::<StringArray>().expect("cast to Utf8");
    let masked: StringArray = (0..batch.num_rows())
        .map(|i| {
            if values.is_null(i) {
                None
            } else if secret::is_secret_key(names.value(i)) {
                Some(secret::MASK.to_owned())
            } else {
                Some(values.value(i).to_owned())
            }
        })
        .collect();
    let masked = arrow::compute::cast(&(Arc::new(masked) as ArrayRef), schema.field(value_idx).data_type())?;
    let mut columns = batch.columns().to_vec();
    columns[value_idx] = masked;
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// Strips layers of wrapping the engine adds around the message that matters.
///
/// A task failure on the cluster arrives as `Execution error: Job J failed:
/// Job failed due to stage S failed: Task failed due to runtime execution
/// error: DataFusionError(Shared(External(ArrowError(CsvError("...")))))`;
/// this turns it into `malformed CSV: ... (query J, stage S)`.
pub fn clean_message(message: &str) -> String {
    let mut m = message.trim().to_owned();
    loop {
        let before = m.len();
        for prefix in ["External error: ", "Arrow error: External error: ", "Execution error: "] {
            if let Some(rest) = m.strip_prefix(prefix) {
                m = rest.trim().to_owned();
            }
        }
        if m.len() == before {
            break;
        }
    }
    let task = regex::Regex::new(
        r"(?s)^Job (\S+) failed: Job failed due to stage (\d+) failed: Task failed due to runtime execution error: (.*)$",
    )
    .expect("valid regex");
    if let Some(c) = task.captures(&m) {
        let (mut inner, kinds) = unwrap_debug(&c[3]);
        if inner == "DivideByZero" {
            inner = "division by zero".into();
        }
        let kind = if kinds.iter().any(|k| k == "CsvError") {
            "malformed CSV: "
        } else if kinds.iter().any(|k| k == "JsonError") {
            "malformed JSON: "
        } else {
            ""
        };
        return format!("{kind}{inner} (query {}, stage {})", &c[1], &c[2]);
    }
    let job = regex::Regex::new(r"(?s)^Job (\S+) failed: (.*)$").expect("valid regex");
    if let Some(c) = job.captures(&m) {
        return format!("{} (query {})", unwrap_debug(&c[2]).0, &c[1]);
    }
    m
}

/// Peels `Name(...)` layers of a Debug-printed error; returns the innermost
/// text and the names peeled.
fn unwrap_debug(text: &str) -> (String, Vec<String>) {
    let layer = regex::Regex::new(r"(?s)^([A-Za-z]+)\((.*)\)$").expect("valid regex");
    let mut s = text.trim().to_owned();
    let mut names = Vec::new();
    while let Some(c) = layer.captures(&s) {
        names.push(c[1].to_owned());
        s = c[2].trim().to_owned();
    }
    if s.len() >= 2 && s.starts_with('"') && s.ends_with('"') {
        s = s[1..s.len() - 1].replace("\\\"", "\"").replace("\\n", "\n");
    }
    (s, names)
}

/// True for errors that come from decoding a file's contents.
fn is_decode_error(message: &str) -> bool {
    [
        "malformed CSV",
        "malformed JSON",
        "Parquet error",
        "Csv error",
        "Json error",
        "Invalid Parquet",
    ]
    .iter()
    .any(|n| message.contains(n))
}

/// Rewrites the parser's `Line: N, Column: C` (relative to the statement) into
/// script lines.
fn script_positions(message: &str, first_line: usize) -> String {
    let re = regex::Regex::new(r"Line: (\d+), Column: (\d+)").expect("valid regex");
    re.replace_all(message, |caps: &regex::Captures| {
        let line: usize = caps[1].parse().unwrap_or(1);
        format!("line {}, column {}", first_line + line.saturating_sub(1), &caps[2])
    })
    .into_owned()
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
        assert!(text.contains(secret::MASK), "{text}");
    }

    #[test]
    fn cluster_task_failures_are_unwrapped() {
        let raw = "Execution error: Job 038G failed: Job failed due to stage 0 failed: Task failed due to runtime \
                   execution error: DataFusionError(Shared(External(ArrowError(CsvError(\"incorrect number of fields \\\"x\\\"\")))))";
        assert_eq!(
            clean_message(raw),
            "malformed CSV: incorrect number of fields \"x\" (query 038G, stage 0)"
        );
        assert_eq!(clean_message("External error: Execution error: plain"), "plain");
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

    #[test]
    fn parser_positions_become_script_lines() {
        assert_eq!(
            script_positions("Expected: x at Line: 2, Column: 5", 10),
            "Expected: x at line 11, column 5"
        );
    }
}
