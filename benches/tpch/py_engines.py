#!/usr/bin/env python3
"""Serves TPC-H queries from an in-process Python engine: DuckDB, Spark or
single-node DataFusion (the datafusion package, DataFusion 55 in Rust), so
that run.py can keep every engine up and let them take turns query by query.

    py_engines.py duckdb|duckdb-s3|spark|datafusion|datafusion-s3 < requests

The first line on stdin is the setup, {"data": DIR, "spark_memory": "4g",
"duckdb_set": ["KEY=VALUE", ...]},
and for an -s3 engine "s3": the AWS_* variables of the S3 server holding
DIR's files at s3://tpch;
the engine starts, then answers {"ready": true, "start_seconds": S}. Each
further line is a query, {"name", "sql", "warmup", "runs", "out"}: it runs
once for its answer, written to out/<name>.csv with a header row, then
`warmup` times unrecorded and `runs` times timed; the reply is {"times":
[seconds, ...]} or {"error": "..."}. End of input stops the engine after a
last reply, {"peak_rss_bytes": N} (the JVM included for Spark). Replies go
to the original stdout, one JSON object per line; anything the engine
itself prints goes to stderr.
"""
import csv
import json
import os
import sys
import time
from urllib.parse import urlparse

from run import TABLES, peak_rss as peak_rss_of  # run.py sits beside this file


def write_answer(path, columns, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for r in rows:
            w.writerow(["" if v is None else v for v in r])


def run_duckdb(spec):
    import duckdb

    con = duckdb.connect()
    con.execute("SET threads TO 2")
    for setting in spec.get("duckdb_set", []):
        key, _, value = setting.partition("=")
        con.execute(f"SET {key.strip()} = {value.strip()}")
    data = spec["data"]
    if "s3" in spec:
        data = "s3://tpch"
        # DuckDB's httpfs from PyPI (duckdb-ext-httpfs): its extension server is out of reach.
        import duckdb_ext

        con.execute("SET extension_directory = ?", [os.path.join(list(duckdb_ext.__path__)[0], "extensions")])
        con.execute("SET autoinstall_known_extensions = false")
        con.execute("LOAD httpfs")
        s3, endpoint = spec["s3"], urlparse(spec["s3"]["AWS_ENDPOINT_URL"])

        def quote(v):
            return "'" + v.replace("'", "''") + "'"

        con.execute(f"CREATE SECRET bench (TYPE s3, KEY_ID {quote(s3['AWS_ACCESS_KEY_ID'])}, "
                    f"SECRET {quote(s3['AWS_SECRET_ACCESS_KEY'])}, REGION {quote(s3['AWS_REGION'])}, "
                    f"ENDPOINT {quote(endpoint.netloc)}, URL_STYLE 'path', USE_SSL {endpoint.scheme == 'https'})")
    for t in TABLES:
        con.execute(f"CREATE VIEW {t} AS SELECT * FROM read_parquet('{data}/{t}/*.parquet')")

    def run(sql):
        cur = con.execute(sql)
        return [d[0] for d in cur.description], cur.fetchall()

    return run, lambda: peak_rss_of(os.getpid()), lambda: None


def run_datafusion(spec):
    import datafusion

    # DataFusion's defaults: as many partitions as cores, every core used.
    ctx = datafusion.SessionContext()
    data = spec["data"]
    if "s3" in spec:
        from datafusion.object_store import AmazonS3

        data, s3 = "s3://tpch", spec["s3"]
        endpoint = s3["AWS_ENDPOINT_URL"]
        store = AmazonS3(bucket_name="tpch", region=s3["AWS_REGION"], access_key_id=s3["AWS_ACCESS_KEY_ID"],
                         secret_access_key=s3["AWS_SECRET_ACCESS_KEY"], endpoint=endpoint,
                         allow_http=endpoint.startswith("http://"))
        ctx.register_object_store("s3://", store, "tpch")
    for t in TABLES:
        ctx.register_parquet(t, f"{data}/{t}/")

    def run(sql):
        table = ctx.sql(sql).to_arrow_table()
        return table.column_names, [tuple(r.values()) for r in table.to_pylist()]

    # Timed runs stop at Arrow batches, as the Rust clients do: converting
    # rows to Python objects is not the engine's work.
    return run, lambda: peak_rss_of(os.getpid()), lambda: None, lambda sql: ctx.sql(sql).collect()


def run_spark(spec):
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.master("local[2]")
        .appName("quiver-tpch")
        .config("spark.driver.memory", spec.get("spark_memory", "4g"))
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "8")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    for t in TABLES:
        spark.read.parquet(f"{spec['data']}/{t}").createOrReplaceTempView(t)
    jvm_pid = spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid()

    def run(sql):
        df = spark.sql(sql)
        rows = df.collect()
        return df.columns, [tuple(r) for r in rows]

    return run, lambda: peak_rss_of(os.getpid()) + peak_rss_of(jvm_pid), spark.stop


def main():
    engine = sys.argv[1]
    # Replies keep the original stdout; the engine's own output (Spark's JVM
    # inherits descriptor 1) goes to stderr, so it cannot break the protocol.
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def reply(obj):
        replies.write(json.dumps(obj) + "\n")
        replies.flush()

    spec = json.loads(sys.stdin.readline())
    started = time.perf_counter()
    run, peak, stop, *timed = {"duckdb": run_duckdb, "spark": run_spark, "datafusion": run_datafusion}[engine.removesuffix("-s3")](spec)
    timed = timed[0] if timed else run
    reply({"ready": True, "start_seconds": time.perf_counter() - started})
    for line in sys.stdin:
        req = json.loads(line)
        try:
            columns, rows = run(req["sql"])
            os.makedirs(req["out"], exist_ok=True)
            write_answer(os.path.join(req["out"], f"{req['name']}.csv"), columns, rows)
            times = []
            for i in range(req["warmup"] + req["runs"] if req["runs"] else 0):
                t0 = time.perf_counter()
                timed(req["sql"])
                if i >= req["warmup"]:
                    times.append(time.perf_counter() - t0)
            reply({"times": times})
        except Exception as e:  # the query's error goes into the report; the engine goes on
            reply({"error": f"{type(e).__name__}: {str(e)[-400:]}"})
    reply({"peak_rss_bytes": peak()})
    stop()


if __name__ == "__main__":
    main()
