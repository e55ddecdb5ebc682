//! How a client turns a query into a physical plan: Ballista's distributed
//! plan, with these repairs.
//!
//! * Every distributed query's rows get their declared types back
//!   ([`ConformExec`]: Flight delivers dictionaries hydrated).
//! * Writes into an in-memory table (`CREATE TABLE t (..)` then `INSERT INTO
//!   t ...`, `DELETE`, `UPDATE`) change the client's table. Shipped to the
//!   cluster, an `INSERT` appended to a copy on an executor and the rows were
//!   lost. The query that produces the rows still runs on the cluster; the
//!   rows are appended here.
//! * Statements that read no data and that the plan format cannot carry
//!   (`DESCRIBE t`) are answered by the client.
//! * A `COPY ... TO` a relative local path writes where one process would:
//!   relative to the client's working directory, not the scheduler's
//!   ([`anchor_copy_target`]).
//! * A `COPY ... TO`'s `OPTIONS` travel inside its file format: the plan
//!   format keeps the format but not the options, so on a cluster
//!   `'format.has_header' 'false'`, a delimiter or a Parquet compression
//!   were dropped and the file written with the defaults
//!   ([`carry_copy_options`]).
//! * An empty relation with columns (what `WHERE FALSE` or a join with an
//!   empty side becomes) keeps its columns on the way to the scheduler: the
//!   plan format carries only whether it yields a row, so the scheduler
//!   read a relation without columns and refused the plan ("No field named
//!   y.s"). It travels as an empty in-memory table ([`carry_empty_relations`]).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::catalog::Session;
use datafusion::catalog::default_table_source::{provider_as_source, source_as_provider};
use datafusion::common::tree_node::Transformed;
use datafusion::common::{Column, Result};
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::csv::{CsvFormat, CsvFormatFactory};
use datafusion::datasource::file_format::json::{JsonFormat, JsonFormatFactory};
use datafusion::datasource::file_format::parquet::{ParquetFormat, ParquetFormatFactory};
use datafusion::datasource::file_format::{FileFormatFactory, file_type_to_format, format_as_file_type};
use datafusion::execution::context::QueryPlanner;
use datafusion::logical_expr::{DmlStatement, Expr, LogicalPlan, LogicalPlanBuilder, WriteOp};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_planner::{DefaultPhysicalPlanner, PhysicalPlanner};

use crate::conform::ConformExec;

/// A client's query planner around Ballista's; see the [module docs](self).
#[derive(Debug)]
pub struct ClientQueryPlanner {
    distributed: Arc<dyn QueryPlanner + Send + Sync>,
}

impl ClientQueryPlanner {
    /// Wraps `distributed`, the planner that sends queries to the cluster.
    pub fn new(distributed: Arc<dyn QueryPlanner + Send + Sync>) -> Self {
        Self { distributed }
    }

    async fn on_cluster(&self, plan: &LogicalPlan, session: &dyn Session) -> Result<Arc<dyn ExecutionPlan>> {
        let plan = carry_empty_relations(plan.clone())?;
        let plan = self.distributed.create_physical_plan(&plan, session).await?;
        Ok(Arc::new(ConformExec::new(plan)))
    }
}

/// `plan` with a `COPY ... TO` target that is a relative local path made
/// absolute against this process's working directory; `None` when there is
/// nothing to change.
///
/// ```
/// # use datafusion::prelude::SessionContext;
/// # #[tokio::main] async fn main() {
/// use datafusion::logical_expr::LogicalPlan;
/// use quiver_core::client_planner::anchor_copy_target;
/// let ctx = SessionContext::new();
/// let plan = ctx.state().create_logical_plan("COPY (SELECT 1) TO 'out/one.csv'").await.unwrap();
/// let Some(LogicalPlan::Copy(copy)) = anchor_copy_target(&plan).unwrap() else { panic!() };
/// assert_eq!(copy.output_url, std::env::current_dir().unwrap().join("out/one.csv").display().to_string());
/// let remote = ctx.state().create_logical_plan("COPY (SELECT 1) TO 's3://b/one.csv'").await.unwrap();
/// assert!(anchor_copy_target(&remote).unwrap().is_none());
/// # }
/// ```
pub fn anchor_copy_target(plan: &LogicalPlan) -> Result<Option<LogicalPlan>> {
    let LogicalPlan::Copy(copy) = plan else {
        return Ok(None);
    };
    let url = copy.output_url.as_str();
    if url.contains(':') || Path::new(url).is_absolute() {
        return Ok(None);
    }
    let mut absolute = std::env::current_dir()?.join(url).display().to_string();
    if url.ends_with('/') && !absolute.ends_with('/') {
        absolute.push('/');
    }
    let mut copy = copy.clone();
    copy.output_url = absolute;
    Ok(Some(LogicalPlan::Copy(copy)))
}

/// `plan` with a `COPY ... TO`'s format options (`OPTIONS ('format.delimiter'
/// '|')`, ...) applied to its file format, as the single-node planner applies
/// them, so that they reach the process that writes; `None` when there is
/// nothing to carry (no options, or a format without options).
///
/// ```
/// # use datafusion::prelude::SessionContext;
/// # #[tokio::main] async fn main() {
/// use datafusion::datasource::file_format::csv::CsvFormatFactory;
/// use datafusion::datasource::file_format::file_type_to_format;
/// use datafusion::logical_expr::LogicalPlan;
/// use quiver_core::client_planner::carry_copy_options;
/// let ctx = SessionContext::new();
/// let sql = "COPY (SELECT 1) TO 'out.csv' STORED AS CSV OPTIONS ('format.has_header' 'false')";
/// let plan = ctx.state().create_logical_plan(sql).await.unwrap();
/// let Some(LogicalPlan::Copy(copy)) = carry_copy_options(&plan, &ctx.state()).unwrap() else { panic!() };
/// let factory = file_type_to_format(&copy.file_type).unwrap();
/// let csv = factory.downcast_ref::<CsvFormatFactory>().unwrap();
/// assert_eq!(csv.options.as_ref().unwrap().has_header, Some(false));
/// # }
/// ```
pub fn carry_copy_options(plan: &LogicalPlan, session: &dyn Session) -> Result<Option<LogicalPlan>> {
    let LogicalPlan::Copy(copy) = plan else {
        return Ok(None);
    };
    // What the single-node planner hands the format (the rest is the sink's).
    let format_options: HashMap<String, String> = copy
        .options
        .iter()
        .filter(|(k, _)| k.as_str() != "single_file_output")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if format_options.is_empty() {
        return Ok(None);
    }
    let format = file_type_to_format(&copy.file_type)?.create(session, &format_options)?;
    let carried: Arc<dyn FileFormatFactory> = if let Some(csv) = format.downcast_ref::<CsvFormat>() {
        Arc::new(CsvFormatFactory::new_with_options(csv.options().clone()))
    } else if let Some(json) = format.downcast_ref::<JsonFormat>() {
        Arc::new(JsonFormatFactory::new_with_options(json.options().clone()))
    } else if let Some(parquet) = format.downcast_ref::<ParquetFormat>() {
        Arc::new(ParquetFormatFactory::new_with_options(parquet.options().clone()))
    } else {
        return Ok(None);
    };
    let mut copy = copy.clone();
    copy.file_type = format_as_file_type(carried);
    Ok(Some(LogicalPlan::Copy(copy)))
}

/// The name of the empty in-memory tables [`carry_empty_relations`] puts in
/// place of empty relations.
const EMPTY_TABLE: &str = "__quiver_empty";

/// `plan` with every empty relation that has columns replaced by a scan of
/// an empty in-memory table with those columns, under a projection that
/// gives them back their qualifiers and names: the same schema, in a form
/// the plan format carries whole.
///
/// ```
/// # use datafusion::prelude::SessionContext;
/// # #[tokio::main] async fn main() {
/// use datafusion::logical_expr::LogicalPlan;
/// use datafusion::logical_expr::logical_plan::builder::LogicalPlanBuilder;
/// use datafusion::arrow::datatypes::{DataType, Field, Schema};
/// use quiver_core::client_planner::carry_empty_relations;
/// let schema = Schema::new(vec![Field::new("a", DataType::Int64, true)]);
/// let empty = LogicalPlanBuilder::empty(false).build().unwrap();
/// let LogicalPlan::EmptyRelation(mut relation) = empty else { unreachable!() };
/// relation.schema = std::sync::Arc::new(
///     datafusion::common::DFSchema::try_from_qualified_schema("x", &schema).unwrap(),
/// );
/// let plan = LogicalPlan::EmptyRelation(relation);
/// let carried = carry_empty_relations(plan.clone()).unwrap();
/// assert!(matches!(carried, LogicalPlan::Projection(_)));
/// assert_eq!(carried.schema(), plan.schema());
/// # }
/// ```
pub fn carry_empty_relations(plan: LogicalPlan) -> Result<LogicalPlan> {
    plan.transform_up_with_subqueries(|node| {
        let LogicalPlan::EmptyRelation(empty) = &node else {
            return Ok(Transformed::no(node));
        };
        if empty.produce_one_row || empty.schema.fields().is_empty() {
            return Ok(Transformed::no(node));
        }
        // Unique names for the table; the projection restores the real ones.
        let fields: Vec<Field> = empty
            .schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| f.as_ref().clone().with_name(format!("c{i}")))
            .collect();
        let table = MemTable::try_new(Arc::new(Schema::new(fields)), vec![vec![]])?;
        let exprs: Vec<Expr> = empty
            .schema
            .iter()
            .enumerate()
            .map(|(i, (qualifier, field))| {
                Expr::Column(Column::new(Some(EMPTY_TABLE), format!("c{i}")))
                    .alias_qualified(qualifier.cloned(), field.name())
            })
            .collect();
        let carried = LogicalPlanBuilder::scan(EMPTY_TABLE, provider_as_source(Arc::new(table)), None)?
            .project(exprs)?
            .build()?;
        Ok(Transformed::yes(carried))
    })
    .map(|t| t.data)
}

/// Whether `dml` writes into an in-memory table.
fn writes_memory_table(dml: &DmlStatement) -> bool {
    source_as_provider(&dml.target).is_ok_and(|p| p.downcast_ref::<MemTable>().is_some())
}

#[async_trait]
impl QueryPlanner for ClientQueryPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match logical_plan {
            LogicalPlan::Dml(dml) if writes_memory_table(dml) => {
                let table = source_as_provider(&dml.target)?;
                match &dml.op {
                    WriteOp::Insert(op) => {
                        let rows = self.on_cluster(&dml.input, session).await?;
                        table.insert_into(session, rows, *op).await
                    }
                    // DELETE and UPDATE read and rewrite the client's rows.
                    _ => {
                        DefaultPhysicalPlanner::default()
                            .create_physical_plan(logical_plan, session)
                            .await
                    }
                }
            }
            LogicalPlan::DescribeTable(_) => {
                DefaultPhysicalPlanner::default()
                    .create_physical_plan(logical_plan, session)
                    .await
            }
            LogicalPlan::Copy(_) => {
                let plan = anchor_copy_target(logical_plan)?.unwrap_or_else(|| logical_plan.clone());
                let plan = carry_copy_options(&plan, session)?.unwrap_or(plan);
                self.on_cluster(&plan, session).await
            }
            _ => self.on_cluster(logical_plan, session).await,
        }
    }
}
