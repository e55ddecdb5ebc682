-- Cleaned orders + the customers Delta table -> shipped revenue per country
-- and day, in the `daily_revenue` Delta table (the day's rows replaced).

CREATE EXTERNAL TABLE clean_orders (
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
LOCATION '${lake}/clean/orders/';

CREATE EXTERNAL TABLE customers STORED AS DELTA LOCATION '${lake}/delta/customers/';

CREATE TABLE IF NOT EXISTS daily_revenue USING delta PARTITIONED BY (day)
LOCATION '${lake}/delta/daily_revenue/' AS
SELECT CAST(NULL AS VARCHAR) AS country, CAST(0 AS BIGINT) AS orders,
       CAST(0.0 AS DOUBLE) AS revenue, CAST(NULL AS VARCHAR) AS day
WHERE false;

DELETE FROM daily_revenue WHERE day = '${day}';

INSERT INTO daily_revenue
SELECT c.country, count(*) AS orders, round(sum(o.amount), 2) AS revenue, o.day
FROM clean_orders o
JOIN customers c ON c.customer_id = o.customer_id
WHERE o.day = '${day}' AND o.status = 'shipped'
GROUP BY c.country, o.day;

-- The day's figures, for the report task.
SELECT country, orders, revenue FROM daily_revenue WHERE day = '${day}' ORDER BY revenue DESC, country;
