#!/usr/bin/env python3
"""Runs the TPC-H queries on an in-process Python engine: DuckDB, Spark or
single-node DataFusion (the datafusion package, DataFusion 55 in Rust).

    py_engines.py duckdb|spark|datafusion SPEC.json

SPEC holds: data (directory of <table>/ Parquet directories), queries (name ->
SQL), warmup, runs, out (directory). Writes out/<query>.csv (the answer, with
a header row) and out/timings.json ({query: [seconds, ...]} plus
"peak_rss_bytes" of the engine, JVM included for Spark).
"""
import csv
import json
import os
import sys
import time

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
    for t in TABLES:
        con.execute(f"CREATE VIEW {t} AS SELECT * FROM read_parquet('{spec['data']}/{t}/*.parquet')")

    def run(sql):
        cur = con.execute(sql)
        return [d[0] for d in cur.description], cur.fetchall()

    return run, lambda: peak_rss_of(os.getpid()), lambda: None


def run_datafusion(spec):
    import datafusion

    # DataFusion's defaults: as many partitions as cores, every core used.
    ctx = datafusion.SessionContext()
    for t in TABLES:
        ctx.register_parquet(t, f"{spec['data']}/{t}/")

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
    engine, spec_path = sys.argv[1], sys.argv[2]
    with open(spec_path) as f:
        spec = json.load(f)
    os.makedirs(spec["out"], exist_ok=True)
    started = time.perf_counter()
    run, peak, stop, *timed = {"duckdb": run_duckdb, "spark": run_spark, "datafusion": run_datafusion}[engine](spec)
    timed = timed[0] if timed else run
    start_seconds = time.perf_counter() - started
    timings = {}
    for name, sql in spec["queries"].items():
        columns, rows = run(sql)
        write_answer(os.path.join(spec["out"], f"{name}.csv"), columns, rows)
        times = []
        for i in range(spec["warmup"] + spec["runs"] if spec["runs"] else 0):
            t0 = time.perf_counter()
            timed(sql)
            if i >= spec["warmup"]:
                times.append(time.perf_counter() - t0)
        timings[name] = times
    result = {"timings": timings, "peak_rss_bytes": peak(), "start_seconds": start_seconds}
    stop()
    with open(os.path.join(spec["out"], "timings.json"), "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
