"""The provider in a real Airflow 3 (SQLite metadata, `airflow dags test`)
against a real cluster and S3 server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, Cluster, wait_for
from quiver_client import JobState, QuiverClient

AIRFLOW = str(Path(sys.executable).with_name("airflow"))


@pytest.fixture(scope="session")
def airflow(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of an Airflow whose metadata database is migrated."""
    home = tmp_path_factory.mktemp("airflow")
    dags = home / "dags"
    dags.mkdir()
    (dags / "lake_daily.py").symlink_to(REPO / "jobs" / "dags" / "lake_daily.py")
    (dags / "quiver_checks.py").symlink_to(Path(__file__).parent / "dags" / "quiver_checks.py")
    host, port = cluster.url.removeprefix("http://").split(":")
    adbc = {
        "conn_type": "adbc",
        "host": cluster.url,
        "extra": {
            "driver": "adbc_driver_flightsql",
            "db_kwargs": {
                "uri": f"grpc://{host}:{port}",
                "adbc.flight.sql.authorization_header": f"Bearer {cluster.token}",
            },
        },
    }
    env = {
        **os.environ,
        **cluster.env,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "false",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "false",
        "QUIVER_JOBS_DIR": str(REPO / "jobs"),
        "AIRFLOW_CONN_QUIVER_DEFAULT": f"quiver://:{cluster.token}@{host}:{port}",
        "AIRFLOW_CONN_QUIVER_ADBC": json.dumps(adbc),
    }
    subprocess.run([AIRFLOW, "db", "migrate"], env=env, check=True, capture_output=True, timeout=600)
    return env


def airflow_run(env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([AIRFLOW, *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_the_provider_is_listed(airflow: dict[str, str]) -> None:
    out = airflow_run(airflow, "providers", "list")
    assert "quiver-lake" in out.stdout, out.stdout + out.stderr


def test_the_lake_pipeline_runs_and_writes_its_tables(airflow: dict[str, str], cluster: Cluster) -> None:
    run = airflow_run(airflow, "dags", "test", "lake_daily", "2024-03-02")
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert "state=success" in output or "DagRunState.SUCCESS" in output or "success" in output.lower(), output
    for task in ("clean_orders", "customers_delta", "daily_revenue", "quality_checks", "report"):
        assert task in output, f"{task} did not run:\n{output}"
    with QuiverClient(cluster.url, cluster.token) as q:
        revenue = q.sql(
            "CREATE EXTERNAL TABLE r STORED AS DELTA LOCATION 's3://lake/delta/daily_revenue/';"
            "SELECT country, orders, revenue FROM r WHERE day = '2024-03-02' ORDER BY country;"
        ).to_pylist()
        expected = q.sql(
            "CREATE EXTERNAL TABLE o (order_id BIGINT, customer_id BIGINT, product_id VARCHAR, product VARCHAR, "
            "quantity INT, unit_price DOUBLE, status VARCHAR, day VARCHAR) STORED AS CSV PARTITIONED BY (day) "
            "LOCATION 's3://lake/sample/orders/' OPTIONS ('format.has_header' 'true');"
            "CREATE EXTERNAL TABLE c STORED AS JSON LOCATION 's3://lake/sample/customers.json';"
            "SELECT c.country, count(*) AS orders, round(sum(round(o.quantity * o.unit_price, 2)), 2) AS revenue "
            "FROM o JOIN c ON c.customer_id = o.customer_id WHERE o.day = '2024-03-02' AND o.status = 'shipped' "
            "GROUP BY c.country ORDER BY c.country;"
        ).to_pylist()
        assert revenue == expected and revenue, (revenue, expected)
        customers = q.sql(
            "CREATE EXTERNAL TABLE d STORED AS DELTA LOCATION 's3://lake/delta/customers/'; SELECT count(*) AS n FROM d;"
        ).to_pylist()
        assert customers[0]["n"] > 0
        sources = {j.name for j in q.jobs(source="rest", limit=200)}
        assert {"lake_daily.clean_orders", "lake_daily.daily_revenue"} <= sources, sources
    # Run again: each step replaces its day, nothing doubles.
    again = airflow_run(airflow, "dags", "test", "lake_daily", "2024-03-02")
    assert again.returncode == 0, again.stdout + again.stderr
    with QuiverClient(cluster.url, cluster.token) as q:
        rerun = q.sql(
            "CREATE EXTERNAL TABLE r STORED AS DELTA LOCATION 's3://lake/delta/daily_revenue/';"
            "SELECT country, orders, revenue FROM r WHERE day = '2024-03-02' ORDER BY country;"
        ).to_pylist()
    assert rerun == revenue


def test_a_failing_job_fails_its_task_with_the_jobs_error(airflow: dict[str, str]) -> None:
    run = airflow_run(airflow, "dags", "test", "quiver_failing", "2024-03-02")
    output = run.stdout + run.stderr
    assert "definitely_missing_column" in output, output
    assert "failed" in output.lower(), output


def test_killing_a_running_task_cancels_its_job(airflow: dict[str, str], cluster: Cluster) -> None:
    proc = subprocess.Popen(
        [AIRFLOW, "tasks", "test", "quiver_slow", "slow", "2024-03-02"],
        env=airflow,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    with QuiverClient(cluster.url, cluster.token) as q:
        def running() -> bool:
            jobs = q.jobs(search="quiver_slow.slow", state=JobState.RUNNING)
            return bool(jobs)

        wait_for("the slow job to run", running, timeout=120)
        job = q.jobs(search="quiver_slow.slow", state=JobState.RUNNING)[0]
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=120)
        deadline = time.monotonic() + 30
        while q.job(job.id).state is JobState.RUNNING and time.monotonic() < deadline:
            time.sleep(0.2)
        assert q.job(job.id).state is JobState.CANCELLED, output


def test_deferrable_mode_completes(airflow: dict[str, str], cluster: Cluster) -> None:
    run = airflow_run(airflow, "dags", "test", "quiver_deferred", "2024-03-02")
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert "deferred" in output.lower(), output
    with QuiverClient(cluster.url, cluster.token) as q:
        job = q.jobs(search="quiver_deferred.deferred")[0]
        assert job.state is JobState.SUCCEEDED
        assert q.result(job.id).to_pylist() == [{"day": "2024-03-02", "n": 42}]
