//! `orders_report`: revenue per country and day as a Quiver DataFrame job.
//!
//! Embedded, on the sample data:
//!
//! ```text
//! cargo run -p quiver-jobs --bin orders_report -- --output /tmp/orders-report
//! ```
//!
//! On a cluster, reading and writing S3:
//!
//! ```text
//! QUIVER_SCHEDULER=localhost:50050 cargo run -p quiver-jobs --bin orders_report -- \
//!     --input s3://lake/sample --output s3://lake/reports/orders/
//! ```

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    quiver::quiver_core::logging::init("warn");
    let args = quiver_jobs::orders_report::Args::parse();
    let output = args.output.clone();
    match quiver_jobs::orders_report::run(args).await {
        Ok(summary) => {
            eprintln!(
                "job {}: {} report rows written to {output}",
                summary.job_id, summary.rows_written
            );
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "orders_report: {}",
                quiver::quiver_core::secret::redact(&format!("{e:#}"))
            );
            std::process::ExitCode::from(1)
        }
    }
}
