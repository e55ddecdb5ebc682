#!/usr/bin/env python3
"""Writes to S3 against the server's own upload ceiling, on a Quiver cluster.

    benches/s3/writes.py --quiver BINARY --data benches/data/sf1.0 --out benches/runs/<date>-s3-writes
    benches/s3/writes.py --quiver BINARY --compare quiver.distributed_writes=false --out ...

One Garage (`garage.py`, MinIO's stand-in) holds the TPC-H Parquet; a
scheduler and two executors (one slot each, as `tpch/run.py` starts them)
run, each `--runs` times, into a new prefix every time:

  copy-s3      COPY (SELECT * FROM lineitem) TO 's3://tpch/out/...' PARTITIONED BY (l_shipmode)
  copy-local   the same COPY to a local directory: reading S3 and encoding Parquet without the upload
  delta-create CREATE TABLE ... USING delta LOCATION 's3://...' AS SELECT * FROM lineitem (one commit)
  delta-append INSERT INTO that table SELECT * FROM lineitem (a second commit)

With `--compare KEY=VALUE`, each write also runs with that setting, right
after the default, in the same cluster: the report gives both and their
ratio. Every statement reads `lineitem` from the same server. For each it reports
the median time, the bytes it wrote (listed from the server, or the local
directory) and MB/s; beside them the server's own upload throughput,
measured in the same run by `s3-ceiling` (single PUTs and multipart uploads
through object_store, Quiver's client), and the time to read `lineitem`
alone (`SELECT count(*)` over every column would be pruned, so a scan that
decodes every column: `SELECT sum(length(l_comment)) ...`).
"""
import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tpch"))
sys.path.insert(0, HERE)
import garage  # noqa: E402
from run import REPO, machine, start_cluster, log  # noqa: E402

READ = ("SELECT count(*), sum(l_orderkey), sum(length(l_comment)), sum(length(l_shipinstruct)), "
        "min(l_shipdate), max(l_receiptdate), sum(l_extendedprice) FROM lineitem")


def statements(run, local_dir):
    """The measured statements of run number `run`: (name, SQL, where it writes)."""
    return [
        ("read", READ, None),
        ("copy-s3", f"COPY (SELECT * FROM lineitem) TO 's3://tpch/out/copy-{run}/' STORED AS PARQUET "
                    f"PARTITIONED BY (l_shipmode)", ("s3", f"out/copy-{run}/")),
        ("copy-local", f"COPY (SELECT * FROM lineitem) TO '{local_dir}/copy-{run}/' STORED AS PARQUET "
                       f"PARTITIONED BY (l_shipmode)", ("local", f"{local_dir}/copy-{run}")),
        ("delta-create", f"CREATE TABLE d{run} USING delta LOCATION 's3://tpch/out/delta-{run}/' "
                         f"AS SELECT * FROM lineitem", ("s3", f"out/delta-{run}/")),
        ("delta-append", f"CREATE EXTERNAL TABLE d{run} STORED AS DELTA LOCATION 's3://tpch/out/delta-{run}/';\n"
                         f"INSERT INTO d{run} SELECT * FROM lineitem", ("s3", f"out/delta-{run}/")),
    ]


def written(store, where):
    """Bytes under `where`: ("local", a directory) or ("s3", a key prefix in the bucket)."""
    kind, path = where
    if kind == "local":
        return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
    total = 0
    for page in store.client().get_paginator("list_objects_v2").paginate(Bucket=garage.BUCKET, Prefix=path):
        total += sum(o["Size"] for o in page.get("Contents", []))
    return total


def run_sql(binary, port, sql, env, conf=None):
    """Runs `sql` on the cluster through `quiver sql` (with `--conf conf`); its wall time in seconds."""
    prelude = "CREATE EXTERNAL TABLE lineitem STORED AS PARQUET LOCATION 's3://tpch/lineitem/';\n"
    extra = ["--conf", conf] if conf else []
    t0 = time.time()
    out = subprocess.run([binary, "sql", "--scheduler", f"http://127.0.0.1:{port}", *extra, "-e", prelude + sql],
                         capture_output=True, text=True, env=env)
    seconds = time.time() - t0
    if out.returncode != 0:
        raise SystemExit(f"failed: {sql}\n{out.stderr.strip()[-800:]}")
    return seconds


def report(args, results, ceiling):
    lines = ["# Writes to S3 on a Quiver cluster, against the server's upload ceiling", ""]
    lines.append(f"Command: `{' '.join(['benches/s3/writes.py'] + sys.argv[1:])}`  ")
    m = machine()
    lines.append(f"Date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}; "
                 f"median of {args.runs} runs. Machine: {m['cpus']} CPUs ({m['cpu']}), {m['memory_gib']} GiB.  ")
    lines.append("Server: Garage 2.5.0 (`benches/s3/garage.py`), one node, loopback, on the same 2 cores as the "
                 "cluster (a scheduler and two executors, one slot each). Input: TPC-H SF1 `lineitem` "
                 "(4 Parquet files, 232 MB) in the same server.")
    lines.append("")
    lines.append("| statement | s | MB written | MB/s written |")
    lines.append("|---|---:|---:|---:|")
    for name, r in results.items():
        s = statistics.median(r["seconds"])
        mb = statistics.median(r["bytes"]) / 1e6 if r["bytes"] else None
        lines.append(f"| {name} | {s:.2f} | {'–' if mb is None else f'{mb:.0f}'} | "
                     f"{'–' if mb is None else f'{mb / s:.0f}'} |")
    lines.append("")
    if args.compare:
        lines.append(f"With `{args.compare}` against the default, in the same runs (time ratio, below 1 is faster "
                     "by default):")
        lines.append("")
        lines.append("| statement | default s | with the setting s | ratio |")
        lines.append("|---|---:|---:|---:|")
        for name, r in results.items():
            other = results.get(f"{name} ({args.compare})")
            if other is None:
                continue
            a, b = statistics.median(r["seconds"]), statistics.median(other["seconds"])
            lines.append(f"| {name} | {a:.2f} | {b:.2f} | {a / b:.3f} |")
        lines.append("")
    if ceiling:
        lines.append("The server's own upload throughput in this run (`s3-ceiling`, object_store):")
        lines.append("")
        lines.append("| upload | in flight | MB/s |")
        lines.append("|---|---:|---:|")
        for row in ceiling.get("throughput", []):
            if "PUT" in row["test"] or "multipart" in row["test"]:
                lines.append(f"| {row['test']} | {row['in_flight']} | {row['mb_per_s']:.0f} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quiver", required=True, help="the quiver binary")
    p.add_argument("--data", default=os.path.join(REPO, "benches", "data", "sf1.0"))
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--out", help="results directory (report.md, results.json)")
    p.add_argument("--no-ceiling", action="store_true", help="skip measuring the server with s3-ceiling")
    p.add_argument("--compare", metavar="KEY=VALUE", help="also run each write with this setting, side by side")
    args = p.parse_args()
    work = os.path.join("/tmp", f"quiver-writes-{os.getpid()}")
    os.makedirs(work)
    local_dir = os.path.join(work, "local-out")
    os.makedirs(local_dir)
    lineitem = os.path.join(work, "input", "lineitem")
    shutil.copytree(os.path.join(os.path.abspath(args.data), "lineitem"), lineitem)
    server, store, env = garage.start(work, os.path.dirname(lineitem))
    servers = [server]
    try:
        ceiling = None
        if not args.no_ceiling:
            path = os.path.join(work, "ceiling.json")
            garage.ceiling(store, path)
            with open(path) as f:
                ceiling = json.load(f)
        cluster, port = start_cluster(os.path.abspath(args.quiver), "writes", work, env, data=local_dir)
        servers += cluster
        client_env = dict(os.environ, **env)
        results = {}
        for run in range(args.runs):
            variants = [("", None)] + ([("b", args.compare)] if args.compare else [])
            for suffix, conf in variants:
                for name, sql, where in statements(f"{run}{suffix}", local_dir):
                    if conf and not where:
                        continue  # the read alone writes nothing to compare
                    label = f"{name} ({conf})" if conf else name
                    # The append writes where the create did: count what is new.
                    before = written(store, where) if where else 0
                    seconds = run_sql(args.quiver, port, sql, client_env, conf)
                    r = results.setdefault(label, {"seconds": [], "bytes": []})
                    r["seconds"].append(seconds)
                    if where:
                        r["bytes"].append(written(store, where) - before)
                    log(f"{label} run {run}: {seconds:.2f} s")
        text = report(args, results, ceiling)
        print(text)
        if args.out:
            os.makedirs(args.out, exist_ok=True)
            with open(os.path.join(args.out, "report.md"), "w") as f:
                f.write(text)
            with open(os.path.join(args.out, "results.json"), "w") as f:
                json.dump({"results": results, "ceiling": ceiling}, f, indent=1)
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
