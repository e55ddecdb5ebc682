//! Delta statements that are not plain queries: `UPDATE`, `DELETE`, `MERGE INTO`,
//! `DESCRIBE HISTORY`, `VACUUM`, `OPTIMIZE`, and time travel (`VERSION AS OF`).
//!
//! [`crate::runner::StatementRunner`] hands a statement to [`run`] first; when
//! it is one of these on a Delta table, it runs here with deltalake's
//! operations, in the process that runs the statement (the scheduler for a
//! submitted script, the client for a shell). A `MERGE`'s source query runs
//! on the cluster; its rows are then merged here.
//!
//! ```sql
//! UPDATE sales SET amount = amount * 1.1 WHERE region = 'EU';
//! DELETE FROM sales WHERE day < '2024-01-01';
//! MERGE INTO sales t USING (SELECT * FROM staging) s ON t.id = s.id
//!   WHEN MATCHED THEN UPDATE SET amount = s.amount
//!   WHEN NOT MATCHED THEN INSERT (id, amount) VALUES (s.id, s.amount);
//! DESCRIBE HISTORY sales LIMIT 10;
//! VACUUM sales RETAIN 168 HOURS DRY RUN;
//! OPTIMIZE sales ZORDER BY (customer_id);
//! SELECT * FROM sales VERSION AS OF 3;
//! SELECT * FROM sales TIMESTAMP AS OF '2024-05-01 12:00:00';
//! ```

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::TableProvider;
use datafusion::datasource::MemTable;
use datafusion::error::{DataFusionError, Result};
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::{DFParser, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::{
    AssignmentTarget, FromTable, MergeAction, MergeClauseKind, MergeInsertKind, Statement, TableFactor,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
use futures::TryStreamExt;

use super::table::{DeltaTable, TableVersion, parse_timestamp};
use super::{delta_err, open, storage_options};

/// What a handled statement produced: rows for a result, or a summary.
pub enum Outcome {
    /// Rows to show (history, vacuum's file list).
    Rows(SchemaRef, Vec<RecordBatch>),
    /// A change to the table.
    Changed {
        /// Rows affected.
        rows: u64,
        /// What happened, in a line.
        summary: String,
        /// The table's location.
        target: String,
    },
}

/// Runs `sql` if it is a Delta statement; `Ok(None)` when it is not one.
pub async fn run(ctx: &SessionContext, sql: &str) -> Result<Option<Outcome>> {
    if let Some(outcome) = maintenance(ctx, sql).await? {
        return Ok(Some(outcome));
    }
    let Ok(mut statements) = DFParser::parse_sql_with_dialect(sql, &GenericDialect {}) else {
        return Ok(None); // The engine reports the syntax error.
    };
    let Some(DFStatement::Statement(statement)) = statements.pop_front() else {
        return Ok(None);
    };
    match *statement {
        Statement::Update(update) => {
            let TableFactor::Table { name, .. } = &update.table.relation else {
                return Ok(None);
            };
            let Some(table) = delta_table(ctx, &name.to_string()).await? else {
                return Ok(None);
            };
            if update.from.is_some() {
                return plan("UPDATE ... FROM is not supported on Delta tables; use MERGE INTO");
            }
            let mut builder = open_latest(ctx, &table).await?.update();
            for a in &update.assignments {
                let AssignmentTarget::ColumnName(col) = &a.target else {
                    return plan("UPDATE SET (a, b) = (...) is not supported; assign columns one by one");
                };
                builder = builder.with_update(last_part(&col.to_string()), a.value.to_string());
            }
            if let Some(selection) = &update.selection {
                builder = builder.with_predicate(selection.to_string());
            }
            let (_, metrics) = builder.await.map_err(delta_err)?;
            let n = metrics.num_updated_rows as u64;
            Ok(Some(changed(
                n,
                format!("{n} row{} updated in {}", plural(n), table.url()),
                &table,
            )))
        }
        Statement::Delete(delete) => {
            let tables = match &delete.from {
                FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t) => t,
            };
            let Some(TableFactor::Table { name, .. }) = tables.first().map(|t| &t.relation) else {
                return Ok(None);
            };
            let Some(table) = delta_table(ctx, &name.to_string()).await? else {
                return Ok(None);
            };
            if delete.using.is_some() {
                return plan(
                    "DELETE ... USING is not supported on Delta tables; use MERGE INTO ... WHEN MATCHED THEN DELETE",
                );
            }
            let mut builder = open_latest(ctx, &table).await?.delete();
            if let Some(selection) = &delete.selection {
                builder = builder.with_predicate(selection.to_string());
            }
            let (_, metrics) = builder.await.map_err(delta_err)?;
            let n = metrics.num_deleted_rows.unwrap_or(0) as u64;
            Ok(Some(changed(
                n,
                format!("{n} row{} deleted from {}", plural(n), table.url()),
                &table,
            )))
        }
        Statement::Merge(merge) => {
            let TableFactor::Table { name, alias, .. } = &merge.table else {
                return Ok(None);
            };
            let Some(table) = delta_table(ctx, &name.to_string()).await? else {
                return Ok(None);
            };
            let target_alias = alias
                .as_ref()
                .map(|a| a.name.value.clone())
                .unwrap_or_else(|| last_part(&name.to_string()));
            let (source_sql, source_alias) = match &merge.source {
                TableFactor::Table { name, alias, .. } => (
                    format!("SELECT * FROM {name}"),
                    alias
                        .as_ref()
                        .map(|a| a.name.value.clone())
                        .unwrap_or_else(|| last_part(&name.to_string())),
                ),
                TableFactor::Derived { subquery, alias, .. } => (
                    subquery.to_string(),
                    alias.as_ref().map(|a| a.name.value.clone()).ok_or_else(|| {
                        DataFusionError::Plan("give the MERGE source query an alias: USING (SELECT ...) AS s".into())
                    })?,
                ),
                _ => return plan("MERGE INTO ... USING takes a table or a (SELECT ...) AS alias"),
            };
            // The source runs on the cluster; its rows merge here.
            let source = ctx.sql(&source_sql).await?;
            let schema: SchemaRef = Arc::new(source.schema().as_arrow().clone());
            let batches = source.collect().await?;
            let local = SessionContext::new();
            let source_df = local.read_table(Arc::new(MemTable::try_new(schema, vec![batches])?))?;

            let mut builder = open_latest(ctx, &table)
                .await?
                .merge(source_df, merge.on.to_string())
                .with_source_alias(&source_alias)
                .with_target_alias(&target_alias);
            for clause in &merge.clauses {
                let predicate = clause.predicate.as_ref().map(|p| p.to_string());
                builder = match (&clause.clause_kind, &clause.action) {
                    (MergeClauseKind::Matched, MergeAction::Update(u)) => {
                        let sets: Vec<(String, String)> = assignments(&u.assignments)?;
                        builder
                            .when_matched_update(|mut b| {
                                if let Some(p) = predicate.clone() {
                                    b = b.predicate(p);
                                }
                                for (c, v) in sets {
                                    b = b.update(c, v);
                                }
                                b
                            })
                            .map_err(delta_err)?
                    }
                    (MergeClauseKind::Matched, MergeAction::Delete { .. }) => builder
                        .when_matched_delete(|mut b| {
                            if let Some(p) = predicate.clone() {
                                b = b.predicate(p);
                            }
                            b
                        })
                        .map_err(delta_err)?,
                    (MergeClauseKind::NotMatched | MergeClauseKind::NotMatchedByTarget, MergeAction::Insert(i)) => {
                        let columns: Vec<String> = if i.columns.is_empty() {
                            table.schema().fields().iter().map(|f| f.name().clone()).collect()
                        } else {
                            i.columns.iter().map(|c| last_part(&c.to_string())).collect()
                        };
                        let values: Vec<String> = match &i.kind {
                            MergeInsertKind::Values(v) => v
                                .rows
                                .first()
                                .map(|r| r.content.iter().map(|e| e.to_string()).collect())
                                .unwrap_or_default(),
                            _ => columns.iter().map(|c| format!("{source_alias}.{c}")).collect(),
                        };
                        if columns.len() != values.len() {
                            return plan("MERGE ... INSERT needs as many values as columns");
                        }
                        builder
                            .when_not_matched_insert(|mut b| {
                                if let Some(p) = predicate.clone() {
                                    b = b.predicate(p);
                                }
                                for (c, v) in columns.into_iter().zip(values) {
                                    b = b.set(c, v);
                                }
                                b
                            })
                            .map_err(delta_err)?
                    }
                    (MergeClauseKind::NotMatchedBySource, MergeAction::Delete { .. }) => builder
                        .when_not_matched_by_source_delete(|mut b| {
                            if let Some(p) = predicate.clone() {
                                b = b.predicate(p);
                            }
                            b
                        })
                        .map_err(delta_err)?,
                    _ => return plan("this MERGE clause is not supported on Delta tables"),
                };
            }
            let (_, m) = builder.await.map_err(delta_err)?;
            let n = (m.num_target_rows_inserted + m.num_target_rows_updated + m.num_target_rows_deleted) as u64;
            Ok(Some(changed(
                n,
                format!(
                    "merged into {}: {} inserted, {} updated, {} deleted",
                    table.url(),
                    m.num_target_rows_inserted,
                    m.num_target_rows_updated,
                    m.num_target_rows_deleted
                ),
                &table,
            )))
        }
        _ => Ok(None),
    }
}

fn changed(rows: u64, summary: String, table: &DeltaTable) -> Outcome {
    Outcome::Changed {
        rows,
        summary,
        target: table.url().to_string(),
    }
}

fn plan<T>(message: &str) -> Result<T> {
    Err(DataFusionError::Plan(message.to_owned()))
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// The last part of a possibly qualified name, unquoted.
fn last_part(name: &str) -> String {
    name.rsplit('.').next().unwrap_or(name).trim_matches('"').to_owned()
}

fn assignments(list: &[datafusion::sql::sqlparser::ast::Assignment]) -> Result<Vec<(String, String)>> {
    list.iter()
        .map(|a| match &a.target {
            AssignmentTarget::ColumnName(c) => Ok((last_part(&c.to_string()), a.value.to_string())),
            AssignmentTarget::Tuple(_) => plan("assign columns one by one"),
        })
        .collect()
}

/// The Delta table registered as `name`, if that name is one.
async fn delta_table(ctx: &SessionContext, name: &str) -> Result<Option<DeltaTable>> {
    let Ok(provider) = ctx.table_provider(name).await else {
        return Ok(None);
    };
    Ok(provider.downcast_ref::<DeltaTable>().cloned())
}

async fn open_latest(ctx: &SessionContext, table: &DeltaTable) -> Result<deltalake::DeltaTable> {
    if table.version() != &TableVersion::Latest {
        return plan("cannot change a past version of a Delta table");
    }
    open(
        table.url(),
        &TableVersion::Latest,
        storage_options(&ctx.copied_config(), table.url())?,
    )
    .await
}

/// `DESCRIBE HISTORY t [LIMIT n]`, `VACUUM t [RETAIN n HOURS] [DRY RUN]`, `OPTIMIZE t [ZORDER BY (c, ...)]`.
async fn maintenance(ctx: &SessionContext, sql: &str) -> Result<Option<Outcome>> {
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize() else {
        return Ok(None);
    };
    let words: Vec<Token> = tokens
        .into_iter()
        .filter(|t| !matches!(t, Token::Whitespace(_) | Token::SemiColon))
        .collect();
    let kw = |i: usize, k: Keyword| matches!(words.get(i), Some(Token::Word(w)) if w.keyword == k);
    let word_is = |i: usize, s: &str| matches!(words.get(i), Some(Token::Word(w)) if w.value.eq_ignore_ascii_case(s));
    let name_at = |i: usize| -> Option<(String, usize)> {
        let mut name = match words.get(i)? {
            Token::Word(w) => w.value.clone(),
            _ => return None,
        };
        let mut j = i + 1;
        while matches!(words.get(j), Some(Token::Period)) {
            if let Some(Token::Word(w)) = words.get(j + 1) {
                name.push('.');
                name.push_str(&w.value);
                j += 2;
            } else {
                break;
            }
        }
        Some((name, j))
    };
    let number = |i: usize| match words.get(i) {
        Some(Token::Number(n, _)) => n.parse::<f64>().ok(),
        _ => None,
    };

    if kw(0, Keyword::DESCRIBE) && word_is(1, "HISTORY") {
        let (name, next) =
            name_at(2).ok_or_else(|| DataFusionError::Plan("DESCRIBE HISTORY needs a table name".into()))?;
        let limit = if kw(next, Keyword::LIMIT) {
            number(next + 1).map(|n| n as usize)
        } else {
            None
        };
        let table = require(ctx, &name).await?;
        return history(ctx, &table, limit).await.map(Some);
    }
    if word_is(0, "VACUUM") {
        let (name, mut next) = name_at(1).ok_or_else(|| DataFusionError::Plan("VACUUM needs a table name".into()))?;
        let mut retain_hours = None;
        let mut dry_run = false;
        while next < words.len() {
            if word_is(next, "RETAIN") {
                retain_hours =
                    Some(number(next + 1).ok_or_else(|| DataFusionError::Plan("write RETAIN <n> HOURS".into()))?);
                next += 3;
            } else if word_is(next, "DRY") && word_is(next + 1, "RUN") {
                dry_run = true;
                next += 2;
            } else {
                return plan("VACUUM takes RETAIN <n> HOURS and DRY RUN");
            }
        }
        let table = require(ctx, &name).await?;
        return vacuum(ctx, &table, retain_hours, dry_run).await.map(Some);
    }
    if word_is(0, "OPTIMIZE") {
        let (name, next) = name_at(1).ok_or_else(|| DataFusionError::Plan("OPTIMIZE needs a table name".into()))?;
        let mut zorder = Vec::new();
        if word_is(next, "ZORDER") && kw(next + 1, Keyword::BY) {
            for t in &words[next + 2..] {
                if let Token::Word(w) = t {
                    zorder.push(w.value.clone());
                }
            }
            if zorder.is_empty() {
                return plan("write ZORDER BY (column, ...)");
            }
        } else if next < words.len() {
            return plan("OPTIMIZE takes an optional ZORDER BY (column, ...)");
        }
        let table = require(ctx, &name).await?;
        return optimize(ctx, &table, zorder).await.map(Some);
    }
    Ok(None)
}

async fn require(ctx: &SessionContext, name: &str) -> Result<DeltaTable> {
    delta_table(ctx, name)
        .await?
        .ok_or_else(|| DataFusionError::Plan(format!("'{name}' is not a Delta table: register it with CREATE EXTERNAL TABLE {name} STORED AS DELTA LOCATION '...'")))
}

async fn history(ctx: &SessionContext, table: &DeltaTable, limit: Option<usize>) -> Result<Outcome> {
    let t = open_latest(ctx, table).await?;
    let latest = t.version().unwrap_or(0) as i64;
    let commits: Vec<_> = t.history(limit).try_collect().await.map_err(delta_err)?;
    let mut versions = Vec::new();
    let mut times = Vec::new();
    let mut operations = Vec::new();
    let mut parameters = Vec::new();
    for (i, c) in commits.iter().enumerate() {
        versions.push(latest - i as i64);
        times.push(
            c.timestamp
                .and_then(chrono::DateTime::from_timestamp_millis)
                .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string()),
        );
        operations.push(c.operation.clone());
        parameters.push(
            c.operation_parameters
                .as_ref()
                .map(|p| serde_json::to_string(p).unwrap_or_default()),
        );
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("version", DataType::Int64, false),
        Field::new("timestamp", DataType::Utf8, true),
        Field::new("operation", DataType::Utf8, true),
        Field::new("operation_parameters", DataType::Utf8, true),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(versions)),
        Arc::new(StringArray::from(times)),
        Arc::new(StringArray::from(operations)),
        Arc::new(StringArray::from(parameters)),
    ];
    let batch = RecordBatch::try_new(Arc::clone(&schema), columns)?;
    Ok(Outcome::Rows(schema, vec![batch]))
}

/// Default retention of removed files, as in Spark and delta-rs: 7 days.
const DEFAULT_RETENTION_HOURS: f64 = 168.0;

async fn vacuum(ctx: &SessionContext, table: &DeltaTable, retain_hours: Option<f64>, dry_run: bool) -> Result<Outcome> {
    let hours = retain_hours.unwrap_or(DEFAULT_RETENTION_HOURS);
    let check = crate::options::quiver_options(&ctx.copied_config()).delta_retention_check;
    if hours < DEFAULT_RETENTION_HOURS && check {
        return plan(&format!(
            "VACUUM RETAIN {hours} HOURS is shorter than the 168-hour safety period: files a running reader still needs could go. \
             If no job reads the table, SET quiver.delta_retention_check = false first"
        ));
    }
    let (_, metrics) = open_latest(ctx, table)
        .await?
        .vacuum()
        .with_retention_period(chrono::Duration::milliseconds((hours * 3_600_000.0) as i64))
        .with_enforce_retention_duration(false)
        .with_dry_run(dry_run)
        .await
        .map_err(delta_err)?;
    let schema = Arc::new(Schema::new(vec![Field::new("path", DataType::Utf8, false)]));
    let files: ArrayRef = Arc::new(StringArray::from(metrics.files_deleted.clone()));
    let batch = RecordBatch::try_new(Arc::clone(&schema), vec![files])?;
    Ok(Outcome::Rows(schema, vec![batch]))
}

async fn optimize(ctx: &SessionContext, table: &DeltaTable, zorder: Vec<String>) -> Result<Outcome> {
    let mut builder = open_latest(ctx, table).await?.optimize();
    if !zorder.is_empty() {
        builder = builder.with_type(deltalake::operations::optimize::OptimizeType::ZOrder(zorder));
    }
    let (_, m) = builder.await.map_err(delta_err)?;
    let schema = Arc::new(Schema::new(vec![
        Field::new("files_removed", DataType::UInt64, false),
        Field::new("files_added", DataType::UInt64, false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(UInt64Array::from(vec![m.num_files_removed])),
        Arc::new(UInt64Array::from(vec![m.num_files_added])),
    ];
    let batch = RecordBatch::try_new(Arc::clone(&schema), columns)?;
    Ok(Outcome::Rows(schema, vec![batch]))
}

/// Rewrites `t VERSION AS OF n` and `t TIMESTAMP AS OF '...'` on Delta tables
/// into names of tables pinned to that version, which it registers.
pub async fn rewrite_time_travel(ctx: &SessionContext, sql: &str) -> Result<String> {
    let dialect = GenericDialect {};
    let Ok(tokens) = Tokenizer::new(&dialect, sql).tokenize_with_location() else {
        return Ok(sql.to_owned());
    };
    let code: Vec<_> = tokens
        .iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_)))
        .collect();
    let is_kw = |i: usize, k: Keyword| matches!(code.get(i).map(|t| &t.token), Some(Token::Word(w)) if w.keyword == k);
    let mut replacements: Vec<(usize, usize, String)> = Vec::new();
    let mut i = 0;
    while i < code.len() {
        let versioned = (is_kw(i + 1, Keyword::VERSION) || is_kw(i + 1, Keyword::TIMESTAMP))
            && is_kw(i + 2, Keyword::AS)
            && is_kw(i + 3, Keyword::OF);
        if let (Some(Token::Word(w)), true) = (code.get(i).map(|t| &t.token), versioned) {
            let value = match code.get(i + 4).map(|t| &t.token) {
                Some(Token::Number(n, _)) => n.clone(),
                Some(Token::SingleQuotedString(s)) => s.clone(),
                _ => return plan("write VERSION AS OF <number> or TIMESTAMP AS OF '<timestamp>'"),
            };
            let version = if is_kw(i + 1, Keyword::VERSION) {
                TableVersion::Version(
                    value
                        .parse()
                        .map_err(|_| DataFusionError::Plan(format!("VERSION AS OF takes a number, not {value}")))?,
                )
            } else {
                TableVersion::Timestamp(parse_timestamp(&value)?)
            };
            let table = require(ctx, &w.value).await?;
            let pinned = table.at(version.clone());
            let alias = match &version {
                TableVersion::Version(v) => format!("{}__v{v}", w.value),
                TableVersion::Timestamp(t) => format!("{}__t{}", w.value, t.timestamp_millis()),
                TableVersion::Latest => w.value.clone(),
            };
            // Check now that the version exists, with a clear message if not.
            open(
                pinned.url(),
                &version,
                storage_options(&ctx.copied_config(), pinned.url())?,
            )
            .await
            .map_err(|e| DataFusionError::Plan(format!("{} has no such version ({value}): {e}", w.value)))?;
            if ctx.table_exist(alias.as_str())? {
                ctx.deregister_table(alias.as_str())?;
            }
            ctx.register_table(alias.as_str(), Arc::new(pinned) as Arc<dyn TableProvider>)?;
            let start = code[i].span.start;
            let end = code[i + 4].span.end;
            // Keep the table's own name as its alias unless the query gives one.
            let user_alias = match code.get(i + 5).map(|t| &t.token) {
                Some(Token::Word(next)) => next.keyword == Keyword::AS || next.keyword == Keyword::NoKeyword,
                _ => false,
            };
            let text = if user_alias {
                alias.clone()
            } else {
                format!("{alias} AS {}", w.value)
            };
            replacements.push((
                crate::script::offset_of(sql, start.line, start.column),
                crate::script::offset_of(sql, end.line, end.column),
                text,
            ));
            i += 5;
        } else {
            i += 1;
        }
    }
    let mut out = sql.to_owned();
    for (start, end, text) in replacements.into_iter().rev() {
        out.replace_range(start..end, &text);
    }
    Ok(out)
}
