-- Raw orders of one day (CSV, partitioned by day) -> cleaned Parquet, one
-- file per day, so a rerun of the day replaces it.
--   ${raw}: where the raw data is (s3://lake/sample)
--   ${lake}: where the lake writes (s3://lake)
--   ${day}: the day to load (YYYY-MM-DD)

CREATE EXTERNAL TABLE raw_orders (
    order_id BIGINT,
    customer_id BIGINT,
    product_id VARCHAR,
    product VARCHAR,
    quantity INT,
    unit_price DOUBLE,
    status VARCHAR,
    day VARCHAR
)
STORED AS CSV
PARTITIONED BY (day)
LOCATION '${raw}/orders/'
OPTIONS ('format.has_header' 'true');

-- Keys present, one row per order, statuses in one spelling.
COPY (
    SELECT order_id,
           customer_id,
           trim(product) AS product,
           quantity,
           unit_price,
           round(quantity * unit_price, 2) AS amount,
           lower(trim(status)) AS status
    FROM (
        SELECT *, row_number() OVER (PARTITION BY order_id ORDER BY order_id) AS copy
        FROM raw_orders
        WHERE day = '${day}' AND order_id IS NOT NULL AND customer_id IS NOT NULL
    )
    WHERE copy = 1
)
TO '${lake}/clean/orders/day=${day}/orders.parquet'
STORED AS PARQUET;
