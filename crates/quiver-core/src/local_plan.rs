//! Sub-plans that must run whole inside one task: recursive queries.
//!
//! DataFusion runs `WITH RECURSIVE` as a [`RecursiveQueryExec`] that runs its
//! recursive term again for every iteration, each time over the rows the
//! last one made (its work table, shared in memory with the term's
//! [`WorkTableExec`]). Ballista cuts a plan into stages at every exchange
//! it finds, including those inside the recursive term (the repartitions of
//! a join with another table): the part below the cut would then run once,
//! in another task, before the recursion starts and without its work table.
//!
//! [`one_task_recursive_queries`] wraps each recursive query in a
//! [`LocalPlanExec`], a leaf to the stage splitter: the query becomes one
//! task of its stage, and its exchanges stay DataFusion's in-process ones.
//! Ballista's adaptive planner, which adds the sorts and repartitions a
//! plan's joins need stage by stage, cannot see inside the leaf either, so
//! the query gets DataFusion's own physical optimizer rules first, as in
//! one process. The wrapper exists only on the scheduler; the plan codec
//! sends the query itself, so an executor runs the very plan single-node
//! DataFusion runs.
//!
//! ```
//! # use datafusion::prelude::SessionContext;
//! # use datafusion::physical_plan::displayable;
//! # use quiver_core::local_plan::one_task_recursive_queries;
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> datafusion::common::Result<()> {
//! let ctx = SessionContext::new();
//! let sql = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 3) SELECT x FROM n";
//! let plan = ctx.sql(sql).await?.create_physical_plan().await?;
//! let plan = one_task_recursive_queries(plan, ctx.state().config_options())?;
//! let shown = displayable(plan.as_ref()).indent(false).to_string();
//! assert!(shown.contains("LocalPlanExec: in one task: RecursiveQueryExec"), "{shown}");
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Result, internal_err};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::optimizer::PhysicalOptimizer;
use datafusion::physical_plan::recursive_query::RecursiveQueryExec;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, SendableRecordBatchStream, displayable,
};

/// Runs `plan` whole in the task that executes it: to Ballista's stage
/// splitter a leaf. See the [module docs](self).
#[derive(Debug)]
pub struct LocalPlanExec {
    plan: Arc<dyn ExecutionPlan>,
}

impl LocalPlanExec {
    /// `plan`, to run in one task.
    pub fn new(plan: Arc<dyn ExecutionPlan>) -> Self {
        Self { plan }
    }

    /// The plan it runs.
    pub fn plan(&self) -> &Arc<dyn ExecutionPlan> {
        &self.plan
    }
}

impl DisplayAs for LocalPlanExec {
    /// The wrapped plan's operators on one line, outermost first: the
    /// stage display has no room for a tree inside a leaf.
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let inner = displayable(self.plan.as_ref()).indent(matches!(t, DisplayFormatType::Verbose));
        let inner = inner.to_string();
        let operators: Vec<&str> = inner.lines().map(str::trim).collect();
        write!(f, "LocalPlanExec: in one task: {}", operators.join(" <- "))
    }
}

impl ExecutionPlan for LocalPlanExec {
    fn name(&self) -> &str {
        "LocalPlanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.plan.properties()
    }

    /// None: the splitter must not see inside.
    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        match children.is_empty() {
            true => Ok(self),
            false => internal_err!("LocalPlanExec has no children, got {}", children.len()),
        }
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        self.plan.execute(partition, context)
    }
}

/// `plan` with each [`RecursiveQueryExec`], optimized as in one process, in
/// a [`LocalPlanExec`]; other plans as they are. See the [module docs](self).
pub fn one_task_recursive_queries(
    plan: Arc<dyn ExecutionPlan>,
    config: &ConfigOptions,
) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_down(|node| match node.downcast_ref::<RecursiveQueryExec>() {
        Some(_) => Ok(Transformed::new(
            Arc::new(LocalPlanExec::new(optimized_alone(node, config)?)) as Arc<dyn ExecutionPlan>,
            true,
            TreeNodeRecursion::Jump,
        )),
        None => Ok(Transformed::no(node)),
    })
    .map(|t| t.data)
}

/// `plan` through DataFusion's physical optimizer rules, but for filter
/// pushdown: it ran when the job was planned, and a second pass would put
/// each pushed filter into the scans again (as Ballista's planner notes).
fn optimized_alone(plan: Arc<dyn ExecutionPlan>, config: &ConfigOptions) -> Result<Arc<dyn ExecutionPlan>> {
    PhysicalOptimizer::new()
        .rules
        .iter()
        .filter(|rule| rule.name() != "FilterPushdown")
        .try_fold(plan, |plan, rule| rule.optimize(plan, config))
}

#[cfg(test)]
mod tests {
    use datafusion::common::tree_node::TreeNodeRecursion;
    use datafusion::physical_plan::collect;
    use datafusion::prelude::SessionContext;

    use super::*;

    const PATHS: &str = "WITH RECURSIVE reach(node, depth) AS (
            SELECT 1, 0
            UNION ALL
            SELECT e.dst, r.depth + 1 FROM reach r JOIN edges e ON e.src = r.node WHERE r.depth < 5
        )
        SELECT node, min(depth) AS d FROM reach GROUP BY node ORDER BY node";

    async fn session() -> SessionContext {
        let ctx = SessionContext::new();
        ctx.sql("CREATE TABLE edges(src INT, dst INT) AS VALUES (1, 2), (2, 3), (3, 4), (2, 5), (5, 1)")
            .await
            .unwrap();
        ctx
    }

    #[tokio::test]
    async fn a_recursive_query_is_one_leaf_and_answers_as_before() {
        let ctx = session().await;
        let plan = ctx.sql(PATHS).await.unwrap().create_physical_plan().await.unwrap();
        let expected = collect(Arc::clone(&plan), ctx.task_ctx()).await.unwrap();
        let wrapped = one_task_recursive_queries(plan, ctx.state().config_options()).unwrap();
        let mut recursive_seen = 0;
        let mut local = 0;
        wrapped
            .apply(|node| {
                recursive_seen += usize::from(node.downcast_ref::<RecursiveQueryExec>().is_some());
                local += usize::from(node.downcast_ref::<LocalPlanExec>().is_some());
                Ok(TreeNodeRecursion::Continue)
            })
            .unwrap();
        assert_eq!(
            (recursive_seen, local),
            (0, 1),
            "{}",
            displayable(wrapped.as_ref()).indent(false)
        );
        let shown = displayable(wrapped.as_ref()).indent(false).to_string();
        assert!(
            shown.contains("LocalPlanExec: in one task: RecursiveQueryExec"),
            "{shown}"
        );
        let answer = collect(wrapped, ctx.task_ctx()).await.unwrap();
        assert_eq!(
            arrow::util::pretty::pretty_format_batches(&answer).unwrap().to_string(),
            arrow::util::pretty::pretty_format_batches(&expected)
                .unwrap()
                .to_string()
        );
    }

    #[tokio::test]
    async fn plans_without_recursion_are_left_alone() {
        let ctx = session().await;
        let plan = ctx
            .sql("SELECT src, count(*) FROM edges GROUP BY src")
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        let before = displayable(plan.as_ref()).indent(false).to_string();
        let after = one_task_recursive_queries(plan, ctx.state().config_options()).unwrap();
        assert_eq!(displayable(after.as_ref()).indent(false).to_string(), before);
    }
}
