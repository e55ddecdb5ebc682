"""The REST client against a real cluster."""

from __future__ import annotations

import asyncio
import threading
import time

import pyarrow as pa
import pytest

from conftest import Cluster, free_port
from quiver_client import (
    AsyncQuiverClient,
    JobFailed,
    JobNotFound,
    JobState,
    QuiverClient,
    SchedulerUnreachable,
    Unauthorized,
    scheduler_url,
)

TABLES = """
CREATE EXTERNAL TABLE orders (order_id BIGINT, customer_id BIGINT, product_id VARCHAR, product VARCHAR,
    quantity INT, unit_price DOUBLE, status VARCHAR, day VARCHAR)
STORED AS CSV PARTITIONED BY (day) LOCATION 's3://lake/sample/orders/' OPTIONS ('format.has_header' 'true');
CREATE EXTERNAL TABLE customers STORED AS JSON LOCATION 's3://lake/sample/customers.json';
"""


# Minutes of work on this cluster: five sample order tables cross joined.
SLOW_QUERY = "SELECT count(*) FROM orders a, orders b, orders c, orders d, orders e, orders f;"


def client(cluster: Cluster) -> QuiverClient:
    return QuiverClient(cluster.url, cluster.token)


def test_addresses_normalise() -> None:
    assert scheduler_url("scheduler") == "http://scheduler:50050"
    assert scheduler_url("quiver://h:7077/") == "http://h:7077"
    assert scheduler_url("https://q.example.com") == "https://q.example.com:50050"
    with pytest.raises(ValueError):
        scheduler_url("ftp://x")


def test_a_script_with_params_runs_and_its_result_is_arrow(cluster: Cluster) -> None:
    seen: list[JobState] = []
    with client(cluster) as q:
        job = q.run(
            TABLES + "SELECT c.country, count(*) AS n FROM orders o JOIN customers c USING (customer_id) "
            "WHERE o.day = '${day}' GROUP BY c.country ORDER BY c.country;",
            params={"day": "2024-03-02"},
            conf={"datafusion.execution.batch_size": 1024},
            name="client-test",
            on_progress=lambda j: seen.append(j.state),
        )
        assert job.state is JobState.SUCCEEDED and seen[-1] is JobState.SUCCEEDED
        assert [s.state for s in job.statements] == [JobState.SUCCEEDED] * 3
        table = q.result(job.id)
        assert isinstance(table, pa.Table)
        assert table.column_names == ["country", "n"]
        assert sum(table.column("n").to_pylist()) == 20
        assert table.schema.field("n").type == pa.int64()
        frame = q.result_pandas(job.id)
        assert list(frame.columns) == ["country", "n"]
        listed = q.jobs(search="client-test")
        assert listed and listed[0].id == job.id and listed[0].source == "rest"
        assert q.job_url(job.id).endswith(f"/ui/jobs/{job.id}")


def test_sql_returns_the_last_query(cluster: Cluster) -> None:
    with client(cluster) as q:
        table = q.sql("SELECT 'é✓' AS u, CAST(NULL AS INT) AS missing, 40 + ${n} AS answer", params={"n": 2})
    assert table.to_pylist() == [{"u": "é✓", "missing": None, "answer": 42}]


def test_a_failing_script_raises_with_the_engine_message(cluster: Cluster) -> None:
    with client(cluster) as q, pytest.raises(JobFailed) as failed:
        q.run("SELECT 1;\nSELECT no_such_column FROM (SELECT 1 AS a);")
    assert "no_such_column" in str(failed.value)
    assert failed.value.job.state is JobState.FAILED
    assert failed.value.job.statements[1].state is JobState.FAILED


def test_cancel_stops_a_running_job(cluster: Cluster) -> None:
    with client(cluster) as q:
        job = q.submit(TABLES + SLOW_QUERY, name="to-cancel")
        deadline = time.monotonic() + 30
        while q.job(job.id).state is not JobState.RUNNING and time.monotonic() < deadline:
            time.sleep(0.1)
        cancelled = q.cancel(job.id)
        assert cancelled.state is JobState.CANCELLED, cancelled


def test_a_job_past_its_timeout_fails_on_the_cluster(cluster: Cluster) -> None:
    with client(cluster) as q, pytest.raises(JobFailed) as failed:
        q.run(TABLES + SLOW_QUERY, name="timed-out", job_timeout=2, timeout=120)
    assert "timed out" in str(failed.value)
    assert failed.value.job.state is JobState.FAILED
    with pytest.raises(ValueError):
        client(cluster).submit("SELECT 1", job_timeout=0)


def test_errors_say_what_failed(cluster: Cluster) -> None:
    with QuiverClient(cluster.url, "wrong-token") as q, pytest.raises(Unauthorized):
        q.jobs()
    with QuiverClient(cluster.url, None) as q, pytest.raises(Unauthorized):
        q.jobs()
    with client(cluster) as q, pytest.raises(JobNotFound):
        q.job("job-19700101-000000-0001")
    with QuiverClient(f"127.0.0.1:{free_port()}", None) as q, pytest.raises(SchedulerUnreachable):
        q.cluster()


def test_the_async_client_follows_a_job(cluster: Cluster) -> None:
    async def go() -> tuple[JobState, list]:
        async with AsyncQuiverClient(cluster.url, cluster.token) as q:
            job = await q.submit("SELECT 7 AS seven")
            while not (job := await q.job(job.id)).is_terminal:
                await asyncio.sleep(0.1)
            return job.state, (await q.result(job.id)).to_pylist()

    assert asyncio.run(go()) == (JobState.SUCCEEDED, [{"seven": 7}])


def test_clients_can_share_one_scheduler_from_threads(cluster: Cluster) -> None:
    results: list[int] = []

    def one(n: int) -> None:
        with client(cluster) as q:
            results.append(q.sql("SELECT ${n} AS n", params={"n": n}).column("n")[0].as_py())

    threads = [threading.Thread(target=one, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == list(range(5))
