//! The sessions Flight SQL statements run in: planned on this scheduler's
//! own cluster, sharing one catalog.
//!
//! Every Flight SQL call gets a fresh session (the protocol is stateless),
//! but tables created over it (`CREATE EXTERNAL TABLE ...`) go into one
//! catalog all Flight SQL clients share, so a BI tool browsing tables sees
//! what a pipeline defined. Files can also be queried by path
//! (`SELECT * FROM 's3://lake/sample/customers.json'`).

use std::sync::Arc;

use datafusion::catalog::{CatalogProvider, MemoryCatalogProvider, MemorySchemaProvider};
use datafusion::prelude::SessionContext;
use quiver_core::api::JobSource;
use quiver_core::config::Settings;
use quiver_core::session::JobInfo;
use tonic::Status;

use crate::jobs::JobService;

/// The name Flight SQL jobs carry in the UI.
pub const JOB_NAME: &str = "flight-sql";

/// The catalog and schema Flight SQL tables live in (DataFusion's defaults).
pub const CATALOG: &str = "datafusion";
const SCHEMA: &str = "public";

/// Builds the sessions of Flight SQL calls; see the [module docs](self).
#[derive(Clone)]
pub struct ClusterSessions {
    jobs: Arc<JobService>,
    catalog: Arc<dyn CatalogProvider>,
}

impl ClusterSessions {
    /// Sessions on `jobs`' cluster, with an empty shared catalog.
    pub fn new(jobs: Arc<JobService>) -> Self {
        let catalog = MemoryCatalogProvider::new();
        // Cannot fail: the catalog is new and empty.
        let _ = catalog.register_schema(SCHEMA, Arc::new(MemorySchemaProvider::new()));
        Self {
            jobs,
            catalog: Arc::new(catalog),
        }
    }

    /// The job service the sessions' statements are filed in.
    pub fn jobs(&self) -> &Arc<JobService> {
        &self.jobs
    }

    /// A session for a call, as job `job_id` when it runs a statement.
    pub async fn context(&self, job_id: Option<String>) -> Result<SessionContext, Status> {
        let job = JobInfo {
            name: JOB_NAME.into(),
            source: JobSource::FlightSql,
            job_id,
        };
        let ctx = self
            .jobs
            .cluster_context(&job, &Settings::new())
            .await
            .map_err(|e| Status::unavailable(format!("cannot start a session on the cluster: {e}")))?;
        ctx.register_catalog(CATALOG, Arc::clone(&self.catalog));
        Ok(ctx.enable_url_table())
    }
}
