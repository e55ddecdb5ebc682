"""Arrow Flight SQL on the scheduler, through the ADBC driver, as any client
(pandas, polars, BI tools) would use it."""

from __future__ import annotations

import datetime
import decimal

import adbc_driver_flightsql
import adbc_driver_flightsql.dbapi as flightsql
import adbc_driver_manager
import pyarrow as pa
import pytest

from conftest import Cluster
from quiver_client import QuiverClient
from quiver_client.flightsql import connect, flight_uri


def test_rows_and_types_come_back_as_arrow(cluster: Cluster) -> None:
    sql = """
        SELECT CAST(42 AS BIGINT) AS big, CAST(7 AS INT) AS small,
               CAST(12.34 AS DECIMAL(10, 2)) AS price,
               CAST('2024-03-02 10:30:00' AS TIMESTAMP) AS at,
               DATE '2024-03-02' AS day,
               CAST(NULL AS VARCHAR) AS nothing,
               'Zoë 東京 ✓' AS text,
               true AS flag
    """
    with connect(cluster.url, cluster.token) as conn, conn.cursor() as cur:
        cur.execute(sql)
        table = cur.fetch_arrow_table()
    assert table.schema.field("big").type == pa.int64()
    assert table.schema.field("small").type == pa.int32()
    assert table.schema.field("price").type == pa.decimal128(10, 2)
    assert pa.types.is_timestamp(table.schema.field("at").type)
    row = table.to_pylist()[0]
    assert row["big"] == 42 and row["small"] == 7
    assert row["price"] == decimal.Decimal("12.34")
    assert row["at"] == datetime.datetime(2024, 3, 2, 10, 30)
    assert row["day"] == datetime.date(2024, 3, 2)
    assert row["nothing"] is None
    assert row["text"] == "Zoë 東京 ✓"
    assert row["flag"] is True


def test_files_in_s3_are_queried_by_path_and_tables_persist(cluster: Cluster) -> None:
    with connect(cluster.url, cluster.token) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT country, count(*) AS n FROM 's3://lake/sample/customers.json' GROUP BY country ORDER BY country"
        )
        by_path = cur.fetch_arrow_table().to_pylist()
        cur.execute(
            "CREATE EXTERNAL TABLE IF NOT EXISTS flight_customers STORED AS JSON "
            "LOCATION 's3://lake/sample/customers.json'"
        )
        cur.fetch_arrow_table()
    # Another connection sees the table: Flight SQL clients share one catalog.
    with connect(cluster.url, cluster.token) as conn, conn.cursor() as cur:
        cur.execute("SELECT country, count(*) AS n FROM flight_customers GROUP BY country ORDER BY country")
        assert cur.fetch_arrow_table().to_pylist() == by_path
        cur.execute("SELECT * FROM flight_customers")
        frame = cur.fetch_df()
        assert len(frame) == sum(r["n"] for r in by_path)
        objects = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
        tables = [
            t["table_name"]
            for catalog in objects
            for schema in catalog["catalog_db_schemas"] or []
            for t in schema["db_schema_tables"] or []
        ]
        assert "flight_customers" in tables, objects
        info = conn.adbc_get_info()
        assert info["vendor_name"] == "Quiver", info


def test_prepared_statements_bind_parameters(cluster: Cluster) -> None:
    with connect(cluster.url, cluster.token) as conn, conn.cursor() as cur:
        cur.execute("SELECT $1 + 1 AS next, $2 AS name", parameters=(41, "ada"))
        assert cur.fetch_arrow_table().to_pylist() == [{"next": 42, "name": "ada"}]


def test_each_statement_is_a_job(cluster: Cluster) -> None:
    with connect(cluster.url, cluster.token) as conn, conn.cursor() as cur:
        cur.execute("SELECT 'flight-job-marker' AS marker")
        cur.fetch_arrow_table()
    with QuiverClient(cluster.url, cluster.token) as q:
        jobs = q.jobs(source="flight_sql", limit=100)
        marked = [j for j in jobs if "flight-job-marker" in (j.raw.get("sql") or q.job(j.id).raw.get("sql") or "")]
        assert marked, [j.raw for j in jobs]
        assert marked[0].state.value == "succeeded"


def test_bad_sql_fails_cleanly(cluster: Cluster) -> None:
    with connect(cluster.url, cluster.token) as conn, conn.cursor() as cur:
        with pytest.raises(adbc_driver_manager.Error) as failed:
            cur.execute("SELEC 1")
        message = str(failed.value)
        assert "SELEC" in message and "ParserError(" not in message, message
        with pytest.raises(adbc_driver_manager.Error) as failed:
            cur.execute("SELECT no_such_column FROM (SELECT 1 AS a)")
        assert "no_such_column" in str(failed.value)
        # The connection still works.
        cur.execute("SELECT 1 AS one")
        assert cur.fetch_arrow_table().to_pylist() == [{"one": 1}]


def test_a_missing_or_wrong_token_is_refused(cluster: Cluster) -> None:
    for token in (None, "not-the-token"):
        options = {}
        if token:
            options[adbc_driver_flightsql.DatabaseOptions.AUTHORIZATION_HEADER.value] = f"Bearer {token}"
        with flightsql.connect(flight_uri(cluster.url), db_kwargs=options, autocommit=True) as conn:
            with conn.cursor() as cur, pytest.raises(adbc_driver_manager.Error) as refused:
                cur.execute("SELECT 1")
            assert "access token" in str(refused.value), refused.value
        # Opening a transaction needs the token too.
        with pytest.raises(adbc_driver_manager.Error) as refused:
            flightsql.connect(flight_uri(cluster.url), db_kwargs=options, autocommit=False)
        assert "access token" in str(refused.value), refused.value


def test_the_client_query_helper(cluster: Cluster) -> None:
    with QuiverClient(cluster.url, cluster.token) as q:
        assert q.query("SELECT 2 * 21 AS n").to_pylist() == [{"n": 42}]


def test_transactions_commit_and_refuse_to_roll_back_writes(cluster: Cluster) -> None:
    options = {adbc_driver_flightsql.DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {cluster.token}"}
    with flightsql.connect(flight_uri(cluster.url), db_kwargs=options, autocommit=False) as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 AS one")
            assert cur.fetch_arrow_table().to_pylist() == [{"one": 1}]
        conn.rollback()  # nothing written: fine
        with conn.cursor() as cur:
            cur.execute("SELECT 2 AS two")
            cur.fetch_arrow_table()
        conn.commit()
        with conn.cursor() as cur:
            cur.execute(
                "CREATE EXTERNAL TABLE IF NOT EXISTS txn_customers STORED AS JSON "
                "LOCATION 's3://lake/sample/customers.json'"
            )
            cur.fetch_arrow_table()
        with pytest.raises(adbc_driver_manager.Error) as refused:
            conn.rollback()
        assert "cannot roll back" in str(refused.value) and "txn_customers" in str(refused.value)
    # The write took effect, as the refusal said.
    with connect(cluster.url, cluster.token) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) AS n FROM txn_customers")
        assert cur.fetch_arrow_table().to_pylist()[0]["n"] > 0
