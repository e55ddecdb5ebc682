//! `CREATE TABLE ... AS SELECT` into files (Parquet, CSV, JSON) or a Delta
//! table: at its `LOCATION` or in the warehouse (`quiver.warehouse_dir`); the
//! location must be empty, the table is registered afterwards.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::config::TableOptions;
use datafusion::dataframe::DataFrameWriteOptions;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::json::JsonFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::error::DataFusionError;
use futures::TryStreamExt;

use super::{OutputKind, Produced, RunError, StatementRunner, count_of, empty_schema, written};
use crate::ctas::{CreateTableAs, TableFormat};
use crate::options::quiver_options;

impl StatementRunner {
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

    /// `CREATE TABLE IF NOT EXISTS t USING delta LOCATION l` where `l` holds
    /// a Delta table already: as in Spark, that table is `t` and nothing is
    /// written (so a daily job can create its table on the first run only).
    async fn existing_delta_table(&self, ctas: &CreateTableAs, location: &str) -> Result<Option<Produced>, RunError> {
        let location = format!("{}/", location.trim_end_matches('/'));
        let log = ListingTableUrl::parse(format!("{location}_delta_log/"))?;
        let store = self.ctx.runtime_env().object_store(&log)?;
        let has_log = store
            .list(Some(log.prefix()))
            .try_next()
            .await
            .map_err(DataFusionError::from)?
            .is_some();
        if !has_log {
            return Ok(None);
        }
        let table =
            crate::delta::DeltaTable::open(&location, crate::delta::TableVersion::Latest, &self.ctx.copied_config())
                .await?;
        self.ctx.register_table(ctas.name.as_str(), Arc::new(table))?;
        Ok(Some((
            OutputKind::Done,
            format!("Delta table {} exists at {location}", ctas.name),
            empty_schema(),
            vec![],
        )))
    }

    /// `CREATE TABLE t USING delta ... AS SELECT`: one distributed write, one commit.
    async fn create_delta_table_as(&self, ctas: CreateTableAs, location: &str) -> Result<Produced, RunError> {
        if let Some(done) = self.check_new_name(&ctas)? {
            return Ok(done);
        }
        if ctas.if_not_exists
            && let Some(done) = self.existing_delta_table(&ctas, location).await?
        {
            return Ok(done);
        }
        let (location, _) = self.empty_location(location).await?;
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

    pub(super) async fn create_table_as(&self, ctas: CreateTableAs) -> Result<Produced, RunError> {
        let warehouse = quiver_options(&self.ctx.copied_config()).warehouse_dir;
        let location = ctas.location_in(warehouse.as_deref()).map_err(RunError::User)?;
        if ctas.format == TableFormat::Delta {
            return self.create_delta_table_as(ctas, &location).await;
        }
        if let Some(done) = self.check_new_name(&ctas)? {
            return Ok(done);
        }
        let exists = self.ctx.table_exist(ctas.name.as_str())?;
        let (location, table_url) = self.empty_location(&location).await?;

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
            TableFormat::Delta => return self.create_delta_table_as(ctas, &location).await,
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
