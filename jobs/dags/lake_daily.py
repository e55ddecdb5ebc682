"""The daily lake pipeline: raw CSV and JSON in S3 -> cleaned Parquet and a
Delta table -> aggregates -> quality checks -> a report.

Each SQL step is a file under ``jobs/lake/`` run by Quiver as one job
(``QuiverSQLOperator``); the quality checks run over Arrow Flight SQL with
Airflow's own ADBC hook and SQL check operator, no Quiver code involved.

Connections: ``quiver_default`` (the scheduler) and ``quiver_adbc`` (the same
scheduler, as an ADBC Flight SQL connection); the stack sets both.
Try it: ``airflow dags test lake_daily 2024-03-02``.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

from airflow.providers.common.sql.operators.sql import SQLCheckOperator, SQLExecuteQueryOperator
from airflow.sdk import DAG, task

from quiver_provider.hooks.quiver import QuiverHook
from quiver_provider.operators import QuiverSQLOperator
from quiver_provider.sensors import QuiverPrefixSensor

JOBS = Path(os.environ.get("QUIVER_JOBS_DIR", Path(__file__).resolve().parent.parent))
DAY_PARAMS = {"raw": "{{ params.raw }}", "lake": "{{ params.lake }}", "day": "{{ ds }}"}

with DAG(
    dag_id="lake_daily",
    description="raw orders and customers -> cleaned Parquet, Delta tables, daily revenue, checks",
    schedule="@daily",
    start_date=datetime(2024, 3, 1),
    catchup=False,
    max_active_runs=1,
    template_searchpath=[str(JOBS / "lake")],
    params={"raw": "s3://lake/sample", "lake": "s3://lake"},
    default_args={"retries": 0, "retry_delay": timedelta(minutes=1)},
    tags=["quiver", "lake"],
) as dag:
    orders_arrived = QuiverPrefixSensor(
        task_id="orders_arrived",
        prefix="{{ params.raw }}/orders/day={{ ds }}/",
        pattern="*.csv",
        poke_interval=10,
        timeout=600,
    )

    clean_orders = QuiverSQLOperator(task_id="clean_orders", sql="clean_orders.sql", sql_params=DAY_PARAMS)

    customers = QuiverSQLOperator(task_id="customers_delta", sql="customers_delta.sql", sql_params=DAY_PARAMS)

    daily_revenue = QuiverSQLOperator(
        task_id="daily_revenue",
        sql="daily_revenue.sql",
        sql_params=DAY_PARAMS,
        deferrable=True,
    )

    flight_tables = SQLExecuteQueryOperator(task_id="flight_tables", conn_id="quiver_adbc", sql="flight_tables.sql")

    quality = SQLCheckOperator(task_id="quality_checks", conn_id="quiver_adbc", sql="quality_checks.sql")

    @task
    def report(job_id: str, ds: str | None = None) -> list[dict]:
        """Logs the day's revenue per country (the last statement's rows)."""
        with QuiverHook().get_conn() as client:
            rows = client.result(job_id).to_pylist()
        for row in rows:
            print(f"{ds} {row['country']}: {row['orders']} orders, {row['revenue']} revenue")
        return rows

    orders_arrived >> clean_orders >> flight_tables >> quality
    [clean_orders, customers] >> daily_revenue
    [daily_revenue, quality] >> report(daily_revenue.output)
