//! Revenue per country and day, as a DataFrame program.
//!
//! Input (`<input>` is a local directory or an `s3://bucket/prefix`):
//! `<input>/orders/day=YYYY-MM-DD/*.csv` (order_id, customer_id, product_id,
//! product, quantity, unit_price, status) and `<input>/customers.json`
//! (customer_id, name, country, signup_date), the layout of `jobs/data`.
//!
//! Output: Parquet under `<output>`, partitioned by `day`, with columns
//! country, orders, customers, units, revenue.

use datafusion::arrow::datatypes::DataType;
use datafusion::dataframe::DataFrameWriteOptions;
use datafusion::functions_aggregate::expr_fn::{count, count_distinct, sum};
use datafusion::prelude::*;
use quiver::Quiver;

/// What to read, where to write, and on which cluster.
#[derive(Debug, Clone, clap::Parser)]
#[command(about = "Revenue per country and day, from raw orders (CSV) and customers (JSON), written as Parquet")]
pub struct Args {
    /// Directory or s3:// prefix holding orders/ and customers.json.
    #[arg(long, default_value = "jobs/data")]
    pub input: String,
    /// Directory or s3:// prefix to write the report to (must be empty).
    #[arg(long)]
    pub output: String,
    /// The scheduler, as HOST:PORT; without one (and no QUIVER_SCHEDULER) the job runs embedded.
    #[arg(long, env = "QUIVER_SCHEDULER")]
    pub scheduler: Option<String>,
    /// The job's name in the scheduler's UI.
    #[arg(long, default_value = "orders-report")]
    pub name: String,
    /// A session setting (repeatable), e.g. --conf s3.region=eu-west-1.
    #[arg(long = "conf", value_name = "KEY=VALUE")]
    pub conf: Vec<String>,
}

/// What the job did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The job's id on the scheduler.
    pub job_id: String,
    /// Report rows written.
    pub rows_written: u64,
}

/// Runs the report.
pub async fn run(args: Args) -> anyhow::Result<Summary> {
    let settings = quiver::quiver_core::config::Settings::parse_pairs(&args.conf)?;
    let mut builder = Quiver::builder(&args.name).settings(&settings);
    builder = match args.scheduler.as_deref().filter(|s| !s.trim().is_empty()) {
        Some(s) => builder.scheduler(s),
        None => builder.embedded(),
    };
    let quiver = builder.connect().await?;
    match report(quiver.context(), &args).await {
        Ok(rows) => {
            let job_id = quiver.job_id().to_owned();
            quiver.finish().await?;
            Ok(Summary {
                job_id,
                rows_written: rows,
            })
        }
        Err(e) => {
            let _ = quiver.fail(format!("{e:#}")).await;
            Err(e)
        }
    }
}

async fn report(ctx: &SessionContext, args: &Args) -> anyhow::Result<u64> {
    let input = args.input.trim_end_matches('/');
    let orders = ctx
        .read_csv(
            format!("{input}/orders/"),
            CsvReadOptions::new()
                .has_header(true)
                .table_partition_cols(vec![("day".to_string(), DataType::Utf8)]),
        )
        .await?;
    let customers = ctx
        .read_json(format!("{input}/customers.json"), JsonReadOptions::default())
        .await?;

    // Clean: shipped orders with a positive quantity; tidy customer fields.
    let orders = orders
        .filter(col("status").eq(lit("shipped")).and(col("quantity").gt(lit(0))))?
        .select(vec![
            col("customer_id").alias("o_customer_id"),
            col("day"),
            col("quantity"),
            (col("quantity") * col("unit_price")).alias("amount"),
        ])?;
    let customers = customers.select(vec![
        col("customer_id"),
        upper(trim(vec![col("country")])).alias("country"),
    ])?;

    let report = orders
        .join(customers, JoinType::Inner, &["o_customer_id"], &["customer_id"], None)?
        .aggregate(
            vec![col("country"), col("day")],
            vec![
                count(lit(1)).alias("orders"),
                count_distinct(col("o_customer_id")).alias("customers"),
                sum(col("quantity")).alias("units"),
                round(vec![sum(col("amount")), lit(2)]).alias("revenue"),
            ],
        )?
        .sort(vec![col("day").sort(true, true), col("country").sort(true, true)])?;

    let written = report
        .write_parquet(
            &args.output,
            DataFrameWriteOptions::new().with_partition_by(vec!["day".into()]),
            None,
        )
        .await?;
    Ok(written
        .iter()
        .filter_map(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<datafusion::arrow::array::UInt64Array>()
                .map(|a| a.iter().flatten().sum::<u64>())
        })
        .sum())
}
