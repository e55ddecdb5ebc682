//! Quiver's core: what every role (client, scheduler, executor) shares.
//!
//! Quiver is a distributed SQL and DataFrame engine built on Apache DataFusion
//! and Ballista. This crate holds the pieces that must be identical in every
//! process of a cluster, so that a plan written by a client means the same
//! thing on the scheduler and on each executor:
//!
//! * [`api`]: the job service's wire types (REST, CLI, UI, history);
//! * [`config`]: settings (`key = value`) from config files, `--conf`, `SET` and REST jobs;
//! * [`storage`]: the one place S3 is configured and object stores are built;
//! * [`session`]: building DataFusion sessions, with Quiver's options and codecs;
//! * [`options`]: the `quiver.*` session options, and typed settings declared once;
//! * [`spark_functions`]: Apache Spark's function library, and how plans carry its calls;
//! * [`delta`]: Delta Lake tables read and written by the cluster;
//! * [`client_planner`] and [`conform`]: how a client plans a query for the cluster, and rows that crossed Arrow Flight given back their declared types;
//! * [`batch_map`]: operators that rewrite each batch of their input and nothing else;
//! * [`tables`] and [`codec`]: Quiver's table types and how plans carry them across processes;
//! * [`optimizer`] and [`memory_limit`]: the logical rules Quiver adds to the engine's;
//! * [`scalar_subquery`]: a scalar subquery returning more than one row is an error on a cluster too;
//! * [`script`], [`ctas`] and [`runner`]: turning SQL scripts into statements and running them;
//! * [`messages`]: engine errors as messages a person can act on;
//! * [`output`]: printing results as tables, CSV or JSON;
//! * [`remote_error`]: an executor's errors given back their engine form on the client;
//! * [`secret`] and [`logging`]: keeping credentials out of everything shown or logged;
//! * [`cluster_secret`] and [`proof`]: what executors and clients prove they hold, on calls that carry no header of their own.
//! * [`tls`] and [`task_port`]: TLS for servers and clients, and the port an executor guards for the scheduler's task calls.
//!
//! ```
//! use std::collections::BTreeMap;
//! use std::sync::Arc;
//! use quiver_core::{config::Settings, runner::StatementRunner, script::Script, session::SessionFactory};
//!
//! # #[tokio::main] async fn main() {
//! let factory = SessionFactory::new(&Settings::new()).unwrap();
//! // A single-process session; `remote_context` gives one that runs on a cluster.
//! let ctx = factory.local_context(&Settings::new()).unwrap();
//! let runner = StatementRunner::new(ctx, Arc::clone(factory.storage()));
//! let script = Script::parse("SELECT 40 + 2 AS answer", &BTreeMap::new()).unwrap();
//! let out = runner.run(&script.statements[0]).await.unwrap();
//! assert_eq!(out.summary, "1 row");
//! # }
//! ```

#![warn(missing_docs)]

pub mod api;
pub mod arrow_schema;
pub mod arrow_writes;
pub mod batch_map;
pub mod client_planner;
pub mod cluster_secret;
pub mod codec;
pub mod config;
pub mod conform;
pub mod ctas;
pub mod delta;
pub mod job_settings;
pub mod limit_fetch;
pub mod local_plan;
pub mod logging;
pub mod memory_limit;
pub mod messages;
pub mod optimizer;
pub mod options;
pub mod output;
pub mod partition_constants;
pub mod partition_writes;
pub mod proof;
pub mod remote_error;
pub mod runner;
pub mod scalar_subquery;
pub mod scheduler_planner;
pub mod script;
pub mod secret;
pub mod session;
pub mod spark_functions;
pub mod storage;
pub mod tables;
pub mod task_port;
pub mod tls;
pub mod union_leaves;
pub mod window_flags;
