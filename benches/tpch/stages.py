#!/usr/bin/env python3
"""One query's stages as a timeline, from a running scheduler's job service.

    benches/tpch/stages.py --scheduler 127.0.0.1:50050            # the newest job's last query
    benches/tpch/stages.py --scheduler 127.0.0.1:50050 --job ID --query 3

For each stage: its inputs, each task as [launched-started-finished] in
milliseconds since the query was queued, the shuffle it wrote, and its plan
cut down to one line per operator with the metrics that tell where the time
went (rows, compute, scan and fetch time). This is how the "where the time
still goes" notes in benches/README.md were read off; the web UI shows the
same plans in full.
"""
import argparse
import re
import signal
import sys
import urllib.error

from run import http_json

METRICS = ["output_rows", "elapsed_compute", "time_elapsed_processing", "write_time",
           "fetch_time", "build_time", "join_time", "bytes_scanned"]


def get(base, path):
    try:
        return http_json(f"{base}{path}")
    except urllib.error.HTTPError as e:
        raise SystemExit(f"{base}{path}: {e.code} {e.reason}; check the job id (`quiver jobs list`)")
    except (urllib.error.URLError, OSError) as e:
        raise SystemExit(f"could not read {base}{path}: {e}; is the scheduler running there?")


def operator_line(line):
    """`    HashJoinExec: mode=..., metrics=[...]` as `    HashJoinExec mode=... output_rows=...`."""
    indent = len(line) - len(line.lstrip())
    name = re.split(r"[:,]", line.strip(), maxsplit=1)[0]
    detail = ""
    if name == "DataSourceExec":
        table = re.search(r"/([\w.-]+)/[\w.-]+\.(?:parquet|csv|json)", line)
        detail = table.group(1) if table else ""
    else:
        shape = re.search(r"(join_type=\w+|mode=\w+|partitioning: [^,]*)", line)
        detail = shape.group(1)[:80] if shape else ""
    metrics = re.search(r"metrics=\[(.*)\]", line)
    values = []
    if metrics:
        for key in METRICS:
            value = re.search(r"\b" + key + r"=([^,\]]+)", metrics.group(1))
            if value:
                values.append(f"{key}={value.group(1)}")
    return " ".join(part for part in [" " * indent + name, detail, " ".join(values)] if part)


def main():
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `| head` ends the output quietly
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scheduler", default="127.0.0.1:50050", help="HOST:PORT of the scheduler")
    p.add_argument("--job", help="job id (default: the newest job)")
    p.add_argument("--query", type=int, default=-1,
                   help="which finished query of the job, 0-based; negative counts from the end (default -1)")
    args = p.parse_args()
    base = args.scheduler if args.scheduler.startswith("http") else f"http://{args.scheduler}"
    job = args.job
    if job is None:
        jobs = get(base, "/api/v1/jobs?limit=1")["jobs"]
        if not jobs:
            raise SystemExit("the scheduler has no jobs yet")
        job = jobs[0]["id"]
    detail = get(base, f"/api/v1/jobs/{job}")
    queries = [q for q in detail["queries"] if q.get("finished_at") and q.get("queued_at")]
    if not queries:
        raise SystemExit(f"job {job} has no finished query")
    try:
        q = queries[args.query]
    except IndexError:
        raise SystemExit(f"job {job} has {len(queries)} finished queries; --query {args.query} is not one of them")
    t0 = q["queued_at"]
    print(f"job {job}, query {queries.index(q)}: {q['finished_at'] - t0} ms from queued to done")
    for stage in q["stages"]:
        tasks = [t for t in stage.get("tasks", []) if t.get("finished_at")]
        spans = " ".join(f"[{t['launched_at'] - t0}-{t['started_at'] - t0}-{t['finished_at'] - t0}]" for t in tasks)
        shuffle = stage.get("metrics", {}).get("shuffle_write_bytes", 0) / 2**20
        print(f"stage {stage['id']} inputs={stage.get('inputs', [])} tasks {spans} shuffle {shuffle:.2f} MiB")
        for line in stage.get("plan", "").splitlines():
            if line.strip():
                print("   " + operator_line(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
