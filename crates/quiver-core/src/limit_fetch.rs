//! A `LIMIT` without a row count stays without one on the scheduler.
//!
//! DataFusion's plan format writes a limit's missing fetch (`OFFSET 7`
//! alone) as `i64::MAX` and reads it back as that number. On the scheduler
//! the limit pushdown then gives the scan a fetch of `skip + i64::MAX`, and
//! the plan format between the scheduler and the executors keeps a scan's
//! fetch in 32 bits: `2^63 + 6` arrived as 6, the scan read six rows, and
//! `SELECT * FROM t OFFSET 7` answered with none on a cluster (and in
//! embedded mode, which plans through the same format).
//! [`UnboundedLimits`] gives such a limit back its missing fetch before
//! anything is planned from it.

use datafusion::common::Result;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::Transformed;
use datafusion::logical_expr::{FetchType, Limit, LogicalPlan};
use datafusion::optimizer::AnalyzerRule;

/// The fetch DataFusion's plan format gives a limit that has none.
const WIRE_UNBOUNDED: usize = i64::MAX as usize;

/// Turns a limit's fetch of `i64::MAX` back into no fetch; see the
/// [module docs](self).
///
/// ```
/// use std::sync::Arc;
/// use datafusion::common::config::ConfigOptions;
/// use datafusion::logical_expr::{LogicalPlan, LogicalPlanBuilder};
/// use datafusion::optimizer::AnalyzerRule;
/// use quiver_core::limit_fetch::UnboundedLimits;
///
/// let read_back = LogicalPlanBuilder::empty(true).limit(7, Some(i64::MAX as usize)).unwrap().build().unwrap();
/// let plan = UnboundedLimits.analyze(read_back, &ConfigOptions::default()).unwrap();
/// let LogicalPlan::Limit(limit) = plan else { unreachable!() };
/// assert!(limit.fetch.is_none());
/// ```
#[derive(Debug, Default)]
pub struct UnboundedLimits;

impl AnalyzerRule for UnboundedLimits {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        plan.transform_up_with_subqueries(|node| match node {
            LogicalPlan::Limit(limit)
                if matches!(limit.get_fetch_type()?, FetchType::Literal(Some(WIRE_UNBOUNDED))) =>
            {
                Ok(Transformed::yes(LogicalPlan::Limit(Limit { fetch: None, ..limit })))
            }
            other => Ok(Transformed::no(other)),
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "quiver_unbounded_limits"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::common::ScalarValue;
    use datafusion::logical_expr::Expr;
    use datafusion::prelude::SessionContext;
    use datafusion_proto::bytes::{logical_plan_from_bytes, logical_plan_to_bytes};

    #[tokio::test]
    async fn an_offset_alone_keeps_no_fetch_through_the_plan_format() {
        let ctx = SessionContext::new();
        let plan = ctx
            .sql("SELECT * FROM (VALUES (1), (2), (3), (4)) OFFSET 2")
            .await
            .unwrap()
            .into_unoptimized_plan();
        let bytes = logical_plan_to_bytes(&plan).unwrap();
        let read_back = logical_plan_from_bytes(&bytes, &ctx.task_ctx()).unwrap();
        let LogicalPlan::Limit(limit) = &read_back else {
            panic!("{read_back}")
        };
        assert!(
            matches!(
                limit.fetch.as_deref(),
                Some(Expr::Literal(ScalarValue::Int64(Some(i64::MAX)), _))
            ),
            "{read_back}"
        );

        let repaired = UnboundedLimits.analyze(read_back, &ConfigOptions::default()).unwrap();
        let LogicalPlan::Limit(limit) = &repaired else {
            panic!("{repaired}")
        };
        assert!(limit.fetch.is_none());
        assert_eq!(limit.skip, plan_skip(&plan));
    }

    fn plan_skip(plan: &LogicalPlan) -> Option<Box<Expr>> {
        let LogicalPlan::Limit(limit) = plan else {
            panic!("{plan}")
        };
        limit.skip.clone()
    }
}
