-- Quickstart: revenue by country from the sample data in jobs/data.
--
--   quiver submit jobs/quickstart.sql                        # embedded, from the repo root
--   quiver submit jobs/quickstart.sql --scheduler host:50050 # on a cluster
--
-- The same script reads s3:// locations unchanged: point `data` at a bucket
-- with --param data=s3://lake/sample (see README).

CREATE EXTERNAL TABLE orders (
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
LOCATION '${data}/orders/'
OPTIONS ('format.has_header' 'true');

CREATE EXTERNAL TABLE customers
STORED AS JSON
LOCATION '${data}/customers.json';

-- Shipped revenue per country and day.
SELECT c.country,
       o.day,
       count(*)                               AS orders,
       round(sum(o.quantity * o.unit_price), 2) AS revenue
FROM orders o
JOIN customers c ON c.customer_id = o.customer_id
WHERE o.status = 'shipped'
GROUP BY c.country, o.day
ORDER BY revenue DESC, c.country, o.day
LIMIT 10;
