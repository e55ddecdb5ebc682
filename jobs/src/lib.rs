//! Example Quiver jobs, as a library so tests can run them in-process.
//!
//! * [`orders_report`]: a DataFrame job that reads raw CSV orders and JSON
//!   customers, cleans and joins them, aggregates revenue per country and day,
//!   and writes partitioned Parquet. Its binary is `orders_report`
//!   (`jobs/dataframe/orders_report.rs`).

#![warn(missing_docs)]

pub mod orders_report;
