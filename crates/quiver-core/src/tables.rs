//! `CREATE EXTERNAL TABLE` for files: globs that work on S3 and survive the trip to the cluster.
//!
//! DataFusion accepts glob patterns (`part-*.csv`, `day=2024-01-0[12]`) only in
//! local paths, and its plan serialization keeps a table's URL but drops the
//! pattern, so a scheduler would read every file under the prefix. Quiver's
//! [`QuiverTableFactory`] splits the pattern off any URL (`s3://b/raw/*.json`)
//! and returns a [`GlobTable`], which [`crate::codec::QuiverLogicalCodec`]
//! serializes with its pattern. Tables without a pattern stay plain
//! `ListingTable`s.
//!
//! Note: as in DataFusion, directory segments of the form `key=value` are
//! partitions, not pattern targets; filter on the partition column instead.
//!
//! Arrow IPC tables without declared columns get them from their files'
//! footers first ([`crate::arrow_schema`]).
//!
//! Partition columns found in the directory names (no declared schema) are
//! plain strings, as in Spark. DataFusion makes them dictionaries
//! (`Dictionary(UInt16, Utf8)`), which Ballista's executors send to each
//! other hydrated to plain strings when a sort's range shuffle reads them,
//! and a `GROUP BY month ORDER BY month` then failed on a cluster with
//! `RowConverter column schema mismatch` ([`plain_partition_columns`]).

use std::borrow::Cow;
use std::sync::Arc;

use arrow::datatypes::{DataType, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider, TableProviderFactory};
use datafusion::common::{Result, plan_err};
use datafusion::datasource::TableType;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::datasource::listing_table_factory::ListingTableFactory;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{CreateExternalTable, Expr, LogicalPlan, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;

use crate::arrow_schema::declare_arrow_schema;

/// Characters that start a glob pattern.
const GLOB_CHARS: [char; 3] = ['*', '?', '['];

/// Splits `location` at the first path segment holding a glob character:
/// `s3://b/raw/day=1/*.csv` → (`s3://b/raw/day=1/`, `*.csv`).
///
/// ```
/// use quiver_core::tables::split_glob;
/// assert_eq!(split_glob("s3://b/raw/*.csv"), Some(("s3://b/raw/".to_string(), "*.csv".to_string())));
/// assert_eq!(split_glob("s3://b/raw/"), None);
/// ```
pub fn split_glob(location: &str) -> Option<(String, String)> {
    let start = location.find(GLOB_CHARS)?;
    let base_end = location[..start].rfind('/')? + 1;
    Some((location[..base_end].to_owned(), location[base_end..].to_owned()))
}

/// The schema of a listing table's files: its schema without partition columns.
pub fn file_schema(table: &ListingTable) -> SchemaRef {
    let partition_cols: Vec<&String> = table.options().table_partition_cols.iter().map(|(n, _)| n).collect();
    Arc::new(Schema::new(
        table
            .schema()
            .fields()
            .iter()
            .filter(|f| !partition_cols.contains(&f.name()))
            .map(|f| f.as_ref().clone())
            .collect::<Vec<_>>(),
    ))
}

/// A listing table whose files are chosen by a glob pattern.
#[derive(Debug)]
pub struct GlobTable {
    inner: Arc<ListingTable>,
    locations: Vec<String>,
}

impl GlobTable {
    /// Rebuilds `template` (a table over the patterns' base directories) with
    /// the patterns of `locations`.
    ///
    /// A relative local path is resolved here, against this process's
    /// working directory, and kept resolved: the scheduler that decodes the
    /// table runs elsewhere, and read `data/*.csv` under its own directory
    /// (no files, an empty answer).
    pub fn new(template: &ListingTable, locations: Vec<String>) -> Result<Self> {
        let mut urls = Vec::with_capacity(locations.len());
        let mut resolved = Vec::with_capacity(locations.len());
        for location in &locations {
            let url = match split_glob(location) {
                Some((base, pattern)) => {
                    let base = ListingTableUrl::parse(&base)?;
                    resolved.push(format!("{}{pattern}", base.as_str()));
                    base.with_glob(&pattern)?
                }
                None => {
                    let url = ListingTableUrl::parse(location)?;
                    resolved.push(url.as_str().to_owned());
                    url
                }
            };
            urls.push(url);
        }
        let config = ListingTableConfig::new_with_multi_paths(urls)
            .with_listing_options(template.options().clone())
            .with_schema(file_schema(template));
        Ok(Self {
            inner: Arc::new(ListingTable::try_new(config)?),
            locations: resolved,
        })
    }

    /// The locations, patterns included, local paths made absolute.
    pub fn locations(&self) -> &[String] {
        &self.locations
    }

    /// The listing table that reads the files.
    pub fn listing(&self) -> &Arc<ListingTable> {
        &self.inner
    }
}

#[async_trait]
impl TableProvider for GlobTable {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn get_logical_plan(&self) -> Option<Cow<'_, LogicalPlan>> {
        None
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.inner.scan(state, projection, filters, limit).await
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        self.inner.supports_filters_pushdown(filters)
    }

    async fn insert_into(
        &self,
        _state: &dyn Session,
        _input: Arc<dyn ExecutionPlan>,
        _insert_op: InsertOp,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan_err!(
            "cannot INSERT INTO a table defined by a file pattern ({}): create a table over a directory to write to",
            self.locations.join(", ")
        )
    }
}

/// The factory behind `CREATE EXTERNAL TABLE ... STORED AS CSV|JSON|PARQUET|...`.
#[derive(Debug, Default)]
pub struct QuiverTableFactory {
    listing: ListingTableFactory,
}

#[async_trait]
impl TableProviderFactory for QuiverTableFactory {
    async fn create(&self, state: &dyn Session, cmd: &CreateExternalTable) -> Result<Arc<dyn TableProvider>> {
        if !cmd.locations.iter().any(|l| split_glob(l).is_some()) {
            let cmd = declare_arrow_schema(state, cmd).await?;
            return plain_partition_columns(self.listing.create(state, &cmd).await?);
        }
        // Let DataFusion set the table up over the patterns' base directories
        // (format, options, schema), then narrow it to the patterns.
        let mut bases: Vec<String> = Vec::new();
        for location in &cmd.locations {
            let base = split_glob(location).map(|(b, _)| b).unwrap_or_else(|| location.clone());
            if !bases.contains(&base) {
                bases.push(base);
            }
        }
        let mut base_cmd = cmd.clone();
        base_cmd.locations = bases;
        let base_cmd = declare_arrow_schema(state, &base_cmd).await?;
        let template = plain_partition_columns(self.listing.create(state, &base_cmd).await?)?;
        let Some(listing) = template.downcast_ref::<ListingTable>() else {
            return Ok(template);
        };
        Ok(Arc::new(GlobTable::new(listing, cmd.locations.clone())?))
    }
}

/// `table` with its dictionary-typed partition columns (those DataFusion
/// infers from `key=value` directories) as plain strings; other tables as
/// they are. See the [module docs](self).
pub fn plain_partition_columns(table: Arc<dyn TableProvider>) -> Result<Arc<dyn TableProvider>> {
    let Some(listing) = table.downcast_ref::<ListingTable>() else {
        return Ok(table);
    };
    let partitions = &listing.options().table_partition_cols;
    if !partitions.iter().any(|(_, t)| matches!(t, DataType::Dictionary(_, _))) {
        return Ok(table);
    }
    let plain = partitions
        .iter()
        .map(|(name, t)| match t {
            DataType::Dictionary(_, value) => (name.clone(), value.as_ref().clone()),
            other => (name.clone(), other.clone()),
        })
        .collect();
    with_options(listing, listing.options().clone().with_table_partition_cols(plain))
}

/// `listing` read (or written) with other `options`: the same paths, file
/// columns, constraints and definition.
pub fn with_options(listing: &ListingTable, options: ListingOptions) -> Result<Arc<dyn TableProvider>> {
    let config = ListingTableConfig::new_with_multi_paths(listing.table_paths().clone())
        .with_listing_options(options)
        .with_schema(file_schema(listing));
    let table = ListingTable::try_new(config)?
        .with_constraints(listing.constraints().cloned().unwrap_or_default())
        .with_definition(listing.get_table_definition().map(str::to_owned));
    Ok(Arc::new(table))
}

/// Installs Quiver's table factories: files (every format the session knows) and Delta.
pub fn install(ctx: &SessionContext) {
    let state = ctx.state_ref();
    let mut state = state.write();
    let formats: Vec<String> = state.table_factories().keys().cloned().collect();
    for f in formats {
        state
            .table_factories_mut()
            .insert(f, Arc::new(QuiverTableFactory::default()));
    }
    for name in ["DELTA", "DELTATABLE"] {
        state
            .table_factories_mut()
            .insert(name.into(), Arc::new(crate::delta::DeltaTableFactory));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_split_at_their_segment() {
        assert_eq!(
            split_glob("s3://b/x/day=2024-01-0[12]/*.csv"),
            Some(("s3://b/x/".into(), "day=2024-01-0[12]/*.csv".into()))
        );
        assert_eq!(
            split_glob("/data/part-?.parquet"),
            Some(("/data/".into(), "part-?.parquet".into()))
        );
        assert_eq!(split_glob("s3://b/plain/"), None);
    }

    #[tokio::test]
    async fn glob_tables_read_only_matching_files() {
        let dir = tempfile::tempdir().unwrap();
        for (name, rows) in [("a-1.csv", "1\n2\n"), ("a-2.csv", "3\n"), ("b-1.csv", "100\n")] {
            std::fs::write(dir.path().join(name), format!("x\n{rows}")).unwrap();
        }
        let ctx = SessionContext::new();
        install(&ctx);
        ctx.sql(&format!(
            "CREATE EXTERNAL TABLE t (x BIGINT) STORED AS CSV LOCATION '{}/a-*.csv' OPTIONS ('format.has_header' 'true')",
            dir.path().display()
        ))
        .await
        .unwrap();
        let provider = ctx.table_provider("t").await.unwrap();
        assert!(provider.downcast_ref::<GlobTable>().is_some());
        let batches = ctx.sql("SELECT sum(x) FROM t").await.unwrap().collect().await.unwrap();
        let text = arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string();
        assert!(text.contains("| 6 "), "{text}");
        let err = ctx
            .sql("INSERT INTO t VALUES (1)")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap_err();
        assert!(err.to_string().contains("file pattern"), "{err}");
    }

    #[tokio::test]
    async fn relative_patterns_are_kept_resolved() {
        let ctx = SessionContext::new();
        install(&ctx);
        // A relative location that matches nothing still makes a table.
        ctx.sql("CREATE EXTERNAL TABLE t (x BIGINT) STORED AS CSV LOCATION 'no-such-dir/day=1/*.csv'")
            .await
            .unwrap();
        let provider = ctx.table_provider("t").await.unwrap();
        let glob = provider.downcast_ref::<GlobTable>().unwrap();
        let cwd = std::env::current_dir().unwrap();
        let want = format!(
            "{}no-such-dir/day=1/*.csv",
            ListingTableUrl::parse(cwd.to_str().unwrap()).unwrap().as_str()
        );
        assert_eq!(glob.locations(), [want]);
    }
}
