//! Test data: orders (CSV, partitioned by day, and Parquet) and customers
//! (newline-delimited JSON), generated here, with expected answers computed
//! independently in plain Rust.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Float64Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;

use crate::harness::S3Server;

pub const DAYS: [&str; 4] = ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04"];
pub const COUNTRIES: [&str; 5] = ["DE", "FR", "US", "JP", "BR"];
pub const ORDERS: i64 = 400;

#[derive(Debug, Clone)]
pub struct Order {
    pub id: i64,
    pub customer: i64,
    pub amount: f64,
    pub qty: i64,
    pub day: &'static str,
}

pub fn orders() -> Vec<Order> {
    (1..=ORDERS)
        .map(|id| Order {
            id,
            customer: (id * 7) % 50 + 1,
            amount: (id % 97) as f64 + 0.5,
            qty: id % 5 + 1,
            day: DAYS[(id % 4) as usize],
        })
        .collect()
}

pub fn country_of(customer: i64) -> &'static str {
    COUNTRIES[(customer % 5) as usize]
}

/// Sum of amount and count of orders per country.
pub fn expected_by_country() -> BTreeMap<&'static str, (f64, i64)> {
    let mut m = BTreeMap::new();
    for o in orders() {
        let e = m.entry(country_of(o.customer)).or_insert((0.0, 0));
        e.0 += o.amount;
        e.1 += 1;
    }
    m
}

fn orders_csv(day: &str, part: usize) -> String {
    let mut s = String::from("order_id,customer_id,amount,qty\n");
    for o in orders().iter().filter(|o| o.day == day && (o.id as usize) % 2 == part) {
        s.push_str(&format!("{},{},{},{}\n", o.id, o.customer, o.amount, o.qty));
    }
    s
}

fn customers_json() -> String {
    (1..=50)
        .map(|id| {
            format!(
                "{{\"customer_id\":{id},\"name\":\"c{id}\",\"country\":\"{}\"}}\n",
                country_of(id)
            )
        })
        .collect()
}

fn orders_parquet(part: i64) -> Vec<u8> {
    let rows: Vec<Order> = orders().into_iter().filter(|o| o.id % 4 == part).collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("order_id", DataType::Int64, false),
        Field::new("customer_id", DataType::Int64, false),
        Field::new("amount", DataType::Float64, false),
        Field::new("qty", DataType::Int64, false),
        Field::new("day", DataType::Utf8, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|o| o.id))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|o| o.customer))),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|o| o.amount))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|o| o.qty))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|o| o.day))),
        ],
    )
    .unwrap();
    let mut buf = Vec::new();
    let mut w = ArrowWriter::try_new(&mut buf, schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    buf
}

/// A fresh S3 server with the data set in its bucket `lake`.
pub fn sample_lake() -> S3Server {
    let s3 = S3Server::start();
    s3.create_bucket("lake");
    upload_sample(&s3, "lake");
    s3
}

/// Uploads the data set:
/// `orders_csv/day=D/part-N.csv`, `orders_parquet/part-N.parquet`, `customers/customers.json`.
pub fn upload_sample(s3: &S3Server, bucket: &str) {
    for day in DAYS {
        for part in 0..2 {
            s3.put(
                bucket,
                &format!("orders_csv/day={day}/part-{part}.csv"),
                orders_csv(day, part).into_bytes(),
            );
        }
    }
    for part in 0..4 {
        s3.put(
            bucket,
            &format!("orders_parquet/part-{part}.parquet"),
            orders_parquet(part),
        );
    }
    s3.put(bucket, "customers/customers.json", customers_json().into_bytes());
    // CSV dialects: a pipe-delimited file with quoted fields, and gzip.
    s3.put(
        bucket,
        "dialects/pipes.csv",
        b"id|label|note\n1|\"a|b\"|plain\n2|'single'|\"say \"\"hi\"\"\"\n3||empty label\n".to_vec(),
    );
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, orders_csv("2024-01-01", 0).as_bytes()).unwrap();
    s3.put(bucket, "gzipped/orders.csv.gz", gz.finish().unwrap());
}

/// DDL registering the data set from `s3://{bucket}/`.
pub fn ddl(bucket: &str) -> String {
    format!(
        "CREATE EXTERNAL TABLE orders_csv (order_id BIGINT, customer_id BIGINT, amount DOUBLE, qty BIGINT, day VARCHAR) \
         STORED AS CSV PARTITIONED BY (day) LOCATION 's3://{bucket}/orders_csv/' OPTIONS ('format.has_header' 'true');\n\
         CREATE EXTERNAL TABLE orders_parquet STORED AS PARQUET LOCATION 's3://{bucket}/orders_parquet/';\n\
         CREATE EXTERNAL TABLE customers STORED AS JSON LOCATION 's3://{bucket}/customers/';\n"
    )
}

/// DDL registering the repository's sample orders (`jobs/data/orders`, 60
/// rows over three days) as `orders`, read from local files.
pub fn sample_orders_ddl() -> String {
    let orders = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../jobs/data/orders");
    format!(
        "CREATE EXTERNAL TABLE orders (order_id BIGINT, customer_id BIGINT, product_id VARCHAR, \
         product VARCHAR, quantity INT, unit_price DOUBLE, status VARCHAR, day VARCHAR) STORED AS CSV \
         PARTITIONED BY (day) LOCATION '{}/' OPTIONS ('format.has_header' 'true');\n",
        orders.display()
    )
}
