-- Raw customers (newline-delimited JSON) -> the `customers` Delta table,
-- upserted by key: new customers are added, changed ones updated.

CREATE EXTERNAL TABLE raw_customers STORED AS JSON LOCATION '${raw}/customers.json';

-- Created empty on the first run; left as it is on later ones.
CREATE TABLE IF NOT EXISTS customers USING delta LOCATION '${lake}/delta/customers/' AS
SELECT customer_id, name, country, CAST(signup_date AS DATE) AS signup_date
FROM raw_customers WHERE false;

MERGE INTO customers t
USING (SELECT customer_id, name, country, CAST(signup_date AS DATE) AS signup_date FROM raw_customers) s
ON t.customer_id = s.customer_id
WHEN MATCHED THEN UPDATE SET name = s.name, country = s.country, signup_date = s.signup_date
WHEN NOT MATCHED THEN INSERT (customer_id, name, country, signup_date)
    VALUES (s.customer_id, s.name, s.country, s.signup_date);
