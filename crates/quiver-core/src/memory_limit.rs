//! A `LIMIT` over in-memory data, applied to the data itself before the plan
//! leaves the client.
//!
//! DataFusion folds a limit over one partition of in-memory rows (`VALUES`,
//! a memory table) into the scan (`DataSourceExec: ... fetch=2`) and drops
//! the limit operator. Ballista's adaptive planner then loses that fetch on
//! the way to the executor, which returned every row: `SELECT * FROM (VALUES
//! (1), (5), (3)) LIMIT 2` gave three rows on a cluster. [`LimitInMemoryData`]
//! keeps only the rows such a limit can return in the data that travels
//! inside the plan (as Spark's `LocalRelation` does), so the answer no longer
//! depends on the fetch.

use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use datafusion::catalog::TableProvider;
use datafusion::catalog::default_table_source::{provider_as_source, source_as_provider};
use datafusion::common::Result;
use datafusion::common::tree_node::Transformed;
use datafusion::datasource::MemTable;
use datafusion::logical_expr::{FetchType, Limit, LogicalPlan, SkipType, TableScan, Values};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

/// Trims in-memory data to the rows a limit above it can return; see the
/// [module docs](self).
///
/// ```
/// use std::sync::Arc;
/// use datafusion::prelude::SessionContext;
/// use datafusion::execution::SessionStateBuilder;
/// use quiver_core::memory_limit::LimitInMemoryData;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> datafusion::common::Result<()> {
/// let state = SessionStateBuilder::new()
///     .with_default_features()
///     .with_optimizer_rule(Arc::new(LimitInMemoryData))
///     .build();
/// let ctx = SessionContext::new_with_state(state);
/// let plan = ctx.sql("SELECT * FROM (VALUES (1), (5), (3)) LIMIT 2").await?.into_optimized_plan()?;
/// // Only the two rows the limit can return are left in the plan.
/// let text = plan.display_indent().to_string();
/// assert!(text.contains("Int64(5)") && !text.contains("Int64(3)"), "{text}");
/// # Ok(()) }
/// ```
#[derive(Debug, Default)]
pub struct LimitInMemoryData;

impl OptimizerRule for LimitInMemoryData {
    fn name(&self) -> &str {
        "quiver_limit_in_memory_data"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::TopDown)
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(&self, plan: LogicalPlan, _config: &dyn OptimizerConfig) -> Result<Transformed<LogicalPlan>> {
        match plan {
            LogicalPlan::Limit(limit) => limit_over_values(limit),
            LogicalPlan::TableScan(scan) => limited_memory_scan(scan),
            other => Ok(Transformed::no(other)),
        }
    }
}

/// `skip + fetch` of a limit with literal bounds.
fn rows_needed(limit: &Limit) -> Result<Option<usize>> {
    let (SkipType::Literal(skip), FetchType::Literal(Some(fetch))) = (limit.get_skip_type()?, limit.get_fetch_type()?)
    else {
        return Ok(None);
    };
    Ok(Some(skip.saturating_add(fetch)))
}

fn limit_over_values(limit: Limit) -> Result<Transformed<LogicalPlan>> {
    let needed = rows_needed(&limit)?;
    let LogicalPlan::Values(values) = limit.input.as_ref() else {
        return Ok(Transformed::no(LogicalPlan::Limit(limit)));
    };
    let Some(needed) = needed.filter(|n| *n < values.values.len()) else {
        return Ok(Transformed::no(LogicalPlan::Limit(limit)));
    };
    let trimmed = Values {
        schema: Arc::clone(&values.schema),
        values: values.values[..needed].to_vec(),
    };
    Ok(Transformed::yes(LogicalPlan::Limit(Limit {
        input: Arc::new(LogicalPlan::Values(trimmed)),
        ..limit
    })))
}

/// A scan of a memory table with a fetch (a limit pushed into it) and no
/// filters reads a copy holding only the first `fetch` rows.
fn limited_memory_scan(scan: TableScan) -> Result<Transformed<LogicalPlan>> {
    let Some(fetch) = scan.fetch.filter(|_| scan.filters.is_empty()) else {
        return Ok(Transformed::no(LogicalPlan::TableScan(scan)));
    };
    let provider = source_as_provider(&scan.source)?;
    let Some(memory) = provider.downcast_ref::<MemTable>() else {
        return Ok(Transformed::no(LogicalPlan::TableScan(scan)));
    };
    let mut kept: Vec<RecordBatch> = Vec::new();
    let mut rows = 0;
    let mut total = 0;
    for partition in &memory.batches {
        // A table being written to is left alone; its scan keeps the fetch.
        let Ok(batches) = partition.try_read() else {
            return Ok(Transformed::no(LogicalPlan::TableScan(scan)));
        };
        for batch in batches.iter() {
            total += batch.num_rows();
            if rows < fetch {
                let take = batch.num_rows().min(fetch - rows);
                kept.push(batch.slice(0, take));
                rows += take;
            }
        }
    }
    if total <= fetch {
        return Ok(Transformed::no(LogicalPlan::TableScan(scan)));
    }
    let trimmed = MemTable::try_new(memory.schema(), vec![kept])?;
    Ok(Transformed::yes(LogicalPlan::TableScan(TableScan {
        source: provider_as_source(Arc::new(trimmed)),
        ..scan
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::execution::SessionStateBuilder;
    use datafusion::prelude::SessionContext;

    fn context() -> SessionContext {
        let state = SessionStateBuilder::new()
            .with_default_features()
            .with_optimizer_rule(Arc::new(LimitInMemoryData))
            .build();
        SessionContext::new_with_state(state)
    }

    async fn count(ctx: &SessionContext, sql: &str) -> usize {
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        batches.iter().map(RecordBatch::num_rows).sum()
    }

    #[tokio::test]
    async fn memory_tables_keep_only_what_a_limit_reads() {
        let ctx = context();
        ctx.sql("CREATE TABLE t AS VALUES (1), (2), (3), (4), (5)")
            .await
            .unwrap();
        let plan = ctx
            .sql("SELECT * FROM t LIMIT 2")
            .await
            .unwrap()
            .into_optimized_plan()
            .unwrap();
        let LogicalPlan::TableScan(scan) = plan.inputs()[0] else {
            panic!("expected a scan under the limit:\n{}", plan.display_indent());
        };
        let provider = source_as_provider(&scan.source).unwrap();
        let memory = provider.downcast_ref::<MemTable>().unwrap();
        let rows: usize = memory.batches[0].read().await.iter().map(RecordBatch::num_rows).sum();
        assert_eq!(rows, 2);
        assert_eq!(count(&ctx, "SELECT * FROM t LIMIT 2 OFFSET 2").await, 2);
        assert_eq!(count(&ctx, "SELECT * FROM t LIMIT 9").await, 5);
        // A filter decides which rows count: nothing is trimmed.
        assert_eq!(count(&ctx, "SELECT * FROM t WHERE column1 > 3 LIMIT 2").await, 2);
        assert_eq!(
            count(&ctx, "SELECT * FROM (VALUES (1), (2), (3)) LIMIT 1 OFFSET 1").await,
            1
        );
    }
}
