//! Logical optimizer rules Quiver adds to DataFusion's (and, in [`analyzer_rules`],
//! the analyzer rules it adds, each documented in its own module).
//!
//! [`PushSemiJoinBelowJoins`] moves an `IN (subquery)` semi join down to the
//! join input its keys come from. DataFusion leaves it on top of the joins
//! the `WHERE` clause listed, which costs little in one process: the semi
//! join's dynamic filter reaches the scans below while they run. A cluster
//! runs those scans as earlier stages and shuffles everything they read
//! before the semi join has seen a row. In TPC-H Q18 the semi join keeps 57
//! of 1.5 million orders; below the joins, the orders are filtered in the
//! stage that scans them and 57 rows are shuffled instead of 1.5 million.
//!
//! [`JoinFilteredDimensionsFirst`] joins a table that a constant filter makes
//! small (`n_name = 'SAUDI ARABIA'`) to the unfiltered table its keys point
//! at before that table meets the others. DataFusion keeps the `FROM` list's
//! order, so in TPC-H Q21 3.8 million lineitems are joined to all 10,000
//! suppliers and to 1.5 million orders before the one-row nation filter drops
//! 24 of every 25. In one process the nation join's dynamic filter reaches the
//! supplier scan and cuts that work; in a cluster the supplier scan runs in
//! another stage and the filter never arrives.
//!
//! [`SemiJoinReduction`] narrows the subquery side of an `EXISTS`, `IN` or
//! `NOT EXISTS` join to the keys a constant-filtered table on the outer side
//! (or the keys' table joined to such a dimension) can match, as Spark's
//! runtime filters do. A cluster cannot broadcast the
//! outer side of such a join (every task would answer for it), so it
//! shuffles both inputs by key; in TPC-H Q4 that was 3.8 million lineitems
//! for 57,000 orders of one quarter. Joining the lineitems first to the keys
//! of those orders, which is small enough to broadcast, leaves 145,000 rows
//! to shuffle.

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, NullEquality, Result, TableReference};
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{
    BinaryExpr, Expr, Join, JoinConstraint, JoinType, LogicalPlan, Operator, Projection, SubqueryAlias, TableScan,
};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{AnalyzerRule, OptimizerConfig, OptimizerRule};

use crate::options::QuiverOptions;

/// The logical rules Quiver adds, in the order they run after the engine's
/// own. Every session, on the scheduler or in one process, gets these.
pub fn rules() -> Vec<Arc<dyn OptimizerRule + Send + Sync>> {
    vec![
        Arc::new(PushSemiJoinBelowJoins),
        Arc::new(JoinFilteredDimensionsFirst),
        Arc::new(SemiJoinReduction),
        Arc::new(crate::memory_limit::LimitInMemoryData),
    ]
}

/// The analyzer rules Quiver adds, in the order they run after the engine's
/// own. Every session, on the scheduler or in one process, gets these.
pub fn analyzer_rules() -> Vec<Arc<dyn AnalyzerRule + Send + Sync>> {
    vec![
        Arc::new(crate::limit_fetch::UnboundedLimits),
        Arc::new(crate::scalar_subquery::SingleRowScalarSubqueries),
    ]
}

/// Whether the `quiver.*` setting `flag` reads is on for this session; on
/// when the session carries no Quiver options (a bare DataFusion context).
fn setting(config: &dyn OptimizerConfig, flag: fn(&QuiverOptions) -> bool) -> bool {
    config.options().extensions.get::<QuiverOptions>().is_none_or(flag)
}

/// Rewrites `(A ⋈ B) ⋉ C` into `(A ⋉ C) ⋈ B` when the semi join's keys are
/// columns of `A` alone (through a projection that passes them on, if one
/// sits between the joins).
///
/// The two are equal for an inner join: the semi join keeps or drops each
/// row by `A`'s columns only, and the inner join neither changes nor
/// duplicates them differently. Semi joins with a non-equi filter (TPC-H
/// Q21's `EXISTS` with `<>`) stay where they are, since their filter may
/// reach the other input's columns and pushing them under a selective join
/// can make them do more work.
///
/// ```
/// use datafusion::prelude::SessionContext;
/// use datafusion::execution::SessionStateBuilder;
/// use std::sync::Arc;
/// use quiver_core::optimizer::PushSemiJoinBelowJoins;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> datafusion::common::Result<()> {
/// let state = SessionStateBuilder::new()
///     .with_default_features()
///     .with_optimizer_rule(Arc::new(PushSemiJoinBelowJoins))
///     .build();
/// let ctx = SessionContext::new_with_state(state);
/// ctx.sql("CREATE TABLE o (k INT, c INT) AS VALUES (1, 10), (2, 20)").await?;
/// ctx.sql("CREATE TABLE c (c INT) AS VALUES (10), (20)").await?;
/// ctx.sql("CREATE TABLE s (k INT) AS VALUES (2)").await?;
/// let plan = ctx
///     .sql("SELECT o.k FROM o, c WHERE o.c = c.c AND o.k IN (SELECT k FROM s)")
///     .await?
///     .into_optimized_plan()?;
/// // The semi join now sits under the inner join, on `o`'s side.
/// let text = plan.display_indent().to_string();
/// assert!(text.find("Inner Join").unwrap() < text.find("LeftSemi Join").unwrap(), "{text}");
/// # Ok(()) }
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct PushSemiJoinBelowJoins;

impl OptimizerRule for PushSemiJoinBelowJoins {
    fn name(&self) -> &str {
        "quiver_push_semi_join_below_joins"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        // Top-down: a semi join pushed one level is visited again as a child
        // and keeps going down while its keys stay on one side.
        Some(ApplyOrder::TopDown)
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(&self, plan: LogicalPlan, _config: &dyn OptimizerConfig) -> Result<Transformed<LogicalPlan>> {
        let LogicalPlan::Join(semi) = &plan else {
            return Ok(Transformed::no(plan));
        };
        if semi.join_type != JoinType::LeftSemi || semi.filter.is_some() || semi.null_aware || semi.on.is_empty() {
            return Ok(Transformed::no(plan));
        }
        let keys: HashSet<&Column> = semi.on.iter().flat_map(|(left, _)| left.column_refs()).collect();
        // Projections that only pass the keys through may sit between the two joins.
        let (projection, inner) = match semi.left.as_ref() {
            LogicalPlan::Join(inner) => (None, inner),
            LogicalPlan::Projection(projection) => match projection.input.as_ref() {
                LogicalPlan::Join(inner) if keys.iter().all(|c| passes_through(&projection.expr, c)) => {
                    (Some(projection), inner)
                }
                _ => return Ok(Transformed::no(plan)),
            },
            _ => return Ok(Transformed::no(plan)),
        };
        if inner.join_type != JoinType::Inner {
            return Ok(Transformed::no(plan));
        }
        let within = |side: &LogicalPlan| keys.iter().all(|c| side.schema().has_column(c));
        let push = |side: &Arc<LogicalPlan>| -> Result<Arc<LogicalPlan>> {
            Ok(Arc::new(LogicalPlan::Join(Join::try_new(
                Arc::clone(side),
                Arc::clone(&semi.right),
                semi.on.clone(),
                None,
                JoinType::LeftSemi,
                semi.join_constraint,
                semi.null_equality,
                false,
            )?)))
        };
        let (left, right) = if within(&inner.left) {
            (push(&inner.left)?, Arc::clone(&inner.right))
        } else if within(&inner.right) {
            (Arc::clone(&inner.left), push(&inner.right)?)
        } else {
            return Ok(Transformed::no(plan));
        };
        let rewritten = rejoin(inner, left, right)?;
        Ok(Transformed::yes(match projection {
            None => rewritten,
            Some(p) => LogicalPlan::Projection(Projection::try_new_with_schema(
                p.expr.clone(),
                Arc::new(rewritten),
                Arc::clone(&p.schema),
            )?),
        }))
    }
}

/// Rewrites `(A ⋈ B) ⋈ C` into `(A ⋈ C) ⋈ B` when `C` is a scan that a
/// constant filter makes selective, `A` is a scan with no filter of its own
/// and the join's keys on that side are all `A`'s columns.
///
/// Inner joins commute, so the answer is the same; only the order changes.
/// Without row counts the rule cannot compare join orders, so it acts only
/// where the gain does not depend on them: `C` keeps the rows matching a
/// constant (`col = value`, `col IN (...)`, or an `OR` of those), and `A`,
/// which nothing else filters, meets that filter before it is joined to
/// anything else. Outer, semi and anti joins on the way down, and joins with
/// a non-equi filter, stop the rule. A table moves only past a join with a
/// table that is not itself a filtered dimension: several dimensions of one
/// scan would otherwise take turns moving below each other without end. `SET quiver.join_filtered_dimensions_first =
/// false` keeps the `FROM` list's order.
///
/// ```
/// use datafusion::prelude::SessionContext;
/// use datafusion::execution::SessionStateBuilder;
/// use std::sync::Arc;
/// use quiver_core::optimizer::JoinFilteredDimensionsFirst;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> datafusion::common::Result<()> {
/// let state = SessionStateBuilder::new()
///     .with_default_features()
///     .with_optimizer_rule(Arc::new(JoinFilteredDimensionsFirst))
///     .build();
/// let ctx = SessionContext::new_with_state(state);
/// ctx.sql("CREATE TABLE fact (k INT, d INT) AS VALUES (1, 10), (2, 20)").await?;
/// ctx.sql("CREATE TABLE dim (d INT, n INT) AS VALUES (10, 1), (20, 2)").await?;
/// ctx.sql("CREATE TABLE flag (n INT, name VARCHAR) AS VALUES (1, 'a'), (2, 'b')").await?;
/// let plan = ctx
///     .sql("SELECT k FROM fact, dim, flag WHERE fact.d = dim.d AND dim.n = flag.n AND flag.name = 'a'")
///     .await?
///     .into_optimized_plan()?;
/// // `flag` now meets `dim` below the join with `fact`.
/// let text = plan.display_indent().to_string();
/// let line = |s: &str| text.lines().position(|l| l.contains(s)).unwrap();
/// assert!(line("Inner Join: fact.d = dim.d") < line("Inner Join: flag.n = dim.n"), "{text}");
/// # Ok(()) }
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct JoinFilteredDimensionsFirst;

impl OptimizerRule for JoinFilteredDimensionsFirst {
    fn name(&self) -> &str {
        "quiver_join_filtered_dimensions_first"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::TopDown)
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(&self, plan: LogicalPlan, config: &dyn OptimizerConfig) -> Result<Transformed<LogicalPlan>> {
        let LogicalPlan::Join(join) = &plan else {
            return Ok(Transformed::no(plan));
        };
        let enabled = setting(config, |o| o.join_filtered_dimensions_first);
        if !enabled {
            return Ok(Transformed::no(plan));
        }
        if join.join_type != JoinType::Inner || join.filter.is_some() || join.null_aware || join.on.is_empty() {
            return Ok(Transformed::no(plan));
        }
        // The dimension may be either input; the other is where it moves into.
        for dimension_is_right in [true, false] {
            let (rest, dimension) = if dimension_is_right {
                (&join.left, &join.right)
            } else {
                (&join.right, &join.left)
            };
            if scan_chain(dimension) != Some(true) {
                continue;
            }
            let mut on = Vec::with_capacity(join.on.len());
            let mut keys = Vec::with_capacity(join.on.len());
            for (left, right) in &join.on {
                let (rest_key, dimension_key) = if dimension_is_right {
                    (left, right)
                } else {
                    (right, left)
                };
                let Expr::Column(column) = rest_key else {
                    break;
                };
                keys.push(column.clone());
                // The dimension goes on the build (left) side of its new join.
                on.push((dimension_key.clone(), rest_key.clone()));
            }
            if keys.len() != join.on.len() {
                continue;
            }
            let moved = |target: &Arc<LogicalPlan>| -> Result<LogicalPlan> {
                Ok(LogicalPlan::Join(Join::try_new(
                    Arc::clone(dimension),
                    Arc::clone(target),
                    on.clone(),
                    None,
                    JoinType::Inner,
                    JoinConstraint::On,
                    join.null_equality,
                    false,
                )?))
            };
            let carried: Vec<Expr> = dimension.schema().columns().into_iter().map(Expr::Column).collect();
            let rewrite = || -> Result<Option<Projection>> {
                let Some(rewritten) = move_to_scan(rest, &keys, &carried, &moved, false)? else {
                    return Ok(None);
                };
                // Put the columns back in the order the join above expects.
                let exprs = join.schema.columns().into_iter().map(Expr::Column).collect();
                Projection::try_new_with_schema(exprs, Arc::new(rewritten), Arc::clone(&join.schema)).map(Some)
            };
            // A rewrite that cannot be built (say, a carried column's name
            // clashes with one a projection on the path computes) leaves the
            // join as written: the order is an optimization, never a reason
            // for a query to fail.
            // Only past a join with something other than a filtered
            // dimension: below dimensions alone the order gains nothing, and
            // dimensions of one scan would take turns moving below each
            // other without end.
            if !passes_another_table(rest, &keys) {
                continue;
            }
            if let Ok(Some(projection)) = rewrite() {
                return Ok(Transformed::yes(LogicalPlan::Projection(projection)));
            }
        }
        Ok(Transformed::no(plan))
    }
}

/// The alias of the key list a [`SemiJoinReduction`] adds; it marks joins
/// already reduced, so the rule never applies twice (plans are optimized on
/// the client and again on the scheduler).
const REDUCTION_ALIAS: &str = "__quiver_reduce";

/// Rewrites `L ⋉ R` and `L ▷ R` (semi and anti joins on `l = r`) into
/// `L ⋉ (R ⋉ π(S))`, where `S` is a part of `L` that a constant filter
/// narrows and `π(S)` lists the values it holds for `L`'s join keys. `S` is
/// the scan in `L` the keys are columns of when a constant filter narrows
/// it (TPC-H Q17's `part` with its brand and container), or else that scan
/// inner-joined to a constant-filtered dimension through other columns
/// (TPC-H Q21's lineitems of the suppliers of one nation) or semi-joined to
/// a narrow subquery (TPC-H Q20's partsupp rows of the `forest%` parts).
/// Such a join is computed again only for an `R` that reads the same table
/// or aggregates: a filtered scan of another table is usually small.
///
/// Every key `L` can join with is one of `S`'s: the operators of `L` above
/// `S` (filters, inner and semi joins) only drop rows. A row of
/// `R` whose key is not in `π(S)` therefore matches no row of `L`, and
/// dropping it changes neither which rows a semi join keeps nor which an
/// anti join keeps, whatever the join's extra filter says. `NOT IN`'s
/// null-aware anti join is left alone: there one `NULL` in `R` decides the
/// answer.
///
/// `R ⋉ π(S)` is a join a cluster can broadcast (the key list is the small
/// side and `R`'s rows are what it emits), so `R` is narrowed in the stage
/// that scans it, before its rows are shuffled. The price is computing `S`
/// again: a filtered scan, or in Q21 a second read of `lineitem` with a
/// broadcast join to 400 suppliers, which costs less than shuffling all of
/// `lineitem`. The broadcast is Ballista's
/// decision, made from DataFusion's estimates: at TPC-H SF10 Q21's key lists
/// (1.5 million keys, 12 MiB) are estimated at 475 MB, over the 128 MiB
/// budget, so `R` is shuffled in full anyway and the lists only add work
/// (measured in `benches/README.md`). `R`
/// that is itself a constant-filtered scan is left as it is. `SET
/// quiver.semi_join_reduction = false` turns the rule off.
///
/// ```
/// use datafusion::prelude::SessionContext;
/// use datafusion::execution::SessionStateBuilder;
/// use std::sync::Arc;
/// use quiver_core::optimizer::SemiJoinReduction;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> datafusion::common::Result<()> {
/// let state = SessionStateBuilder::new()
///     .with_default_features()
///     .with_optimizer_rule(Arc::new(SemiJoinReduction))
///     .build();
/// let ctx = SessionContext::new_with_state(state);
/// ctx.sql("CREATE TABLE o (k INT, day INT) AS VALUES (1, 10), (2, 20)").await?;
/// ctx.sql("CREATE TABLE l (k INT, late BOOLEAN) AS VALUES (1, true), (2, true), (3, false)").await?;
/// let df = ctx
///     .sql("SELECT k FROM o WHERE day = 10 AND EXISTS (SELECT 1 FROM l WHERE l.k = o.k AND late)")
///     .await?;
/// // `l` is joined to the keys of the orders of day 10 before the semi join.
/// let text = df.clone().into_optimized_plan()?.display_indent().to_string();
/// assert!(text.contains("__quiver_reduce"), "{text}");
/// assert_eq!(df.count().await?, 1);
/// # Ok(()) }
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct SemiJoinReduction;

impl OptimizerRule for SemiJoinReduction {
    fn name(&self) -> &str {
        "quiver_semi_join_reduction"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::TopDown)
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(&self, plan: LogicalPlan, config: &dyn OptimizerConfig) -> Result<Transformed<LogicalPlan>> {
        let LogicalPlan::Join(join) = &plan else {
            return Ok(Transformed::no(plan));
        };
        let enabled = setting(config, |o| o.semi_join_reduction);
        if !enabled
            || !matches!(join.join_type, JoinType::LeftSemi | JoinType::LeftAnti)
            || join.null_aware
            || join.null_equality != NullEquality::NullEqualsNothing
            || join.on.is_empty()
            || holds_reduction(&join.right)
            || scan_chain(&join.right).is_some_and(|narrowed| narrowed)
        {
            return Ok(Transformed::no(plan));
        }
        let Some(keys) = join
            .on
            .iter()
            .map(|(left, _)| match left {
                Expr::Column(c) => Some(c.clone()),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
        else {
            return Ok(Transformed::no(plan));
        };
        let Some((source, source_keys)) = key_source(&join.left, &keys) else {
            return Ok(Transformed::no(plan));
        };
        // A key list computed from a join costs that join again: worth it
        // for a subquery over the table the outer side scans too (Q21's
        // lineitems) or over an aggregation (Q20's), not for a filtered scan
        // of another table (Q16's suppliers with complaints, 4 rows; that
        // reduction took 30% longer).
        if scan_chain(&source).is_none()
            && let Some((scan, _)) = chain_scan(&join.right)
            && !scans(&source, &scan.table_name)
        {
            return Ok(Transformed::no(plan));
        }
        let alias = config.alias_generator().next(REDUCTION_ALIAS);
        let reduced = || -> Result<LogicalPlan> {
            let exprs = source_keys
                .iter()
                .enumerate()
                .map(|(i, key)| Expr::Column(key.clone()).alias(format!("k{i}")))
                .collect();
            let list = SubqueryAlias::try_new(
                Arc::new(LogicalPlan::Projection(Projection::try_new(exprs, Arc::new(source))?)),
                alias.as_str(),
            )?;
            let list = Arc::new(LogicalPlan::SubqueryAlias(list));
            let keys: Vec<Expr> = join.on.iter().map(|(_, right)| right.clone()).collect();
            let right = place_reduction(&join.right, &keys, &list, alias.as_str(), join.null_equality)?;
            rejoin(join, Arc::clone(&join.left), Arc::new(right))
        };
        // As with the other rules: a rewrite that cannot be built leaves the
        // join as written.
        match reduced() {
            Ok(rewritten) => Ok(Transformed::yes(rewritten)),
            Err(_) => Ok(Transformed::no(plan)),
        }
    }
}

/// `plan ⋉ list` on `keys = list.k0, k1, ...`, with the semi join moved down
/// through aliases, projections that pass the keys on and aggregations that
/// group by them: it keeps or drops whole groups by their keys, so below the
/// aggregation it drops their rows before they are aggregated. TPC-H Q17's
/// subquery averages the quantity of every part's lineitems; below its
/// aggregation the semi join keeps the lineitems of the 2,000 parts the outer
/// query asks about, out of 6 million.
fn place_reduction(
    plan: &Arc<LogicalPlan>,
    keys: &[Expr],
    list: &Arc<LogicalPlan>,
    alias: &str,
    null_equality: NullEquality,
) -> Result<LogicalPlan> {
    let columns: Option<Vec<&Column>> = keys
        .iter()
        .map(|k| match k {
            Expr::Column(c) => Some(c),
            _ => None,
        })
        .collect();
    let below = |inner_keys: Option<Vec<Column>>, input: &Arc<LogicalPlan>| -> Result<Option<LogicalPlan>> {
        match inner_keys {
            Some(inner) => {
                let exprs: Vec<Expr> = inner.into_iter().map(Expr::Column).collect();
                place_reduction(input, &exprs, list, alias, null_equality).map(Some)
            }
            None => Ok(None),
        }
    };
    let moved = match (plan.as_ref(), &columns) {
        (LogicalPlan::SubqueryAlias(a), Some(columns)) => {
            let inner = columns.iter().map(|c| aliased_from(a, c)).collect();
            below(inner, &a.input)?
                .map(|input| SubqueryAlias::try_new(Arc::new(input), a.alias.clone()).map(LogicalPlan::SubqueryAlias))
                .transpose()?
        }
        (LogicalPlan::Projection(p), Some(columns)) => {
            let inner = columns.iter().map(|c| projected_from(p, c)).collect();
            below(inner, &p.input)?
                .map(|input| {
                    Projection::try_new_with_schema(p.expr.clone(), Arc::new(input), Arc::clone(&p.schema))
                        .map(LogicalPlan::Projection)
                })
                .transpose()?
        }
        (LogicalPlan::Aggregate(a), Some(columns)) if !is_grouping_set(&a.group_expr) => {
            // An aggregation's output starts with its group columns.
            let inner = columns
                .iter()
                .map(|c| {
                    let i = a.schema.index_of_column(c).ok()?;
                    match a.group_expr.get(i)? {
                        Expr::Column(inner) => Some(inner.clone()),
                        _ => None,
                    }
                })
                .collect();
            below(inner, &a.input)?
                .map(|input| {
                    datafusion::logical_expr::Aggregate::try_new(
                        Arc::new(input),
                        a.group_expr.clone(),
                        a.aggr_expr.clone(),
                    )
                    .map(LogicalPlan::Aggregate)
                })
                .transpose()?
        }
        _ => None,
    };
    if let Some(moved) = moved {
        return Ok(moved);
    }
    let on = keys
        .iter()
        .enumerate()
        .map(|(i, key)| (key.clone(), Expr::Column(Column::new(Some(alias), format!("k{i}")))))
        .collect();
    Ok(LogicalPlan::Join(Join::try_new(
        Arc::clone(plan),
        Arc::clone(list),
        on,
        None,
        JoinType::LeftSemi,
        JoinConstraint::On,
        null_equality,
        false,
    )?))
}

/// `join` over new inputs, with its keys, filter and type unchanged.
fn rejoin(join: &Join, left: Arc<LogicalPlan>, right: Arc<LogicalPlan>) -> Result<LogicalPlan> {
    Ok(LogicalPlan::Join(Join::try_new(
        left,
        right,
        join.on.clone(),
        join.filter.clone(),
        join.join_type,
        join.join_constraint,
        join.null_equality,
        join.null_aware,
    )?))
}

/// The input column `projection` outputs as `column`, when it passes one on
/// unchanged (renamed or not); `None` for a computed output.
fn projected_from(projection: &Projection, column: &Column) -> Option<Column> {
    let i = projection.schema.index_of_column(column).ok()?;
    let expr = match &projection.expr[i] {
        Expr::Alias(alias) => alias.expr.as_ref(),
        expr => expr,
    };
    expr.try_as_col().cloned()
}

/// The column of `alias`'s input that it names `column`.
fn aliased_from(alias: &SubqueryAlias, column: &Column) -> Option<Column> {
    let i = alias.schema.index_of_column(column).ok()?;
    Some(Column::from(alias.input.schema().qualified_field(i)))
}

/// Whether an aggregation's grouping is `GROUPING SETS`, `CUBE` or `ROLLUP`.
fn is_grouping_set(group_expr: &[Expr]) -> bool {
    group_expr.iter().any(|e| matches!(e, Expr::GroupingSet(_)))
}

/// A part `S` of `plan` that is cheap to compute again and the columns of
/// `S` that hold every value `keys` (columns of `plan`) can take:
/// `π(keys)(plan) ⊆ π(columns)(S)`. Follows projections, aliases, filters,
/// and inner and semi joins into the input the keys are columns of, and
/// returns the first of:
///
/// - a constant-filtered scan chain (TPC-H Q4's orders of one quarter);
/// - an inner join of the keys' input to a constant-filtered dimension it
///   points at through other columns (TPC-H Q21's lineitems joined to the
///   suppliers of one nation): the dimension drops the rows of every other
///   supplier, so their order keys too;
/// - a semi join of the keys' input to such a dimension, on any columns
///   (TPC-H Q20's partsupp rows of the parts named `forest%`).
///
/// In the last two, both sides must be plain scans, filters and inner
/// joins, so that computing `S` again repeats no aggregation and no other
/// subquery.
///
/// Every operator on the way only drops rows of `S`, so `S` holds every key
/// `plan` has. Nothing volatile (`random()`) may be in `S`: computed twice it
/// could keep other rows.
fn key_source(plan: &LogicalPlan, keys: &[Column]) -> Option<(LogicalPlan, Vec<Column>)> {
    if scan_chain(plan).is_some_and(|_| narrows(plan)) {
        return (!is_volatile(plan)).then(|| (plan.clone(), keys.to_vec()));
    }
    match plan {
        LogicalPlan::Filter(filter) => key_source(&filter.input, keys),
        LogicalPlan::Projection(projection) => {
            let inner = keys
                .iter()
                .map(|key| projected_from(projection, key))
                .collect::<Option<Vec<_>>>()?;
            key_source(&projection.input, &inner)
        }
        LogicalPlan::SubqueryAlias(alias) => {
            let inner = keys
                .iter()
                .map(|key| aliased_from(alias, key))
                .collect::<Option<Vec<_>>>()?;
            key_source(&alias.input, &inner)
        }
        LogicalPlan::Join(join)
            if matches!(join.join_type, JoinType::Inner | JoinType::LeftSemi) && !join.null_aware =>
        {
            // Only the input the keys come from: a filtered table that joins
            // on the keys themselves (TPC-H Q21's `o_orderstatus = 'F'`
            // orders, for `l1.l_orderkey`) says little about how many keys
            // the rest of the outer side keeps. Measured on Q21, narrowing
            // its lineitems by half that way made it 24% slower.
            let within = |side: &LogicalPlan| keys.iter().all(|k| side.schema().has_column(k));
            let (keyed, other, keyed_on): (&LogicalPlan, &LogicalPlan, Vec<&Expr>) = if within(&join.left) {
                (&join.left, &join.right, join.on.iter().map(|(l, _)| l).collect())
            } else if join.join_type == JoinType::Inner && within(&join.right) {
                (&join.right, &join.left, join.on.iter().map(|(_, r)| r).collect())
            } else {
                return None;
            };
            key_source(keyed, keys).or_else(|| {
                // Early in optimization an equi-join is still a filter over
                // a cross join; it is judged once its keys are extracted.
                if join.on.is_empty() {
                    return None;
                }
                let through_other_columns = keyed_on
                    .iter()
                    .copied()
                    .chain(join.filter.as_ref())
                    .all(|e| e.column_refs().into_iter().all(|c| !keys.contains(c)));
                // A semi join is a filter the query asks for by name
                // (`ps_partkey IN (SELECT p_partkey FROM part WHERE p_name
                // LIKE 'forest%')`), on the keys or not.
                let fits = join.join_type == JoinType::LeftSemi || through_other_columns;
                (fits && is_plain(keyed) && is_plain(other) && holds_narrowing_scan(other) && !is_volatile(plan))
                    .then(|| (plan.clone(), keys.to_vec()))
            })
        }
        _ => None,
    }
}

/// Whether `plan` is only scans (without a row limit), filters, projections,
/// aliases and inner joins.
fn is_plain(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::TableScan(scan) => scan.fetch.is_none(),
        LogicalPlan::Projection(projection) => is_plain(&projection.input),
        LogicalPlan::SubqueryAlias(alias) => is_plain(&alias.input),
        LogicalPlan::Filter(filter) => is_plain(&filter.input),
        LogicalPlan::Join(join) if join.join_type == JoinType::Inner && !join.null_aware => {
            is_plain(&join.left) && is_plain(&join.right)
        }
        _ => false,
    }
}

/// Whether a scan chain in `plan`, through inner joins, keeps only a narrow
/// part of its table (see [`narrows`]).
fn holds_narrowing_scan(plan: &LogicalPlan) -> bool {
    if scan_chain(plan).is_some() {
        return narrows(plan);
    }
    match plan {
        LogicalPlan::Projection(projection) => holds_narrowing_scan(&projection.input),
        LogicalPlan::SubqueryAlias(alias) => holds_narrowing_scan(&alias.input),
        LogicalPlan::Filter(filter) => holds_narrowing_scan(&filter.input),
        LogicalPlan::Join(join) if join.join_type == JoinType::Inner => {
            holds_narrowing_scan(&join.left) || holds_narrowing_scan(&join.right)
        }
        _ => false,
    }
}

/// Whether `plan` scans `table` somewhere.
fn scans(plan: &LogicalPlan, table: &TableReference) -> bool {
    plan.exists(|node| Ok(matches!(node, LogicalPlan::TableScan(scan) if &scan.table_name == table)))
        .unwrap_or(false)
}

/// Whether an expression anywhere in `plan` is volatile (`random()`).
fn is_volatile(plan: &LogicalPlan) -> bool {
    plan.exists(|node| Ok(node.expressions().iter().any(Expr::is_volatile)))
        .unwrap_or(false)
}

/// Whether a filter in a scan chain keeps only a narrow part of the table:
/// rows matching constants, a range bounded on both sides (a `LIKE` with a
/// constant prefix is one: TPC-H Q20's `p_name LIKE 'forest%'`), or an `IN`
/// list of an expression of one column (TPC-H Q22's `substring(c_phone, 1,
/// 2) IN (...)`).
fn narrows(plan: &LogicalPlan) -> bool {
    let predicate_narrows = |predicate: &Expr| {
        let conjuncts = split_conjunction(predicate);
        matches_constants(predicate)
            || conjuncts.iter().any(|c| match c {
                Expr::InList(list) => {
                    !list.negated
                        && list.expr.column_refs().len() == 1
                        && list.list.iter().all(|e| matches!(e, Expr::Literal(..)))
                }
                Expr::Like(like) => {
                    !like.negated
                        && matches!(like.expr.as_ref(), Expr::Column(_))
                        && matches!(like.pattern.as_ref(), Expr::Literal(value, _)
                        if value.try_as_str().flatten().is_some_and(|p| {
                            p.chars().next().is_some_and(|first| first != '%' && first != '_')
                        }))
                }
                _ => false,
            })
            || bounded_range(&conjuncts)
    };
    match plan {
        LogicalPlan::TableScan(scan) => scan.filters.iter().any(predicate_narrows),
        LogicalPlan::Projection(projection) => narrows(&projection.input),
        LogicalPlan::SubqueryAlias(alias) => narrows(&alias.input),
        LogicalPlan::Filter(filter) => predicate_narrows(&filter.predicate) || narrows(&filter.input),
        _ => false,
    }
}

/// Whether some column is bounded below and above by constants among
/// `conjuncts` (`d >= '1993-07-01' AND d < '1993-10-01'`, or `BETWEEN`).
fn bounded_range(conjuncts: &[&Expr]) -> bool {
    let mut lower: HashSet<&Column> = HashSet::new();
    let mut upper: HashSet<&Column> = HashSet::new();
    for conjunct in conjuncts {
        match conjunct {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                let (column, op) = match (left.as_ref(), right.as_ref()) {
                    (Expr::Column(c), Expr::Literal(..)) => (c, *op),
                    (Expr::Literal(..), Expr::Column(c)) => match op.swap() {
                        Some(op) => (c, op),
                        None => continue,
                    },
                    _ => continue,
                };
                match op {
                    Operator::Gt | Operator::GtEq => {
                        lower.insert(column);
                    }
                    Operator::Lt | Operator::LtEq => {
                        upper.insert(column);
                    }
                    _ => {}
                }
            }
            Expr::Between(between) if !between.negated => {
                if let (Expr::Column(_), Expr::Literal(..), Expr::Literal(..)) =
                    (between.expr.as_ref(), between.low.as_ref(), between.high.as_ref())
                {
                    return true;
                }
            }
            _ => {}
        }
    }
    lower.intersection(&upper).next().is_some()
}

/// Whether `plan` holds a key list a [`SemiJoinReduction`] added: then it is
/// a reduced input, or the key list's own join.
fn holds_reduction(plan: &LogicalPlan) -> bool {
    let mut found = false;
    let _ = plan.apply(|node| {
        if let LogicalPlan::SubqueryAlias(alias) = node
            && alias.alias.table().starts_with(REDUCTION_ALIAS)
        {
            found = true;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

/// `plan` with the unfiltered scan that holds all of `keys` replaced by
/// `moved(scan)`, and `carried` (the moved-in table's columns) passed up
/// through the projections on the way; `None` when no such scan is reached
/// through inner joins and projections, or when it is `plan` itself.
fn move_to_scan(
    plan: &Arc<LogicalPlan>,
    keys: &[Column],
    carried: &[Expr],
    moved: &dyn Fn(&Arc<LogicalPlan>) -> Result<LogicalPlan>,
    below_a_join: bool,
) -> Result<Option<LogicalPlan>> {
    let holds_keys = |p: &LogicalPlan| keys.iter().all(|k| p.schema().has_column(k));
    if !holds_keys(plan) {
        return Ok(None);
    }
    match plan.as_ref() {
        LogicalPlan::Projection(projection) => {
            if !keys.iter().all(|k| passes_through(&projection.expr, k)) {
                return Ok(None);
            }
            let Some(input) = move_to_scan(&projection.input, keys, carried, moved, below_a_join)? else {
                return Ok(None);
            };
            let mut exprs = projection.expr.clone();
            exprs.extend(carried.iter().cloned());
            Ok(Some(LogicalPlan::Projection(Projection::try_new(
                exprs,
                Arc::new(input),
            )?)))
        }
        LogicalPlan::Join(join) if join.join_type == JoinType::Inner && !join.null_aware => {
            let (left, right) = if holds_keys(&join.left) {
                match move_to_scan(&join.left, keys, carried, moved, true)? {
                    Some(left) => (Arc::new(left), Arc::clone(&join.right)),
                    None => return Ok(None),
                }
            } else {
                match move_to_scan(&join.right, keys, carried, moved, true)? {
                    Some(right) => (Arc::clone(&join.left), Arc::new(right)),
                    None => return Ok(None),
                }
            };
            rejoin(join, left, right).map(Some)
        }
        _ if below_a_join && is_unfiltered_scan(plan) => Ok(Some(moved(plan)?)),
        _ => Ok(None),
    }
}

/// Whether the way [`move_to_scan`] would take from `plan` to the scan that
/// holds `keys` passes a join whose other input is not a constant-filtered
/// scan (a table that is not itself a filtered dimension).
fn passes_another_table(plan: &LogicalPlan, keys: &[Column]) -> bool {
    let holds_keys = |p: &LogicalPlan| keys.iter().all(|k| p.schema().has_column(k));
    match plan {
        LogicalPlan::Projection(projection) => passes_another_table(&projection.input, keys),
        LogicalPlan::Join(join) if join.join_type == JoinType::Inner && !join.null_aware => {
            let (toward, other) = if holds_keys(&join.left) {
                (&join.left, &join.right)
            } else {
                (&join.right, &join.left)
            };
            scan_chain(other) != Some(true) || passes_another_table(toward, keys)
        }
        _ => false,
    }
}

/// A table scan, under an alias or not, that no predicate filters.
fn is_unfiltered_scan(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::TableScan(scan) => scan.filters.is_empty() && scan.fetch.is_none(),
        LogicalPlan::SubqueryAlias(alias) => is_unfiltered_scan(&alias.input),
        _ => false,
    }
}

/// For a chain of projections, filters and aliases over one table scan:
/// whether a filter in it keeps only rows matching constants. `None` for any
/// other plan.
fn scan_chain(plan: &LogicalPlan) -> Option<bool> {
    let (scan, predicates) = chain_scan(plan)?;
    Some(scan.filters.iter().chain(predicates).any(matches_constants))
}

/// The table scan under a chain of projections, filters and aliases, and the
/// chain's filter predicates. `None` for any other plan.
fn chain_scan(plan: &LogicalPlan) -> Option<(&TableScan, Vec<&Expr>)> {
    match plan {
        LogicalPlan::TableScan(scan) => Some((scan, Vec::new())),
        LogicalPlan::Projection(projection) => chain_scan(&projection.input),
        LogicalPlan::SubqueryAlias(alias) => chain_scan(&alias.input),
        LogicalPlan::Filter(filter) => {
            let (scan, mut predicates) = chain_scan(&filter.input)?;
            predicates.push(&filter.predicate);
            Some((scan, predicates))
        }
        _ => None,
    }
}

/// Whether one conjunct of `predicate` is `column = constant`, a
/// `column IN (constants)` or an `OR` of those.
fn matches_constants(predicate: &Expr) -> bool {
    fn constant_match(expr: &Expr) -> bool {
        match expr {
            Expr::BinaryExpr(BinaryExpr {
                left,
                op: Operator::Eq,
                right,
            }) => matches!(
                (left.as_ref(), right.as_ref()),
                (Expr::Column(_), Expr::Literal(..)) | (Expr::Literal(..), Expr::Column(_))
            ),
            Expr::BinaryExpr(BinaryExpr {
                left,
                op: Operator::Or,
                right,
            }) => constant_match(left) && constant_match(right),
            Expr::InList(list) => {
                !list.negated
                    && matches!(list.expr.as_ref(), Expr::Column(_))
                    && list.list.iter().all(|e| matches!(e, Expr::Literal(..)))
            }
            _ => false,
        }
    }
    split_conjunction(predicate).into_iter().any(constant_match)
}

/// Whether `exprs` (a projection's) output `column` unchanged.
fn passes_through(exprs: &[Expr], column: &Column) -> bool {
    exprs.iter().any(|e| matches!(e, Expr::Column(c) if c == column))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::execution::SessionStateBuilder;
    use datafusion::prelude::SessionContext;

    async fn context(with_rule: bool) -> SessionContext {
        let rule: Option<Arc<dyn OptimizerRule + Send + Sync>> =
            with_rule.then(|| Arc::new(PushSemiJoinBelowJoins) as _);
        context_with(rule).await
    }

    async fn context_with(rule: Option<Arc<dyn OptimizerRule + Send + Sync>>) -> SessionContext {
        context_with_rules(rule.into_iter().collect()).await
    }

    /// The test tables in a session that runs `rules` after the engine's own, in order.
    async fn context_with_rules(rules: Vec<Arc<dyn OptimizerRule + Send + Sync>>) -> SessionContext {
        let mut builder = SessionStateBuilder::new().with_default_features();
        for rule in rules {
            builder = builder.with_optimizer_rule(rule);
        }
        let ctx = SessionContext::new_with_state(builder.build());
        for sql in [
            "CREATE TABLE cust (c_custkey INT, c_name VARCHAR) AS VALUES (1, 'a'), (2, 'b'), (3, NULL)",
            "CREATE TABLE ord (o_orderkey INT, o_custkey INT) AS VALUES (10, 1), (11, 1), (12, 2), (13, 3), (NULL, 3)",
            "CREATE TABLE item (l_orderkey INT, l_qty INT) AS VALUES (10, 5), (10, 7), (11, 1), (12, 9), (13, 2), (NULL, 4)",
            "CREATE TABLE supp (s_suppkey INT, s_name VARCHAR, s_nationkey INT) AS VALUES \
             (100, 's1', 1), (101, 's2', 2), (102, 's3', 1), (103, 's4', NULL)",
            "CREATE TABLE nat (n_nationkey INT, n_name VARCHAR) AS VALUES (1, 'SAUDI'), (2, 'PERU'), (3, 'SAUDI')",
            "CREATE TABLE li (l_orderkey INT, l_suppkey INT, l_late BOOLEAN) AS VALUES \
             (10, 100, true), (10, 101, true), (11, 102, false), (12, 102, true), (12, 100, true), \
             (13, 103, true), (NULL, 100, true)",
        ] {
            ctx.sql(sql).await.unwrap();
        }
        ctx
    }

    async fn answer(ctx: &SessionContext, sql: &str) -> (String, String) {
        let df = ctx.sql(sql).await.unwrap();
        let plan = df.clone().into_optimized_plan().unwrap().display_indent().to_string();
        let rows = datafusion::arrow::util::pretty::pretty_format_batches(&df.collect().await.unwrap())
            .unwrap()
            .to_string();
        (plan, rows)
    }

    const Q18_SHAPE: &str = "SELECT c_name, o_orderkey, sum(l_qty) AS q FROM cust, ord, item \
        WHERE o_orderkey IN (SELECT l_orderkey FROM item GROUP BY l_orderkey HAVING sum(l_qty) > 8) \
        AND c_custkey = o_custkey AND o_orderkey = l_orderkey \
        GROUP BY c_name, o_orderkey ORDER BY o_orderkey";

    #[tokio::test]
    async fn pushes_the_semi_join_to_the_side_of_its_keys_with_the_same_answer() {
        let (before_plan, before) = answer(&context(false).await, Q18_SHAPE).await;
        let (after_plan, after) = answer(&context(true).await, Q18_SHAPE).await;
        assert_eq!(before, after);
        assert!(
            after.contains("| 10         | 12 |") && after.contains("| 12         | 9  |"),
            "{after}"
        );
        let first_semi = |plan: &str| plan.lines().position(|l| l.contains("LeftSemi Join")).unwrap();
        let last_inner = |plan: &str| {
            plan.lines()
                .collect::<Vec<_>>()
                .iter()
                .rposition(|l| l.contains("Inner Join"))
                .unwrap()
        };
        assert!(first_semi(&before_plan) < last_inner(&before_plan), "{before_plan}");
        assert!(first_semi(&after_plan) > last_inner(&after_plan), "{after_plan}");
    }

    #[tokio::test]
    async fn leaves_semi_joins_with_a_filter_and_anti_joins_alone() {
        let exists = "SELECT o_orderkey FROM cust, ord WHERE c_custkey = o_custkey AND EXISTS \
            (SELECT 1 FROM item WHERE l_orderkey = o_orderkey AND l_qty <> o_custkey) ORDER BY 1";
        let not_exists = "SELECT o_orderkey FROM cust, ord WHERE c_custkey = o_custkey AND NOT EXISTS \
            (SELECT 1 FROM item WHERE l_orderkey = o_orderkey) ORDER BY 1";
        for sql in [exists, not_exists] {
            assert_eq!(
                answer(&context(false).await, sql).await,
                answer(&context(true).await, sql).await
            );
        }
    }

    /// TPC-H Q21's shape: the nation filter is the selective one, but the
    /// `FROM` list joins it last.
    const Q21_SHAPE: &str = "SELECT s_name, count(*) AS n FROM supp, li l1, ord, nat \
        WHERE s_suppkey = l1.l_suppkey AND o_orderkey = l1.l_orderkey AND l1.l_late \
        AND EXISTS (SELECT 1 FROM li l2 WHERE l2.l_orderkey = l1.l_orderkey AND l2.l_suppkey <> l1.l_suppkey) \
        AND s_nationkey = n_nationkey AND n_name = 'SAUDI' \
        GROUP BY s_name ORDER BY s_name";

    /// The line of the first scan of `table` in an indented plan.
    fn scan_line(plan: &str, table: &str) -> usize {
        plan.lines()
            .position(|l| l.contains(&format!("TableScan: {table} ")) || l.ends_with(&format!("TableScan: {table}")))
            .unwrap_or_else(|| panic!("no scan of {table} in {plan}"))
    }

    /// The Join Order Benchmark's shape (DataFusion's `imdb.slt`): several
    /// constant-filtered dimensions of one scan. They used to take turns
    /// moving below each other, growing the plan until the process ran out
    /// of memory (the scheduler too, which optimizes plans again).
    #[tokio::test]
    async fn several_filtered_dimensions_of_one_scan_are_placed_once() {
        let sql = "SELECT min(li.l_orderkey) AS k FROM li, supp s1, nat n1, ord o1 \
            WHERE li.l_suppkey = s1.s_suppkey AND li.l_orderkey = o1.o_orderkey AND li.l_suppkey = n1.n_nationkey \
            AND s1.s_name = 's1' AND n1.n_name = 'SAUDI' AND o1.o_custkey = 1";
        let without = answer(&context_with(None).await, sql).await.1;
        let with = answer(&context_with(Some(Arc::new(JoinFilteredDimensionsFirst))).await, sql)
            .await
            .1;
        assert_eq!(without, with);
    }

    #[tokio::test]
    async fn joins_the_filtered_dimension_to_its_table_first_with_the_same_answer() {
        let (before_plan, before) = answer(&context_with(None).await, Q21_SHAPE).await;
        let (after_plan, after) = answer(
            &context_with(Some(Arc::new(JoinFilteredDimensionsFirst))).await,
            Q21_SHAPE,
        )
        .await;
        assert_eq!(before, after);
        // s1 supplies orders 10 and 12 with another supplier on each; s3 supplies 12 too.
        assert!(
            after.contains("| s1     | 2 |") && after.contains("| s3     | 1 |"),
            "{after}"
        );
        // Before, nation is joined above everything; after, it sits next to the supplier scan.
        assert!(
            scan_line(&before_plan, "nat") > scan_line(&before_plan, "ord"),
            "{before_plan}"
        );
        assert!(
            scan_line(&after_plan, "nat") < scan_line(&after_plan, "ord"),
            "{after_plan}"
        );
        let lines: Vec<&str> = after_plan.lines().collect();
        let supp = scan_line(&after_plan, "supp");
        let nat = scan_line(&after_plan, "nat");
        let join_above = |line: usize| {
            let indent = lines[line].len() - lines[line].trim_start().len();
            (0..line)
                .rev()
                .find(|&i| lines[i].len() - lines[i].trim_start().len() < indent && lines[i].contains("Join"))
                .unwrap()
        };
        assert_eq!(join_above(supp), join_above(nat), "{after_plan}");
    }

    #[tokio::test]
    async fn leaves_filtered_targets_and_outer_joins_alone() {
        let filtered_target = "SELECT s_name FROM li, supp, nat WHERE l_suppkey = s_suppkey \
            AND s_nationkey = n_nationkey AND n_name = 'SAUDI' AND s_name <> 's3' ORDER BY 1";
        let outer = "SELECT s_name, n_name FROM li JOIN supp ON l_suppkey = s_suppkey \
            LEFT JOIN nat ON s_nationkey = n_nationkey AND n_name = 'SAUDI' ORDER BY 1, 2";
        for sql in [filtered_target, outer] {
            let without = answer(&context_with(None).await, sql).await;
            let with = answer(&context_with(Some(Arc::new(JoinFilteredDimensionsFirst))).await, sql).await;
            assert_eq!(without, with, "{sql}");
        }
    }

    fn reduction() -> Option<Arc<dyn OptimizerRule + Send + Sync>> {
        Some(Arc::new(SemiJoinReduction))
    }

    /// How many key lists the plan joins to.
    fn reductions(plan: &str) -> usize {
        plan.lines()
            .filter(|l| l.trim_start().starts_with(&format!("SubqueryAlias: {REDUCTION_ALIAS}")))
            .count()
    }

    #[tokio::test]
    async fn reduces_exists_and_not_exists_to_the_filtered_outer_keys_with_the_same_answer() {
        // NULL keys on both sides: they match nothing, so an anti join keeps
        // the outer ones and drops nothing for the inner ones.
        let queries = [
            "SELECT o_orderkey FROM ord WHERE o_custkey IN (1, 3) AND EXISTS \
             (SELECT 1 FROM item WHERE l_orderkey = o_orderkey AND l_qty > 1) ORDER BY 1",
            "SELECT o_orderkey FROM ord WHERE o_custkey IN (1, 3) AND NOT EXISTS \
             (SELECT 1 FROM item WHERE l_orderkey = o_orderkey AND l_qty > 1) ORDER BY 1",
            "SELECT o_orderkey FROM ord WHERE o_custkey >= 2 AND o_custkey <= 3 AND o_orderkey IN \
             (SELECT l_orderkey FROM item) ORDER BY 1",
        ];
        for sql in queries {
            let (_, without) = answer(&context_with(None).await, sql).await;
            let (plan, with) = answer(&context_with(reduction()).await, sql).await;
            assert_eq!(without, with, "{sql}\n{plan}");
            assert_eq!(reductions(&plan), 1, "{sql}\n{plan}");
        }
    }

    /// Q21's shape, with the subqueries correlated on `key`.
    fn q21_shape(key: &str) -> String {
        format!(
            "SELECT s_name, count(*) AS n FROM supp, li l1, ord \
             WHERE s_suppkey = l1.l_suppkey AND o_orderkey = l1.l_orderkey AND o_custkey = 1 \
             AND EXISTS (SELECT 1 FROM li l2 WHERE l2.l_orderkey = {key} AND l2.l_suppkey <> l1.l_suppkey) \
             AND NOT EXISTS (SELECT 1 FROM li l3 WHERE l3.l_orderkey = {key} \
                 AND l3.l_suppkey <> l1.l_suppkey AND NOT l3.l_late) \
             GROUP BY s_name ORDER BY s_name"
        )
    }

    #[tokio::test]
    async fn reduces_by_the_filtered_table_inside_inner_joins_that_holds_the_keys() {
        // The keys are the filtered orders' own column: both the EXISTS and
        // the NOT EXISTS are narrowed to them.
        let sql = q21_shape("o_orderkey");
        let (_, without) = answer(&context_with(None).await, &sql).await;
        let (plan, with) = answer(&context_with(reduction()).await, &sql).await;
        assert_eq!(without, with, "{plan}");
        assert!(
            with.contains("| s1     | 1 |") && with.contains("| s2     | 1 |"),
            "{with}"
        );
        assert_eq!(reductions(&plan), 2, "{plan}");
    }

    #[tokio::test]
    async fn does_not_follow_keys_across_a_join_to_another_filtered_table() {
        // As TPC-H Q21 is written: the keys are l1's, which nothing narrows;
        // the filtered orders only join on them.
        let sql = q21_shape("l1.l_orderkey");
        let (_, without) = answer(&context_with(None).await, &sql).await;
        let (plan, with) = answer(&context_with(reduction()).await, &sql).await;
        assert_eq!(without, with, "{plan}");
        assert_eq!(reductions(&plan), 0, "{plan}");
    }

    /// The tables under each key list of an indented plan, in plan order.
    fn key_list_tables(plan: &str) -> Vec<Vec<String>> {
        let indent = |line: &str| line.len() - line.trim_start().len();
        let lines: Vec<&str> = plan.lines().collect();
        let mut lists = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            if !line
                .trim_start()
                .starts_with(&format!("SubqueryAlias: {REDUCTION_ALIAS}"))
            {
                continue;
            }
            let tables = lines[i + 1..]
                .iter()
                .take_while(|l| indent(l) > indent(line))
                .filter_map(|l| l.trim_start().strip_prefix("TableScan: "))
                .map(|rest| rest.split_whitespace().next().unwrap_or_default().to_owned())
                .collect();
            lists.push(tables);
        }
        lists
    }

    #[tokio::test]
    async fn reduces_by_the_keys_input_joined_to_a_filtered_dimension() {
        // TPC-H Q21 as written: l1's keys, narrowed by the suppliers of one
        // nation; the filtered orders join on the keys and stay out.
        let sql = "SELECT s_name, count(*) AS n FROM supp, li l1, ord, nat \
            WHERE s_suppkey = l1.l_suppkey AND o_orderkey = l1.l_orderkey AND o_custkey IN (1, 2) AND l1.l_late \
            AND EXISTS (SELECT 1 FROM li l2 WHERE l2.l_orderkey = l1.l_orderkey AND l2.l_suppkey <> l1.l_suppkey) \
            AND NOT EXISTS (SELECT 1 FROM li l3 WHERE l3.l_orderkey = l1.l_orderkey \
                AND l3.l_suppkey <> l1.l_suppkey AND NOT l3.l_late) \
            AND s_nationkey = n_nationkey AND n_name = 'SAUDI' \
            GROUP BY s_name ORDER BY s_name";
        let (_, without) = answer(&context_with(None).await, sql).await;
        let (plan, with) = answer(
            &context_with_rules(vec![Arc::new(JoinFilteredDimensionsFirst), Arc::new(SemiJoinReduction)]).await,
            sql,
        )
        .await;
        assert_eq!(without, with, "{plan}");
        assert!(
            with.contains("| s1     | 2 |") && with.contains("| s3     | 1 |"),
            "{with}"
        );
        let lists = key_list_tables(&plan);
        assert_eq!(lists.len(), 2, "{plan}");
        for tables in lists {
            let mut tables = tables;
            tables.sort();
            assert_eq!(tables, ["li", "nat", "supp"], "{plan}");
        }
    }

    #[tokio::test]
    async fn reduces_by_the_keys_input_semi_joined_to_a_filtered_table() {
        // TPC-H Q20's shape: the rows of suppliers named `s1...` (a prefix,
        // so a narrow range), compared with an aggregate per order.
        let sql = "SELECT l1.l_orderkey, l1.l_suppkey FROM li l1 \
            WHERE l1.l_suppkey IN (SELECT s_suppkey FROM supp WHERE s_name LIKE 's1%') \
            AND l1.l_suppkey <= (SELECT min(l2.l_suppkey) FROM li l2 WHERE l2.l_orderkey = l1.l_orderkey) \
            ORDER BY 1, 2";
        let (_, without) = answer(&context_with(None).await, sql).await;
        let (plan, with) = answer(&context_with(reduction()).await, sql).await;
        assert_eq!(without, with, "{plan}");
        let rows = with.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(rows.contains("| 10 | 100 | | 12 | 100 | +"), "{with}");
        let mut lists = key_list_tables(&plan);
        assert_eq!(lists.len(), 1, "{plan}");
        lists[0].sort();
        assert_eq!(lists[0], ["li", "supp"], "{plan}");
    }

    #[tokio::test]
    async fn moves_the_reduction_below_the_aggregation_a_scalar_subquery_groups_by() {
        // Q17's shape: the subquery's average per order becomes a semi join
        // with a filter; its keys are the aggregation's group column.
        let sql = "SELECT sum(l_qty) AS s FROM item, ord WHERE l_orderkey = o_orderkey AND o_custkey = 1 \
            AND l_qty > (SELECT avg(i2.l_qty) FROM item i2 WHERE i2.l_orderkey = o_orderkey)";
        let (_, without) = answer(&context_with(None).await, sql).await;
        let (plan, with) = answer(&context_with(reduction()).await, sql).await;
        assert_eq!(without, with, "{plan}");
        assert!(with.contains("| 7 |"), "{with}");
        assert_eq!(reductions(&plan), 1, "{plan}");
        let line = |s: &str| {
            plan.lines()
                .position(|l| l.contains(s))
                .unwrap_or_else(|| panic!("{s} in {plan}"))
        };
        assert!(
            line("Aggregate: groupBy=[[i2.l_orderkey]]")
                < line(&format!("LeftSemi Join: item.l_orderkey = {REDUCTION_ALIAS}")),
            "{plan}"
        );
    }

    #[tokio::test]
    async fn leaves_unfiltered_outer_sides_not_in_and_narrow_subqueries_alone() {
        let queries = [
            // Nothing narrows the outer side: its keys would be all of them.
            "SELECT o_orderkey FROM ord WHERE EXISTS (SELECT 1 FROM item WHERE l_orderkey = o_orderkey) ORDER BY 1",
            // NOT IN: a NULL in the subquery empties the answer.
            "SELECT o_orderkey FROM ord WHERE o_custkey = 1 AND o_orderkey NOT IN (SELECT l_orderkey FROM item) ORDER BY 1",
            // Keys from a join to a filtered dimension, for a subquery over
            // a table the outer side does not scan: the join costs more again
            // than the subquery's rows (TPC-H Q16's suppliers).
            "SELECT l1.l_orderkey FROM li l1, supp, nat WHERE l1.l_suppkey = s_suppkey \
             AND s_nationkey = n_nationkey AND n_name = 'SAUDI' AND NOT EXISTS \
             (SELECT 1 FROM ord WHERE o_orderkey = l1.l_orderkey AND o_custkey > 2) ORDER BY 1",
            // Computed again, a volatile filter could keep other rows.
            "SELECT o_orderkey FROM ord WHERE o_custkey = 1 AND random() < 2.0 AND EXISTS \
             (SELECT 1 FROM item WHERE l_orderkey = o_orderkey) ORDER BY 1",
            // The subquery side is itself narrowed by a constant.
            "SELECT c_name FROM cust WHERE c_custkey = 1 AND EXISTS \
             (SELECT 1 FROM ord WHERE o_custkey = c_custkey AND o_orderkey = 10) ORDER BY 1",
        ];
        for sql in queries {
            let (_, without) = answer(&context_with(None).await, sql).await;
            let (plan, with) = answer(&context_with(reduction()).await, sql).await;
            assert_eq!(without, with, "{sql}\n{plan}");
            assert_eq!(reductions(&plan), 0, "{sql}\n{plan}");
        }
    }

    #[tokio::test]
    async fn a_reduced_plan_optimized_again_is_not_reduced_twice() {
        // The client optimizes a plan and the scheduler optimizes it again.
        let ctx = context_with(reduction()).await;
        let sql = "SELECT o_orderkey FROM ord WHERE o_custkey = 1 AND EXISTS \
            (SELECT 1 FROM item WHERE l_orderkey = o_orderkey) ORDER BY 1";
        let once = ctx.sql(sql).await.unwrap().into_optimized_plan().unwrap();
        let twice = ctx.state().optimize(&once).unwrap();
        assert_eq!(
            reductions(&twice.display_indent().to_string()),
            1,
            "{}",
            twice.display_indent()
        );
    }

    #[tokio::test]
    async fn the_setting_turns_the_reduction_off() {
        let config = datafusion::prelude::SessionConfig::new().with_option_extension(QuiverOptions {
            semi_join_reduction: false,
            ..QuiverOptions::default()
        });
        let state = SessionStateBuilder::new()
            .with_default_features()
            .with_config(config)
            .with_optimizer_rule(Arc::new(SemiJoinReduction))
            .build();
        let ctx = SessionContext::new_with_state(state);
        ctx.sql("CREATE TABLE ord (o_orderkey INT, o_custkey INT) AS VALUES (10, 1)")
            .await
            .unwrap();
        ctx.sql("CREATE TABLE item (l_orderkey INT) AS VALUES (10)")
            .await
            .unwrap();
        let sql = "SELECT o_orderkey FROM ord WHERE o_custkey = 1 AND EXISTS \
            (SELECT 1 FROM item WHERE l_orderkey = o_orderkey)";
        let (plan, _) = answer(&ctx, sql).await;
        assert_eq!(reductions(&plan), 0, "{plan}");
    }
}
