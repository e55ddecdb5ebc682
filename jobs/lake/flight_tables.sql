-- Tables for Flight SQL clients (BI tools, ADBC, Airflow's SQL operators):
-- defined once in the scheduler's shared Flight SQL catalog.
CREATE EXTERNAL TABLE IF NOT EXISTS clean_orders (
    order_id BIGINT,
    customer_id BIGINT,
    product VARCHAR,
    quantity INT,
    unit_price DOUBLE,
    amount DOUBLE,
    status VARCHAR,
    day VARCHAR
)
STORED AS PARQUET
PARTITIONED BY (day)
LOCATION '{{ params.lake }}/clean/orders/'
