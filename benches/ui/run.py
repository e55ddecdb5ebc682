#!/usr/bin/env python3
"""The scheduler's web UI and REST API with 1,000 jobs in history.

    benches/ui/run.py                    # 1,000 jobs, release build
    benches/ui/run.py --jobs 200 --quiver target/debug/quiver

Starts a scheduler (history kept in a local directory) and one executor,
submits --jobs real jobs over REST (the quickstart script on the sample data
in jobs/data, one in ten failing with an unknown column), waits for them all
to finish, then requests each page --requests times and reports the median
and 95th percentile server time and the page size. It then restarts the
scheduler and measures how long history takes to load and the pages again.

Writes report.md and results.json into --out (default
benches/runs/<date>-ui/) and prints the report.
"""
import argparse
import datetime
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tpch"))
from run import REPO, Server, free_port, http_json, log, machine, wait_until  # noqa: E402

FAILING = "SELECT no_such_column FROM orders"


def post_json(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def timed_get(url):
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as r:
        body = r.read()
        status = r.status
    return time.perf_counter() - t0, len(body), status


class Cluster:
    def __init__(self, args, work):
        self.args, self.work = args, work
        self.port = free_port()
        self.history = os.path.join(work, "history")
        self.base = f"http://127.0.0.1:{self.port}"
        self.scheduler = None
        self.executor = None

    def start_scheduler(self):
        cmd = [self.args.quiver, "scheduler", "--bind", "127.0.0.1", "--port", str(self.port), "--external-host", "127.0.0.1",
               "--history", self.history, "--history-max-jobs", str(self.args.jobs + 100), "--max-running-jobs", "4"]
        t0 = time.time()
        # The jobs read jobs/data from local disk, which a cluster refuses unless allowed.
        env = dict(os.environ, QUIVER_LOG="warn", QUIVER_ALLOW_LOCAL_PATHS=os.path.join(REPO, "jobs", "data"))
        self.scheduler = Server("scheduler", cmd, self.work, env)
        wait_until("the scheduler", lambda: timed_get(self.base + "/healthz")[2] == 200)
        return time.time() - t0

    def start_executor(self):
        cmd = [self.args.quiver, "executor", "--scheduler", f"127.0.0.1:{self.port}", "--bind", "127.0.0.1",
               "--external-host", "127.0.0.1", "--flight-port", str(free_port()), "--grpc-port", str(free_port()),
               "--health-port", "0", "--slots", "2", "--work-dir", os.path.join(self.work, "executor")]
        env = dict(os.environ, QUIVER_LOG="warn", QUIVER_ALLOW_LOCAL_PATHS=os.path.join(REPO, "jobs", "data"))
        self.executor = Server("executor", cmd, self.work, env)
        wait_until("the executor", lambda: any(e["state"] == "alive" for e in http_json(self.base + "/api/v1/executors")))

    def stop(self):
        for s in (self.executor, self.scheduler):
            if s:
                s.stop()


def submit_all(cluster, n):
    with open(os.path.join(REPO, "jobs", "quickstart.sql")) as f:
        script = f.read()
    data = os.path.join(REPO, "jobs", "data")
    ids = []
    t0 = time.time()
    for i in range(n):
        sql = script + (f";\n{FAILING};\n" if i % 10 == 9 else "")
        job = post_json(cluster.base + "/api/v1/jobs", {"sql": sql, "name": f"bench-{i:04d}", "params": {"data": data}})
        ids.append(job["id"])
    log(f"submitted {n} jobs in {time.time() - t0:.1f}s")
    def all_done():
        listing = http_json(cluster.base + "/api/v1/jobs?limit=1000&state=running")["total"] + \
            http_json(cluster.base + "/api/v1/jobs?limit=1000&state=queued")["total"]
        return listing == 0
    wait_until("every job to finish", all_done, timeout=3600)
    log(f"all {n} jobs finished {time.time() - t0:.1f}s after the first submission")
    return ids, time.time() - t0


def pages(cluster, ids):
    last, middle = ids[-1], ids[len(ids) // 2]
    failed = ids[9] if len(ids) > 9 else ids[0]
    return [
        ("overview", "/ui"),
        ("jobs list, first page", "/ui/jobs"),
        ("jobs list, last page", f"/ui/jobs?offset={max(0, len(ids) - 50)}"),
        ("jobs list, search", "/ui/jobs?q=bench-05"),
        ("jobs list, failed only", "/ui/jobs?state=failed"),
        ("job detail, newest", f"/ui/jobs/{last}"),
        ("job detail, from history", f"/ui/jobs/{middle}"),
        ("job detail, failed", f"/ui/jobs/{failed}"),
        ("executors", "/ui/executors"),
        ("REST: list 100", "/api/v1/jobs?limit=100"),
        ("REST: list 1000", "/api/v1/jobs?limit=1000"),
        ("REST: job", f"/api/v1/jobs/{middle}"),
        ("metrics", "/metrics"),
    ]


def measure(cluster, ids, requests):
    rows = []
    for name, path in pages(cluster, ids):
        times, size = [], 0
        for _ in range(requests):
            t, size, status = timed_get(cluster.base + path)
            if status != 200:
                raise SystemExit(f"{path}: HTTP {status}")
            times.append(t)
        times.sort()
        rows.append({"page": name, "path": path, "median_ms": statistics.median(times) * 1000,
                     "p95_ms": times[min(len(times) - 1, int(len(times) * 0.95))] * 1000, "bytes": size})
    return rows


def table(rows):
    out = ["| page | median (ms) | p95 (ms) | size (KiB) |", "|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['page']} (`{r['path'].split('?')[0]}`) | {r['median_ms']:.1f} | {r['p95_ms']:.1f} | {r['bytes'] / 1024:.0f} |")
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=1000)
    p.add_argument("--requests", type=int, default=30, help="requests per page")
    p.add_argument("--quiver", default=None, help="the quiver binary (default: release build under $CARGO_TARGET_DIR)")
    p.add_argument("--out", help="results directory (default: benches/runs/<date>-ui)")
    args = p.parse_args()
    if args.quiver is None:
        args.quiver = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target")), "release", "quiver")
    if not os.path.exists(args.quiver):
        raise SystemExit(f"{args.quiver} not found: cargo build --release -p quiver (or pass --quiver)")
    stamp = datetime.datetime.now().strftime("%Y-%m-%d")
    args.out = os.path.abspath(args.out or os.path.join(REPO, "benches", "results", f"{stamp}-ui"))
    os.makedirs(args.out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="quiver-ui-bench-")
    cluster = Cluster(args, work)
    try:
        cluster.start_scheduler()
        cluster.start_executor()
        ids, submit_seconds = submit_all(cluster, args.jobs)
        live = measure(cluster, ids, args.requests)
        peak_live = cluster.scheduler.peak()
        cluster.scheduler.stop()
        restart_seconds = cluster.start_scheduler()
        in_history = http_json(cluster.base + "/api/v1/jobs?limit=1")["total"]
        restarted = measure(cluster, ids, args.requests)
        peak_restarted = cluster.scheduler.peak()
    finally:
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)

    m = machine()
    lines = [f"# Web UI and REST with {args.jobs} jobs in history", "",
             f"Command: `{' '.join(['benches/ui/run.py'] + sys.argv[1:])}`  ",
             f"Date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}; "
             f"{args.requests} sequential requests per page from one client on 127.0.0.1; server time to the last byte.  ",
             f"Machine: {m['cpus']} CPUs ({m['cpu']}), {m['memory_gib']} GiB.", "",
             f"{args.jobs} jobs (the quickstart script, one in ten failing) ran in {submit_seconds:.1f}s "
             f"({args.jobs / submit_seconds:.1f} jobs/s, at most 4 at once, one executor with 2 slots).", "",
             "## While running", ""] + table(live) + [
             "", f"Scheduler peak RSS: {peak_live / 2**20:.0f} MiB.", "",
             "## After a restart (history read back from disk)", "",
             f"The restarted scheduler answered /healthz after {restart_seconds:.2f}s with {in_history} jobs in history.", ""] + \
        table(restarted) + ["", f"Scheduler peak RSS after the restart: {peak_restarted / 2**20:.0f} MiB."]
    text = "\n".join(lines) + "\n"
    with open(os.path.join(args.out, "report.md"), "w") as f:
        f.write(text)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"jobs": args.jobs, "submit_seconds": submit_seconds, "live": live, "restart_seconds": restart_seconds,
                   "in_history": in_history, "restarted": restarted, "peak_rss_live": peak_live,
                   "peak_rss_restarted": peak_restarted, "machine": m}, f, indent=1)
    print(text)


if __name__ == "__main__":
    main()
