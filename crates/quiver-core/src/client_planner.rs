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
//!   ([`carry_copy_options`]). The one option that is a setting of the
//!   statement, `execution.keep_partition_by_columns`, travels with the job
//!   ([`crate::job_settings`]).
//! * An empty relation with columns (what `WHERE FALSE` or a join with an
//!   empty side becomes) keeps its columns on the way to the scheduler: the
//!   plan format carries only whether it yields a row, so the scheduler
//!   read a relation without columns and refused the plan ("No field named
//!   y.s"). It travels as an empty in-memory table ([`carry_empty_relations`]).
//! * A window aggregate's `FILTER (WHERE ...)` travels inside its argument:
//!   the plan format between the scheduler and the executors has no place
//!   for it, so `count(*) FILTER (WHERE p) OVER ()` counted every row. For
//!   aggregates that skip NULLs, `agg(x) FILTER (WHERE p)` is `agg(CASE
//!   WHEN p THEN x END)`; any other filtered window aggregate is refused
//!   ([`carry_window_filters`]). (`IGNORE NULLS`, which the same format
//!   drops from window functions, is carried by the scheduler:
//!   [`crate::window_flags`].)
//! * A query's `ORDER BY` holds for the rows the client receives. Ballista's
//!   adaptive planner can turn a sort-merge join, whose order the rest of the
//!   plan was built on, into a hash join, and the cluster then returned
//!   `ORDER BY id` as `2, 1, 3`. The client sorts the rows it receives by
//!   the query's outermost ordering ([`result_ordering`]); when the query
//!   does not select its sort keys, the cluster returns them too and the
//!   client drops them after sorting ([`keep_sort_keys`]).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::catalog::Session;
use datafusion::catalog::default_table_source::{provider_as_source, source_as_provider};
use datafusion::common::tree_node::Transformed;
use datafusion::common::{Column, Result, plan_err};
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::csv::{CsvFormat, CsvFormatFactory};
use datafusion::datasource::file_format::json::{JsonFormat, JsonFormatFactory};
use datafusion::datasource::file_format::parquet::{ParquetFormat, ParquetFormatFactory};
use datafusion::datasource::file_format::{FileFormatFactory, file_type_to_format, format_as_file_type};
use datafusion::execution::context::QueryPlanner;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{
    DmlStatement, Expr, LogicalPlan, LogicalPlanBuilder, SortExpr, Window, WindowFunctionDefinition, WriteOp, when,
};
use datafusion::physical_expr::expressions::Column as PhysicalColumn;
use datafusion::physical_expr::{LexOrdering, create_physical_sort_exprs};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_planner::{DefaultPhysicalPlanner, PhysicalPlanner};

use crate::conform::{ConformExec, DeclaredNullsExec};
use crate::job_settings::{JobSettingsExec, copy_settings};

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
        let plan = carry_window_filters(carry_empty_relations(plan.clone())?)?;
        // The query's own column count, when the cluster returns sort keys past them.
        let own = plan.schema().fields().len();
        let (plan, order) = match result_ordering(&plan) {
            Some(order) => (plan, order),
            None => keep_sort_keys(&plan)?.unwrap_or((plan, vec![])),
        };
        let distributed = self.distributed.create_physical_plan(&plan, session).await?;
        let rows: Arc<dyn ExecutionPlan> = Arc::new(ConformExec::new(distributed));
        let exprs = create_physical_sort_exprs(
            &order,
            plan.schema(),
            session.execution_props(),
            &PhysicalPlanningContext::default(),
        )?;
        let Some(ordering) = LexOrdering::new(exprs) else {
            return Ok(rows);
        };
        let sorted: Arc<dyn ExecutionPlan> = Arc::new(SortExec::new(ordering, rows));
        if plan.schema().fields().len() == own {
            return Ok(sorted);
        }
        // The query's own columns, without the sort keys added for the client.
        let exprs: Vec<ProjectionExpr> = plan.schema().fields()[..own]
            .iter()
            .enumerate()
            .map(|(i, f)| ProjectionExpr::new(Arc::new(PhysicalColumn::new(f.name(), i)) as _, f.name().clone()))
            .collect();
        Ok(Arc::new(ProjectionExec::try_new(exprs, sorted)?))
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

/// Window aggregates whose result over the rows a filter keeps equals their
/// result over all rows with the others' arguments made NULL, and which of
/// their arguments to make NULL (`None`: all of them).
fn skips_nulls(aggregate: &str) -> Option<Option<usize>> {
    match aggregate {
        "count" | "corr" | "covar" | "covar_pop" | "covar_samp" => Some(None),
        name if name.starts_with("regr_") => Some(None),
        "sum" | "avg" | "mean" | "min" | "max" | "bool_and" | "bool_or" | "bit_and" | "bit_or" | "bit_xor"
        | "stddev" | "stddev_pop" | "stddev_samp" | "var" | "var_pop" | "var_samp" | "var_population"
        | "var_sample" | "median" | "approx_distinct" | "approx_median" | "string_agg" => Some(Some(0)),
        _ => None,
    }
}

/// `plan` with every window aggregate's `FILTER (WHERE p)` moved into its
/// arguments as `CASE WHEN p THEN arg END`, under the window's original
/// column name; an error for filtered window functions that count NULLs
/// (`array_agg`, `first_value`, ...), which no such rewrite keeps right.
///
/// ```
/// # use datafusion::prelude::SessionContext;
/// # #[tokio::main] async fn main() {
/// use quiver_core::client_planner::carry_window_filters;
/// let ctx = SessionContext::new();
/// let sql = "SELECT count(*) FILTER (WHERE x > 1) OVER () FROM (VALUES (1), (2)) t(x)";
/// let plan = ctx.sql(sql).await.unwrap().into_optimized_plan().unwrap();
/// let carried = carry_window_filters(plan.clone()).unwrap();
/// assert_eq!(carried.schema(), plan.schema());
/// assert!(carried.display_indent().to_string().contains("CASE WHEN t.x > Int64(1)"));
/// let refused = "SELECT array_agg(x) FILTER (WHERE x > 1) OVER () FROM (VALUES (1)) t(x)";
/// let plan = ctx.sql(refused).await.unwrap().into_optimized_plan().unwrap();
/// assert!(carry_window_filters(plan).unwrap_err().to_string().contains("array_agg"));
/// # }
/// ```
pub fn carry_window_filters(plan: LogicalPlan) -> Result<LogicalPlan> {
    plan.transform_up_with_subqueries(|node| {
        let LogicalPlan::Window(window) = &node else {
            return Ok(Transformed::no(node));
        };
        let mut changed = false;
        let mut exprs = Vec::with_capacity(window.window_expr.len());
        for expr in &window.window_expr {
            let (inner, alias) = match expr {
                Expr::Alias(a) => (a.expr.as_ref(), Some(a)),
                e => (e, None),
            };
            let Expr::WindowFunction(function) = inner else {
                exprs.push(expr.clone());
                continue;
            };
            let Some(filter) = &function.params.filter else {
                exprs.push(expr.clone());
                continue;
            };
            let WindowFunctionDefinition::AggregateUDF(udaf) = &function.fun else {
                return plan_err!(
                    "FILTER (WHERE ...) on window function {} is not supported",
                    function.fun
                );
            };
            let Some(wrapped) = skips_nulls(udaf.name()) else {
                return plan_err!(
                    "{}(...) FILTER (WHERE ...) OVER (...) cannot run on a cluster: the plan format drops a window \
                     aggregate's filter, and {} does not skip NULLs, so the filter cannot travel in its argument. \
                     Filter the rows in a subquery, or run the query without --scheduler",
                    udaf.name(),
                    udaf.name()
                );
            };
            let mut function = function.as_ref().clone();
            for (i, arg) in function.params.args.iter_mut().enumerate() {
                if wrapped.is_none_or(|only| only == i) {
                    *arg = when(filter.as_ref().clone(), arg.clone()).end()?;
                }
            }
            function.params.filter = None;
            let rewritten = Expr::WindowFunction(Box::new(function));
            exprs.push(match alias {
                Some(a) => rewritten.alias_qualified(a.relation.clone(), a.name.clone()),
                None => rewritten.alias(inner.schema_name().to_string()),
            });
            changed = true;
        }
        if !changed {
            return Ok(Transformed::no(node));
        }
        let rewritten = Window::try_new_with_schema(exprs, Arc::clone(&window.input), Arc::clone(&window.schema))?;
        Ok(Transformed::yes(LogicalPlan::Window(rewritten)))
    })
    .map(|t| t.data)
}

/// The order a query's result rows must arrive in, in terms of its output
/// columns: its outermost `ORDER BY`, seen through `LIMIT` and through
/// projections that keep the sort keys; `None` when the result has no
/// required order or it cannot be said in the output's columns.
///
/// ```
/// # use datafusion::prelude::SessionContext;
/// # #[tokio::main] async fn main() {
/// use quiver_core::client_planner::result_ordering;
/// let ctx = SessionContext::new();
/// let order = |sql: &'static str| {
///     let ctx = ctx.clone();
///     async move {
///         let plan = ctx.sql(sql).await.unwrap().into_optimized_plan().unwrap();
///         result_ordering(&plan).map(|o| o.iter().map(|s| s.to_string()).collect::<Vec<_>>())
///     }
/// };
/// let sql = "SELECT x AS y, z FROM (VALUES (1, 2)) t(x, z) ORDER BY x DESC, z LIMIT 3";
/// assert_eq!(order(sql).await.unwrap(), ["y DESC NULLS FIRST", "t.z ASC NULLS LAST"]);
/// assert_eq!(order("SELECT x FROM (VALUES (1, 2)) t(x, z) ORDER BY z").await, None);
/// assert_eq!(order("SELECT x FROM (VALUES (1)) t(x)").await, None);
/// # }
/// ```
pub fn result_ordering(plan: &LogicalPlan) -> Option<Vec<SortExpr>> {
    match plan {
        LogicalPlan::Sort(sort) => Some(sort.expr.clone()),
        LogicalPlan::Limit(limit) => result_ordering(&limit.input),
        LogicalPlan::Projection(projection) => {
            let outputs = projection.schema.columns();
            result_ordering(&projection.input)?
                .into_iter()
                .map(|key| {
                    let at = projected(&projection.expr, &key.expr)?;
                    Some(SortExpr::new(
                        Expr::Column(outputs[at].clone()),
                        key.asc,
                        key.nulls_first,
                    ))
                })
                .collect()
        }
        _ => None,
    }
}

/// Where a projection outputs `key` as it is (possibly renamed).
fn projected(exprs: &[Expr], key: &Expr) -> Option<usize> {
    exprs.iter().position(|e| e.clone().unalias() == *key)
}

/// For a query ordered by keys it does not select (`SELECT name FROM t
/// ORDER BY id`): the same query with those keys added as extra output
/// columns, and its ordering in terms of its output, so that the client can
/// sort what it receives and then drop them; `None` for other shapes.
///
/// ```
/// # use datafusion::prelude::SessionContext;
/// # #[tokio::main] async fn main() {
/// use quiver_core::client_planner::keep_sort_keys;
/// let ctx = SessionContext::new();
/// let sql = "SELECT x FROM (VALUES (1, 2)) t(x, z) ORDER BY z DESC LIMIT 5";
/// let plan = ctx.sql(sql).await.unwrap().into_optimized_plan().unwrap();
/// let (widened, order) = keep_sort_keys(&plan).unwrap().unwrap();
/// assert_eq!(widened.schema().fields().len(), 2);
/// assert_eq!(order[0].to_string(), "__quiver_order_0 DESC NULLS FIRST");
/// # }
/// ```
pub fn keep_sort_keys(plan: &LogicalPlan) -> Result<Option<(LogicalPlan, Vec<SortExpr>)>> {
    let LogicalPlan::Projection(projection) = plan else {
        return Ok(None);
    };
    let mut below = projection.input.as_ref();
    while let LogicalPlan::Limit(limit) = below {
        below = limit.input.as_ref();
    }
    let LogicalPlan::Sort(sort) = below else {
        return Ok(None);
    };
    let mut exprs = projection.expr.clone();
    let mut at = Vec::with_capacity(sort.expr.len());
    for (i, key) in sort.expr.iter().enumerate() {
        at.push(projected(&projection.expr, &key.expr).unwrap_or_else(|| {
            exprs.push(key.expr.clone().alias(format!("__quiver_order_{i}")));
            exprs.len() - 1
        }));
    }
    let widened = LogicalPlanBuilder::from(projection.input.as_ref().clone())
        .project(exprs)?
        .build()?;
    let outputs = widened.schema().columns();
    let order = sort
        .expr
        .iter()
        .zip(at)
        .map(|(key, at)| SortExpr::new(Expr::Column(outputs[at].clone()), key.asc, key.nulls_first))
        .collect();
    Ok(Some((widened, order)))
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
                        // The rows' NOT NULL columns are checked here, as one
                        // process checks them when it builds the batches.
                        let rows = Arc::new(DeclaredNullsExec::new(rows));
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
            LogicalPlan::Copy(copy) => {
                let settings = copy_settings(copy)?;
                let plan = anchor_copy_target(logical_plan)?.unwrap_or_else(|| logical_plan.clone());
                let plan = carry_copy_options(&plan, session)?.unwrap_or(plan);
                let written = self.on_cluster(&plan, session).await?;
                if settings.is_empty() {
                    return Ok(written);
                }
                Ok(Arc::new(JobSettingsExec::new(written, settings)))
            }
            _ => self.on_cluster(logical_plan, session).await,
        }
    }
}
