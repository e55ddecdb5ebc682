"""DAGs the provider's tests run: a failing job, a long job to kill, and a
deferrable job, each with one QuiverSQLOperator task."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG

from quiver_provider.operators import QuiverSQLOperator
from quiver_provider.sensors import QuiverJobSensor

ORDERS = (
    "CREATE EXTERNAL TABLE orders (order_id BIGINT, customer_id BIGINT, product_id VARCHAR, product VARCHAR, "
    "quantity INT, unit_price DOUBLE, status VARCHAR, day VARCHAR) STORED AS CSV PARTITIONED BY (day) "
    "LOCATION 's3://lake/sample/orders/' OPTIONS ('format.has_header' 'true');"
)

with DAG(dag_id="quiver_failing", schedule=None, start_date=datetime(2024, 3, 1), catchup=False):
    QuiverSQLOperator(task_id="broken", sql="SELECT 1;\nSELECT definitely_missing_column FROM (SELECT 1 AS a);")

with DAG(dag_id="quiver_slow", schedule=None, start_date=datetime(2024, 3, 1), catchup=False):
    QuiverSQLOperator(
        task_id="slow",
        sql=ORDERS + "SELECT count(*) FROM orders a, orders b, orders c, orders d, orders e, orders f;",
        poll_interval=0.5,
    )

with DAG(dag_id="quiver_deferred", schedule=None, start_date=datetime(2024, 3, 1), catchup=False):
    submitted = QuiverSQLOperator(
        task_id="deferred",
        sql="SELECT '{{ ds }}' AS day, ${n} AS n",
        sql_params={"n": "{{ 40 + 2 }}"},
        deferrable=True,
        poll_interval=0.5,
    )
    done = QuiverJobSensor(
        task_id="done", job_id="{{ ti.xcom_pull('deferred', key='quiver_job_id') }}", poke_interval=1
    )
    submitted >> done
