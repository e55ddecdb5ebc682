-- Data quality of one day of cleaned orders. Every column must be true, or
-- the check task fails the run: the partition is not empty, no key is
-- missing, and no order appears twice.
SELECT count(*) > 0                          AS partition_not_empty,
       count(*) = count(order_id)            AS no_null_order_ids,
       count(*) = count(customer_id)         AS no_null_customer_ids,
       count(*) = count(DISTINCT order_id)   AS no_duplicate_orders
FROM clean_orders
WHERE day = '{{ ds }}'
