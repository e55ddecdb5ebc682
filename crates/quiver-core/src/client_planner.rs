//! How a client turns a query into a physical plan: Ballista's distributed
//! plan, with three repairs.
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

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::catalog::default_table_source::source_as_provider;
use datafusion::common::Result;
use datafusion::datasource::MemTable;
use datafusion::execution::context::QueryPlanner;
use datafusion::logical_expr::{DmlStatement, LogicalPlan, WriteOp};
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
        let plan = self.distributed.create_physical_plan(plan, session).await?;
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
            LogicalPlan::Copy(_) => match anchor_copy_target(logical_plan)? {
                Some(anchored) => self.on_cluster(&anchored, session).await,
                None => self.on_cluster(logical_plan, session).await,
            },
            _ => self.on_cluster(logical_plan, session).await,
        }
    }
}
