//! [`DeltaTable`]: a Delta table as a DataFusion table that every process can plan and scan.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{Field, Schema, SchemaRef};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use datafusion::catalog::{Session, TableProvider, TableProviderFactory};
use datafusion::common::{DFSchema, ScalarValue, plan_err};
use datafusion::datasource::TableType;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder};
use datafusion::datasource::table_schema::TableSchemaBuilder;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{CreateExternalTable, Expr, LogicalPlan, TableProviderFilterPushDown};
use datafusion::physical_optimizer::pruning::PruningPredicateBuilder;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::empty::EmptyExec;
use serde::{Deserialize, Serialize};
use url::Url;

use super::write::{DeltaCommitExec, DeltaWriteExec, WriteMode};
use super::{delta_err, open, storage_options, table_url};

/// Which version of a table a query reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TableVersion {
    /// The newest version when the query runs.
    Latest,
    /// A version number (`VERSION AS OF 3`).
    Version(i64),
    /// The version current at a time (`TIMESTAMP AS OF '2024-05-01T00:00:00Z'`).
    Timestamp(DateTime<Utc>),
}

impl TableVersion {
    /// Parses the `version` / `timestamp` options of `CREATE EXTERNAL TABLE`.
    pub fn from_options(options: &HashMap<String, String>) -> Result<Self> {
        let get = |k: &str| options.get(k).or_else(|| options.get(&format!("format.{k}")));
        match (get("version"), get("timestamp")) {
            (Some(_), Some(_)) => plan_err!("give a Delta table either a 'version' or a 'timestamp' option, not both"),
            (Some(v), None) => v.trim().parse::<i64>().map(TableVersion::Version).map_err(|_| {
                DataFusionError::Plan(format!("Delta table option 'version' must be a number, not '{v}'"))
            }),
            (None, Some(t)) => parse_timestamp(t).map(TableVersion::Timestamp),
            (None, None) => Ok(TableVersion::Latest),
        }
    }
}

/// Parses `2024-05-01`, `2024-05-01 12:00:00` or RFC 3339 (UTC unless an offset is given).
pub fn parse_timestamp(text: &str) -> Result<DateTime<Utc>> {
    let t = text.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return Ok(dt.with_timezone(&Utc));
    }
    for format in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S",
    ] {
        if let Ok(naive) = chrono::NaiveDateTime::parse_from_str(t, format) {
            return Ok(naive.and_utc());
        }
    }
    if let Ok(date) = chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return Ok(date.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc());
    }
    plan_err!("'{text}' is not a timestamp: write 2024-05-01, 2024-05-01 12:00:00 or 2024-05-01T12:00:00Z")
}

/// A Delta table: the log is read where a query is planned, the files by
/// DataFusion's Parquet scan wherever its tasks run.
#[derive(Debug, Clone)]
pub struct DeltaTable {
    url: Url,
    version: TableVersion,
    /// The table's columns, in the table's order.
    schema: SchemaRef,
    partition_cols: Vec<String>,
    /// False for a table a `CREATE TABLE ... AS` is about to create.
    exists: bool,
}

/// Reader features Quiver honours; others are refused rather than misread.
const SUPPORTED_READER_FEATURES: &[&str] = &[
    "timestampNtz",
    "v2Checkpoint",
    "vacuumProtocolCheck",
    "typeWidening",
    "typeWidening-preview",
];

impl DeltaTable {
    /// Opens the table at `location` as of `version`, with `config`'s storage settings.
    pub async fn open(
        location: &str,
        version: TableVersion,
        config: &datafusion::prelude::SessionConfig,
    ) -> Result<Self> {
        let url = table_url(location)?;
        let table = open(&url, &version, storage_options(config, &url)?).await?;
        check_readable(&table, &url)?;
        let snapshot = table.snapshot().map_err(delta_err)?;
        let partition_cols = snapshot.metadata().partition_columns().to_vec();
        let schema = snapshot.snapshot().arrow_schema();
        Ok(Self {
            url,
            version,
            schema,
            partition_cols,
            exists: true,
        })
    }

    /// A table that a `CREATE TABLE ... AS` will create at `location`.
    pub fn pending(location: &str, schema: SchemaRef, partition_cols: Vec<String>) -> Result<Self> {
        for col in &partition_cols {
            if schema.field_with_name(col).is_err() {
                return plan_err!("PARTITIONED BY column '{col}' is not a column of the query");
            }
        }
        Ok(Self {
            url: table_url(location)?,
            version: TableVersion::Latest,
            schema,
            partition_cols,
            exists: false,
        })
    }

    /// Rebuilds a table from its parts (plan decoding).
    pub fn from_parts(
        url: Url,
        version: TableVersion,
        schema: SchemaRef,
        partition_cols: Vec<String>,
        exists: bool,
    ) -> Self {
        Self {
            url,
            version,
            schema,
            partition_cols,
            exists,
        }
    }

    /// The same table pinned to `version` (time travel).
    pub fn at(&self, version: TableVersion) -> Self {
        Self {
            version,
            ..self.clone()
        }
    }

    /// The table's location.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The version it reads.
    pub fn version(&self) -> &TableVersion {
        &self.version
    }

    /// Its partition columns.
    pub fn partition_cols(&self) -> &[String] {
        &self.partition_cols
    }

    /// False while a `CREATE TABLE ... AS` has not created it yet.
    pub fn exists(&self) -> bool {
        self.exists
    }

    fn file_schema(&self) -> Schema {
        Schema::new(
            self.schema
                .fields()
                .iter()
                .filter(|f| !self.partition_cols.contains(f.name()))
                .map(|f| f.as_ref().clone())
                .collect::<Vec<_>>(),
        )
    }
}

/// Refuses tables Quiver cannot read correctly.
fn check_readable(table: &deltalake::DeltaTable, url: &Url) -> Result<()> {
    let snapshot = table.snapshot().map_err(delta_err)?;
    let protocol = serde_json::to_value(snapshot.protocol()).unwrap_or_default();
    if let Some(features) = protocol.get("readerFeatures").and_then(|f| f.as_array()) {
        for f in features.iter().filter_map(|f| f.as_str()) {
            if !SUPPORTED_READER_FEATURES.contains(&f) {
                let why = match f {
                    "deletionVectors" => "deletion vectors (rows deleted without rewriting files)",
                    "columnMapping" => "column mapping",
                    _ => "a reader feature Quiver does not support",
                };
                return plan_err!(
                    "cannot read the Delta table at {url}: it uses {why} ('{f}'). Quiver refuses rather than return wrong rows; \
                     rewrite the table without it (e.g. REORG/purge in Spark, or disable the feature and OPTIMIZE)"
                );
            }
        }
    }
    let mode = snapshot
        .metadata()
        .configuration()
        .get("delta.columnMapping.mode")
        .cloned();
    if mode.as_deref().is_some_and(|m| m != "none") {
        return plan_err!(
            "cannot read the Delta table at {url}: it uses column mapping (mode {}), which Quiver does not support",
            mode.unwrap_or_default()
        );
    }
    Ok(())
}

/// The object store URL and the path prefix of a table's files.
fn store_root(url: &Url) -> Result<(ObjectStoreUrl, String)> {
    let store = ObjectStoreUrl::parse(format!("{}://{}", url.scheme(), url.authority()))?;
    Ok((store, url.path().trim_start_matches('/').to_owned()))
}

#[async_trait]
impl TableProvider for DeltaTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn get_logical_plan(&self) -> Option<Cow<'_, LogicalPlan>> {
        None
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        // Used to skip files; rows are still filtered after the scan.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if !self.exists {
            return Ok(Arc::new(EmptyExec::new(datafusion::physical_plan::project_schema(
                &self.schema,
                projection,
            )?)));
        }
        let table = open(&self.url, &self.version, storage_options(state.config(), &self.url)?).await?;
        check_readable(&table, &self.url)?;
        let snapshot = table.snapshot().map_err(delta_err)?;
        let log_data = snapshot.log_data();
        let files: Vec<_> = log_data.iter().collect();
        if files.iter().any(|f| f.deletion_vector_descriptor().is_some()) {
            return plan_err!(
                "cannot read the Delta table at {}: some files have deletion vectors, which Quiver does not apply; \
                 rewrite the table (OPTIMIZE with purge) before reading it here",
                self.url
            );
        }

        // File skipping: partition values and min/max statistics from the log.
        let keep: Vec<bool> = match conjunction(filters.to_vec()) {
            Some(predicate) => {
                let df_schema = DFSchema::try_from(Arc::clone(&self.schema))?;
                let physical = state.create_physical_expr(predicate, &df_schema)?;
                PruningPredicateBuilder::new()
                    .with_file_schema(Arc::clone(&self.schema))
                    .build(physical)
                    .and_then(|p| p.prune(&log_data).ok())
                    .unwrap_or_else(|| vec![true; files.len()])
            }
            None => vec![true; files.len()],
        };
        let (store, prefix) = store_root(&self.url)?;
        let partition_fields: Vec<Arc<Field>> = self
            .partition_cols
            .iter()
            .map(|c| {
                Arc::new(
                    self.schema
                        .field_with_name(c)
                        .expect("partition column in schema")
                        .clone(),
                )
            })
            .collect();
        let mut selected = Vec::new();
        for (file, _) in files.iter().zip(&keep).filter(|(_, k)| **k) {
            let relative = file.path();
            let path = match Url::parse(&relative) {
                Ok(absolute) => absolute.path().trim_start_matches('/').to_owned(),
                Err(_) => format!("{prefix}{relative}"),
            };
            let values = file.partition_values_map();
            let mut partition_values = Vec::with_capacity(partition_fields.len());
            for field in &partition_fields {
                let value = match values.get(field.name()).cloned().flatten() {
                    Some(text) => ScalarValue::try_from_string(text, field.data_type())?,
                    None => ScalarValue::try_from(field.data_type())?,
                };
                partition_values.push(value);
            }
            let mut pf = PartitionedFile::new(path, file.size().max(0) as u64);
            pf.partition_values = partition_values;
            selected.push(pf);
        }
        tracing::debug!(table = %self.url, files = files.len(), selected = selected.len(), "Delta scan");

        // The scan yields file columns, then partition columns; map the
        // requested columns (in the table's order) onto that layout.
        let file_schema = self.file_schema();
        let internal: Vec<usize> = (0..self.schema.fields().len())
            .map(|i| {
                let name = self.schema.field(i).name();
                match self.partition_cols.iter().position(|p| p == name) {
                    Some(p) => file_schema.fields().len() + p,
                    None => file_schema.index_of(name).expect("a data column"),
                }
            })
            .collect();
        let projection: Vec<usize> = match projection {
            Some(p) => p.iter().map(|i| internal[*i]).collect(),
            None => internal,
        };
        let table_schema = TableSchemaBuilder::from(&Arc::new(file_schema))
            .with_table_partition_cols(partition_fields)
            .build();
        let format = ParquetFormat::default().with_options(state.table_options().parquet.clone());
        let source = format.file_source(table_schema);
        let config = FileScanConfigBuilder::new(store, source)
            .with_file_groups(groups(selected, state.config().target_partitions()))
            .with_projection_indices(Some(projection))?
            .with_limit(limit)
            .build();
        format.create_physical_plan(state, config).await
    }

    async fn insert_into(
        &self,
        _state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        insert_op: InsertOp,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let mode = match insert_op {
            InsertOp::Append => WriteMode::Append,
            InsertOp::Overwrite => WriteMode::Overwrite,
            InsertOp::Replace => return plan_err!("REPLACE INTO is not supported for Delta tables; use MERGE INTO"),
        };
        if self.version != TableVersion::Latest {
            return plan_err!("cannot write to a past version of a Delta table");
        }
        let write = Arc::new(DeltaWriteExec::new(
            input,
            self.url.clone(),
            Arc::clone(&self.schema),
            self.partition_cols.clone(),
        ));
        let gathered = Arc::new(CoalescePartitionsExec::new(write));
        Ok(Arc::new(DeltaCommitExec::new(
            gathered,
            self.url.clone(),
            Arc::clone(&self.schema),
            self.partition_cols.clone(),
            mode,
            self.exists,
        )))
    }

    async fn delete_from(&self, _state: &dyn Session, _filters: Vec<Expr>) -> Result<Arc<dyn ExecutionPlan>> {
        plan_err!("run DELETE on Delta tables through `quiver sql` or `quiver submit` (or quiver_core::delta::sql)")
    }

    async fn update(
        &self,
        _state: &dyn Session,
        _assignments: Vec<(String, Expr)>,
        _filters: Vec<Expr>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan_err!("run UPDATE on Delta tables through `quiver sql` or `quiver submit` (or quiver_core::delta::sql)")
    }
}

/// Spreads files over at most `n` groups of similar total size.
fn groups(mut files: Vec<PartitionedFile>, n: usize) -> Vec<FileGroup> {
    let n = n.max(1).min(files.len().max(1));
    files.sort_by_key(|f| std::cmp::Reverse(f.object_meta.size));
    let mut groups: Vec<(u64, Vec<PartitionedFile>)> = (0..n).map(|_| (0, Vec::new())).collect();
    for f in files {
        let smallest = groups
            .iter_mut()
            .min_by_key(|(size, _)| *size)
            .expect("at least one group");
        smallest.0 += f.object_meta.size;
        smallest.1.push(f);
    }
    groups
        .into_iter()
        .filter(|(_, g)| !g.is_empty())
        .map(|(_, g)| FileGroup::new(g))
        .collect()
}

/// `CREATE EXTERNAL TABLE t STORED AS DELTA|DELTATABLE LOCATION '...' [OPTIONS ('version' '3')]`.
#[derive(Debug, Default)]
pub struct DeltaTableFactory;

#[async_trait]
impl TableProviderFactory for DeltaTableFactory {
    async fn create(&self, state: &dyn Session, cmd: &CreateExternalTable) -> Result<Arc<dyn TableProvider>> {
        let [location] = cmd.locations.as_slice() else {
            return plan_err!("a Delta table has one LOCATION");
        };
        let version = TableVersion::from_options(&cmd.options)?;
        let table = DeltaTable::open(location, version, state.config()).await?;
        if !cmd.schema.fields().is_empty() {
            let declared: Vec<&String> = cmd.schema.fields().iter().map(|f| f.name()).collect();
            let actual: Vec<&String> = table.schema.fields().iter().map(|f| f.name()).collect();
            if declared.iter().any(|d| !actual.contains(d)) {
                return plan_err!(
                    "the columns declared for {} ({}) are not the Delta table's ({}); leave them out to use the table's schema",
                    cmd.name,
                    declared.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
                    actual.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                );
            }
        }
        Ok(Arc::new(table))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_from_options() {
        let opts = |k: &str, v: &str| HashMap::from([(k.to_string(), v.to_string())]);
        assert_eq!(
            TableVersion::from_options(&HashMap::new()).unwrap(),
            TableVersion::Latest
        );
        assert_eq!(
            TableVersion::from_options(&opts("version", "3")).unwrap(),
            TableVersion::Version(3)
        );
        assert!(TableVersion::from_options(&opts("version", "three")).is_err());
        let TableVersion::Timestamp(t) = TableVersion::from_options(&opts("timestamp", "2024-05-01 12:00:00")).unwrap()
        else {
            panic!()
        };
        assert_eq!(t.to_rfc3339(), "2024-05-01T12:00:00+00:00");
        assert!(parse_timestamp("yesterday").is_err());
    }

    #[test]
    fn files_spread_evenly() {
        let files: Vec<PartitionedFile> = [100u64, 90, 10, 10, 5]
            .iter()
            .enumerate()
            .map(|(i, s)| PartitionedFile::new(format!("f{i}"), *s))
            .collect();
        let g = groups(files, 2);
        let sizes: Vec<u64> = g
            .iter()
            .map(|g| g.files().iter().map(|f| f.object_meta.size).sum())
            .collect();
        assert_eq!(sizes.len(), 2);
        assert!(sizes.iter().all(|s| (100..=115).contains(s)), "{sizes:?}");
    }
}
