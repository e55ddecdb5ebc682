#!/usr/bin/env python3
"""TPC-H on Quiver against Spark, DataFusion and DuckDB, side by side on one machine.

    benches/tpch/run.py                          # SF1, every engine, 1 warm-up + 3 runs
    benches/tpch/run.py --scale 10 --engines quiver-cluster,datafusion
    benches/tpch/run.py --scale 0.01 --engines quiver-cluster,duckdb --runs 1 --check

Engines:
  quiver-cluster     quiver scheduler + 2 executors (1 slot each), Parquet on local disk
  quiver-cluster-s3  the same cluster, the same Parquet in an S3 server (--s3-server: Garage, a
                     real object store standing in for MinIO, or s3s-fs)
  ballista-vanilla   Ballista 55's scheduler + 2 executors (1 slot each) and client, all with
                     Ballista's default settings (benches/ballista-vanilla)
  quiver-embedded    quiver sql with no scheduler: everything in one process
  datafusion         single-node DataFusion 55 (the datafusion package from PyPI), 2 cores
  spark              Apache Spark 4.x, local[2] (pyspark)
  duckdb             DuckDB (python), 2 threads

Each engine but vanilla Ballista and Spark has an -s3 twin (quiver-embedded-s3,
datafusion-s3, duckdb-s3) reading the same files from the one S3 server of the
run: DataFusion through its object_store, DuckDB through its httpfs extension.
DuckDB's extensions come from its own server, which this machine cannot reach;
the httpfs build on PyPI (duckdb-ext-httpfs) exists for DuckDB 1.4.4 only, so
with duckdb-s3 both DuckDB engines run 1.4.4 from a venv made in ~/.cache on
first use (--duckdb-python names another interpreter). Spark has no -s3 twin:
its S3 connector (hadoop-aws and the AWS SDK) comes only from Maven Central.

Data comes from tpchgen-cli (Parquet). Every engine starts first and stays
up; then the engines take turns query by query, in an order that rotates, so
that a slow spell of the machine falls on all of them. On its turn an engine
runs the query once for its answer, then `--warmup` times unrecorded and
`--runs` times recorded; the median is reported. Answers are cross-checked
against DuckDB's (row counts, values to 0.01); mismatches are reported (and,
with --check, fail the run).

Writes report.md, results.json and chart.png into --out (default
benches/runs/<date>-sf<scale>/) and prints the report.
"""
import argparse
import csv
import datetime
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
TABLES = ["lineitem", "orders", "customer", "part", "partsupp", "supplier", "nation", "region"]
ALL_ENGINES = ["quiver-cluster", "quiver-cluster-s3", "ballista-vanilla", "quiver-embedded", "quiver-embedded-s3",
               "datafusion", "datafusion-s3", "spark", "duckdb", "duckdb-s3"]
REFERENCE = "duckdb"
PY_ENGINES = ("duckdb", "duckdb-s3", "spark", "datafusion", "datafusion-s3")
# The S3 twin of an engine reading local files, for the report's S3-against-local table.
S3_TWINS = {"quiver-cluster-s3": "quiver-cluster", "quiver-embedded-s3": "quiver-embedded",
            "datafusion-s3": "datafusion", "duckdb-s3": "duckdb"}
# DuckDB's httpfs from PyPI (its extension server is out of reach), built for this DuckDB only.
DUCKDB_HTTPFS = ("duckdb==1.4.4", "duckdb-ext-httpfs==1.4.4.20260205")
S3_KEY, S3_SECRET = "bench-key", "bench-secret-123"


def log(msg):
    print(f"== {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port):
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def which(name, extra=()):
    for d in list(extra) + os.environ.get("PATH", "").split(os.pathsep):
        p = os.path.join(d, name)
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    return None


def peak_rss(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def cpu_seconds(pid):
    """User plus system CPU time a running process has used, all its threads, in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def run_measured(cmd, env=None, stdout=subprocess.PIPE, timeout=None):
    """Runs a command; returns (exit code, stdout, stderr, peak RSS in bytes)."""
    with tempfile.TemporaryFile() as err:
        p = subprocess.Popen(cmd, env=env, stdout=stdout, stderr=err)
        out = b""
        if stdout == subprocess.PIPE:
            out = p.stdout.read()
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        return p.returncode, out.decode(errors="replace"), err.read().decode(errors="replace"), usage.ru_maxrss * 1024


class Server:
    """A long-running process whose log goes to a file."""

    def __init__(self, name, cmd, logdir, env=None):
        self.name = name
        self.log = os.path.join(logdir, f"{name}.log")
        self.proc = subprocess.Popen(cmd, env=env, stdout=open(self.log, "w"), stderr=subprocess.STDOUT, start_new_session=True)

    def peak(self):
        return peak_rss(self.proc.pid)

    def cpu(self):
        return cpu_seconds(self.proc.pid)

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


def wait_until(what, check, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {what}")


def http_json(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def prelude(location):
    return "".join(
        f"CREATE EXTERNAL TABLE {t} STORED AS PARQUET LOCATION '{location}/{t}/';\n" for t in TABLES
    )


def read_csv_answer(text):
    rows = list(csv.reader(text.splitlines()))
    return rows[0] if rows else [], rows[1:]


class CliEngine:
    """An engine driven through a SQL command-line client."""

    name = ""
    timing_re = re.compile(r"^Time: ([0-9.]+)s$", re.M)

    def __init__(self, args, work):
        self.args, self.work = args, work
        self.servers = []
        self.client_peak = 0
        self.start_seconds = 0.0

    def start(self):
        pass

    def location(self):
        return self.args.data

    def client(self, sql_file, answer):
        raise NotImplementedError

    def env(self):
        return None

    def query(self, name, sql):
        pre = prelude(self.location())
        path = os.path.join(self.work, f"{self.name}-{name}.sql")
        with open(path, "w") as f:
            f.write(pre + sql.strip().rstrip(";") + ";\n")
        code, out, err, peak = run_measured(self.client(path, True), env=self.env())
        self.client_peak = max(self.client_peak, peak)
        if code != 0:
            return None, [], f"exit {code}: {err.strip()[-400:]}"
        columns, rows = self.parse_answer(out)
        n = self.args.warmup + self.args.runs
        if self.args.runs == 0:
            return (columns, rows), [], None
        with open(path, "w") as f:
            f.write(pre + (sql.strip().rstrip(";") + ";\n") * n)
        code, out, err, peak = run_measured(self.client(path, False), env=self.env())
        self.client_peak = max(self.client_peak, peak)
        times = [float(t) for t in self.timing_re.findall(out + "\n" + err)][-n:]
        if code != 0 or len(times) < n:
            return (columns, rows), [], f"timing run failed (exit {code}): {err.strip()[-400:]}"
        return (columns, rows), times[self.args.warmup:], None

    def parse_answer(self, out):
        return read_csv_answer(out)

    def breakdown(self):
        """Where the time of the last timing run went, when the engine can tell."""
        return None

    def s3_counts(self):
        """The S3 server's request counts so far, when the engine reads from one that counts."""
        return None

    def server_peak(self):
        return sum(s.peak() for s in self.servers)

    # Whether the engine's processes are stopped (SIGSTOP) while other engines
    # take their turns; see main().
    paused_between_turns = False

    def pids(self):
        return [s.proc.pid for s in self.servers]

    def stop(self):
        for s in self.servers:
            s.stop()


def start_cluster(binary, name, work, extra_env, executor_memory=None, data=None):
    """A Quiver scheduler and two executors (one slot each) on free ports, once both executors are alive.

    Returns the servers and the scheduler's port; `extra_env` (S3 credentials) goes to every process,
    and jobs may read local files under `data` (a cluster refuses local paths otherwise).
    """
    port = free_port()
    env = dict(os.environ, QUIVER_LOG="warn", **extra_env)
    if data:
        env["QUIVER_ALLOW_LOCAL_PATHS"] = data
    servers = [Server(f"{name}-scheduler", [binary, "scheduler", "--bind", "127.0.0.1", "--port", str(port),
                                            "--external-host", "127.0.0.1"], work, env)]
    for i in range(2):
        cmd = [binary, "executor", "--scheduler", f"127.0.0.1:{port}", "--bind", "127.0.0.1", "--external-host", "127.0.0.1",
               "--flight-port", str(free_port()), "--grpc-port", str(free_port()), "--health-port", "0",
               "--slots", "1", "--work-dir", os.path.join(work, f"{name}-exec{i}")]
        if executor_memory:
            cmd += ["--memory-limit", executor_memory]
        servers.append(Server(f"{name}-executor{i}", cmd, work, env))
    url = f"http://127.0.0.1:{port}/api/v1/executors"
    try:
        wait_until(f"{name}'s executors", lambda: len([e for e in http_json(url) if e["state"] == "alive"]) == 2)
    except SystemExit:
        for server in servers:
            server.stop()
        raise
    return servers, port


class QuiverCluster(CliEngine):
    name = "quiver-cluster"

    def start(self):
        t0 = time.time()
        servers, self.port = start_cluster(self.args.quiver, self.name, self.work, self.s3_env(), self.args.executor_memory,
                                           self.args.data)
        self.servers += servers
        self.start_seconds = time.time() - t0

    def s3_env(self):
        return {}

    def breakdown(self):
        """From the job service: the last timing run's queries, stage by stage.

        Each timed query's `scheduler` time runs from the scheduler receiving
        the plan to the last task's end; `client` is what the client measured,
        so the difference is planning on the client and fetching the result.
        """
        base = f"http://127.0.0.1:{self.port}/api/v1"
        try:
            job = http_json(f"{base}/jobs?limit=1")["jobs"][0]
            detail = http_json(f"{base}/jobs/{job['id']}")
        except Exception as e:  # the report says it is missing
            return {"error": str(e)}
        queries = [q for q in detail["queries"] if q.get("finished_at") and q.get("queued_at")][-self.args.runs:]
        if not queries:
            return None
        def median(f):
            return statistics.median(f(q) for q in queries)
        def tasks(q):
            return [t for st in q["stages"] for t in st.get("tasks", []) if t.get("started_at") and t.get("finished_at")]
        def task_seconds(q):
            return sum((t.get("duration_ms") or 0) for t in tasks(q)) / 1000
        def first_launch(q):
            return min((t["launched_at"] for t in tasks(q) if t.get("launched_at")), default=None)
        def plan_seconds(q):
            # Plan received to the first task launched: planning and stage split.
            first = first_launch(q)
            return (first - q["queued_at"]) / 1000 if first is not None else 0.0
        def idle_seconds(q):
            # From the first task launched to the query's end, the time no task
            # was running: stage transitions, task launch and status round trips.
            first = first_launch(q)
            if first is None:
                return 0.0
            busy, start, end = 0, None, None  # the union of task spans, merged in start order
            for a, b in sorted((t["started_at"], t["finished_at"]) for t in tasks(q)):
                if end is not None and a <= end:
                    end = max(end, b)
                    continue
                if end is not None:
                    busy += end - start
                start, end = a, b
            if end is not None:
                busy += end - start
            return max(0, q["finished_at"] - first - busy) / 1000
        return {
            "scheduler_s": median(lambda q: (q["finished_at"] - q["queued_at"]) / 1000),
            "plan_s": median(plan_seconds),
            "idle_s": median(idle_seconds),
            "stages": median(lambda q: len(q["stages"])),
            "tasks": median(lambda q: q["progress"]["tasks_total"]),
            "task_s": median(task_seconds),
            "shuffle_write_mb": median(lambda q: sum(st["metrics"]["shuffle_write_bytes"] for st in q["stages"]) / 2**20),
        }

    def env(self):
        return dict(os.environ, QUIVER_LOG="error", **self.s3_env())

    def client(self, path, answer):
        cmd = [self.args.quiver, "sql", "--scheduler", f"127.0.0.1:{self.port}", "-f", path, "--format", "csv"]
        cmd += [a for kv in self.args.conf for a in ("--conf", kv)]
        return cmd if answer else cmd + ["--timing"]


def start_s3(data, work, kind="garage"):
    """An S3 server on a free port with `data` uploaded to s3://tpch: its Server, the clients' env, and
    a function that returns the server's own request counts (None when the server keeps none)."""
    if kind == "garage":
        sys.path.insert(0, os.path.join(HERE, "..", "s3"))
        import garage
        server, store, env = garage.start(work, data)
        return server, env, store.metrics
    server = which("s3s-fs", [os.path.expanduser("~/.cargo/bin")])
    if not server:
        raise SystemExit("s3s-fs is needed for S3 runs: cargo install s3s-fs@0.14.1 --locked --features binary")
    root = os.path.join(work, "s3")
    shutil.rmtree(root, ignore_errors=True)
    # s3s-fs serves <root>/<bucket>/<key> from disk.
    os.makedirs(os.path.join(root, "tpch"))
    port = free_port()
    proc = Server("s3s-fs", [server, "--host", "127.0.0.1", "--port", str(port),
                             "--access-key", S3_KEY, "--secret-key", S3_SECRET, root], work)
    wait_until("s3s-fs", lambda: socket.create_connection(("127.0.0.1", port), 1) and True)
    upload(data, port)
    env = {"AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET, "AWS_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    return proc, env, None


class SharedS3:
    """The run's one S3 server with the Parquet files at s3://tpch, started when the first -s3 engine asks.

    Engines take turns, so counting the server's requests before and after
    a turn counts that engine's requests alone.
    """

    def __init__(self, args, work):
        self.args, self.work = args, work
        self.server, self._env, self._counts = None, None, None

    def env(self):
        """What a client needs to reach the bucket: AWS_* variables."""
        if self.server is None:
            self.server, self._env, self._counts = start_s3(self.args.data, self.work, self.args.s3_server)
        return self._env

    def counts(self):
        return self._counts() if self._counts else None

    def stop(self):
        if self.server is not None:
            self.server.stop()


def upload(data, port):
    """Puts the Parquet files through the S3 API, as a user would.

    s3s-fs keeps an object's ETag only when the object was written through
    it; for a file copied into its directory it hashes the whole file on
    every GET and HEAD, which made each ranged Parquet read cost a full
    MD5 of a 58 MB file (Q1 took 9 s).
    """
    import boto3  # installed with moto[server]
    s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                      aws_access_key_id=S3_KEY, aws_secret_access_key=S3_SECRET)
    t0 = time.time()
    for dirpath, _, files in os.walk(data):
        for f in sorted(files):
            path = os.path.join(dirpath, f)
            key = os.path.relpath(path, data)
            with open(path, "rb") as body:
                s3.put_object(Bucket="tpch", Key=key, Body=body)
    log(f"uploaded {data} to s3://tpch in {time.time() - t0:.1f} s")


class OnS3:
    """Makes a Quiver engine its -s3 twin: the same engine reading s3://tpch from the run's S3 server."""

    def s3_env(self):
        return self.args.s3.env()

    def location(self):
        return "s3://tpch"

    def s3_counts(self):
        return self.args.s3.counts()


class QuiverClusterS3(OnS3, QuiverCluster):
    name = "quiver-cluster-s3"


class QuiverEmbedded(CliEngine):
    name = "quiver-embedded"

    def env(self):
        e = dict(os.environ, QUIVER_LOG="error", **self.s3_env())
        e.pop("QUIVER_SCHEDULER", None)
        return e

    def s3_env(self):
        return {}

    def client(self, path, answer):
        cmd = [self.args.quiver, "sql", "-f", path, "--format", "csv", "--embedded-slots", "2"]
        cmd += [a for kv in self.args.conf for a in ("--conf", kv)]
        return cmd if answer else cmd + ["--timing"]


class QuiverEmbeddedS3(OnS3, QuiverEmbedded):
    name = "quiver-embedded-s3"

    def start(self):
        self.args.s3.env()  # the server starts (and the upload is made) before the turns, not in one


class BallistaVanilla(CliEngine):
    name = "ballista-vanilla"
    # Its scheduler's job id clock wakes a thread every millisecond (4% of a
    # core when idle); its executors send a heartbeat a minute and are lost
    # after three, so a turn's pause is safe.
    paused_between_turns = True
    timing_re = re.compile(r"Elapsed ([0-9.]+) seconds", re.M)

    def start(self):
        tool = self.args.vanilla
        self.port = free_port()
        t0 = time.time()
        self.servers.append(Server(f"{self.name}-scheduler", [tool, "scheduler", "--port", str(self.port)], self.work))
        # Ballista's executor exits when its first registration fails, so the
        # scheduler must be listening before the executors start.
        wait_until("the Ballista scheduler", lambda: port_open(self.port))
        flight_ports = [free_port() for _ in range(2)]
        for i, flight in enumerate(flight_ports):
            self.servers.append(Server(f"{self.name}-executor{i}", [
                tool, "executor", "--scheduler-port", str(self.port), "--port", str(flight),
                "--grpc-port", str(free_port()), "--slots", "1",
                "--work-dir", os.path.join(self.work, f"{self.name}-exec{i}")], self.work))
        # Ballista's REST API is a cargo feature Quiver's build leaves out, and
        # there is no gRPC call listing executors. A push-staged executor
        # registers with the scheduler before it opens its Flight port (and
        # exits if registration fails), so an open Flight port means registered.
        wait_until("Ballista executors", lambda: all(port_open(p) for p in flight_ports))
        self.start_seconds = time.time() - t0

    def client(self, path, answer):
        cmd = [self.args.vanilla, "sql", "--port", str(self.port), "-f", path]
        return cmd if answer else cmd + ["--timing"]


class PyEngine:
    """DuckDB, Spark or DataFusion, served by py_engines.py in a process of their own for the whole run."""

    def __init__(self, name, args, work):
        self.name, self.args, self.work = name, args, work
        self.servers, self.start_seconds, self.client_peak = [], 0.0, 0
        self.proc = None
        # Spark's idle JVM uses about 1.6% of a core (its heartbeats time out
        # after 120 s); DuckDB and DataFusion use none.
        self.paused_between_turns = name == "spark"
        self.log = os.path.join(work, f"{name}.log")

    def _reply(self):
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            with open(self.log, errors="replace") as f:
                tail = f.read()[-2000:]
            raise SystemExit(f"{self.name} stopped (exit {self.proc.returncode}); its log {self.log} ends:\n{tail}")
        return json.loads(line)

    def _send(self, obj):
        self.proc.stdin.write(json.dumps(obj) + "\n")
        self.proc.stdin.flush()
        return self._reply()

    def start(self):
        env = dict(os.environ, SPARK_LOCAL_IP="127.0.0.1")
        python = self.args.duckdb_python if self.name.startswith("duckdb") else sys.executable
        spec = {"data": self.args.data, "spark_memory": self.args.spark_memory, "duckdb_set": self.args.duckdb_set}
        if self.name.endswith("-s3"):
            spec["s3"] = self.args.s3.env()
        self.proc = subprocess.Popen([python, os.path.join(HERE, "py_engines.py"), self.name], env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(self.log, "w"),
                                     start_new_session=True)
        self.start_seconds = self._send(spec)["start_seconds"]

    def query(self, name, sql):
        out = os.path.join(self.work, f"{self.name}-answers")
        r = self._send({"name": name, "sql": sql, "warmup": self.args.warmup, "runs": self.args.runs, "out": out})
        if "error" in r:
            return None, [], r["error"]
        with open(os.path.join(out, f"{name}.csv")) as f:
            return read_csv_answer(f.read()), r["times"], None

    def breakdown(self):
        return None

    def s3_counts(self):
        return self.args.s3.counts() if self.name.endswith("-s3") else None

    def pids(self):
        return [self.proc.pid] if self.proc else []

    def server_peak(self):
        return 0

    def stop(self):
        """Ends the engine's process; its peak memory (the JVM's included) becomes the client peak."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            self.proc.stdin.close()
            self.client_peak = max(self.client_peak, self._reply()["peak_rss_bytes"])
            self.proc.wait(60)
        except (OSError, SystemExit, subprocess.TimeoutExpired, ValueError) as e:
            log(f"{self.name} did not stop cleanly: {e}")
            os.killpg(self.proc.pid, signal.SIGKILL)


def norm(v):
    try:
        x = float(v)
        if math.isnan(x):
            return ("n", "nan")
        return ("n", x)
    except ValueError:
        return ("s", v.strip())


def same_answer(a, b):
    """Rows equal up to order, numbers to 0.01 (relative 1e-9 for large ones)."""
    if len(a) != len(b):
        return False, f"{len(a)} rows vs {len(b)}"
    key = lambda r: [("0" if k == "n" else "1") + (f"{v:.2f}" if k == "n" else v) for k, v in r]
    ra = sorted(([norm(v) for v in r] for r in a), key=key)
    rb = sorted(([norm(v) for v in r] for r in b), key=key)
    for x, y in zip(ra, rb):
        if len(x) != len(y):
            return False, "column counts differ"
        for (kx, vx), (ky, vy) in zip(x, y):
            if kx == "n" and ky == "n":
                if abs(vx - vy) > 0.011 + 1e-9 * max(abs(vx), abs(vy)):
                    return False, f"{vx} vs {vy}"
            elif vx != vy and not (vx in ("", "NULL", "None") and vy in ("", "NULL", "None")):
                return False, f"{vx!r} vs {vy!r}"
    return True, ""


def checksum(rows):
    total = 0.0
    for r in rows:
        for v in r:
            k, x = norm(v)
            if k == "n":
                total += round(x, 2)
    return f"{len(rows)}r/{total:.2f}"


def machine():
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
    except OSError:
        pass
    mem = 0
    with open("/proc/meminfo") as f:
        mem = int(next(l for l in f if l.startswith("MemTotal")).split()[1]) * 1024
    return {"cpus": os.cpu_count(), "cpu": cpu, "memory_gib": round(mem / 2**30, 1), "os": platform.platform()}


def versions(args):
    v = {}
    def out(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout.strip() or subprocess.run(cmd, capture_output=True, text=True, timeout=60).stderr.strip()
        except Exception:
            return "unknown"
    v["quiver"] = out([args.quiver, "--version"])
    if os.path.exists(args.vanilla):
        v["ballista-vanilla"] = out([args.vanilla, "--version"]) + " (Ballista 55.0.0)"
    v["duckdb"] = out([args.duckdb_python, "-c", "import duckdb; print(duckdb.__version__)"]) or "none"
    try:
        import datafusion
        v["datafusion-python"] = datafusion.__version__
    except ImportError:
        pass
    try:
        import pyspark
        v["spark"] = pyspark.__version__
    except ImportError:
        pass
    v["java"] = out(["java", "-version"]).splitlines()[0] if shutil.which("java") else "none"
    v["python"] = platform.python_version()
    return v


def generate(args):
    if os.path.exists(os.path.join(args.data, "lineitem")):
        return
    log(f"generating TPC-H SF{args.scale} Parquet into {args.data} (tpchgen-cli)")
    tool = which("tpchgen-cli")
    if not tool:
        raise SystemExit("tpchgen-cli is needed: pip install tpchgen-cli (or cargo install tpchgen-cli)")
    os.makedirs(args.data, exist_ok=True)
    parts = max(2, int(args.scale * 4))
    subprocess.run([tool, "parquet", "-s", str(args.scale), f"--parts={parts}", f"--output-dir={args.data}"], check=True)


def duckdb_httpfs_venv():
    """A venv with the one DuckDB whose httpfs extension is on PyPI, made once in ~/.cache; its python."""
    venv = os.path.expanduser("~/.cache/quiver-bench-duckdb-" + DUCKDB_HTTPFS[0].split("==")[1])
    python = os.path.join(venv, "bin", "python")
    probe = [python, "-c", "import duckdb, duckdb_ext"]
    if os.path.exists(python) and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    log(f"making {venv} with {' '.join(DUCKDB_HTTPFS)} (DuckDB's httpfs extension, from PyPI)")
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    subprocess.run([python, "-m", "pip", "install", "-q", *DUCKDB_HTTPFS], check=True)
    return python


def fmt_s(x):
    return "–" if x is None else (f"{x:.3f}" if x < 10 else f"{x:.1f}")


def report(args, results, queries):
    engines = [e for e in args.engines if e in results]
    lines = [f"# TPC-H SF{args.scale}: Quiver vs Spark, DataFusion and DuckDB", ""]
    lines.append(f"Command: `{' '.join(['benches/tpch/run.py'] + sys.argv[1:])}`  ")
    lines.append(f"Date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}; "
                 f"median of {args.runs} runs after {args.warmup} warm-up, the engines taking turns query by query; seconds.")
    m = results["_machine"]
    lines.append(f"Machine: {m['cpus']} CPUs ({m['cpu']}), {m['memory_gib']} GiB, {m['os']}.  ")
    lines.append("Versions: " + ", ".join(f"{k} {v}" for k, v in results["_versions"].items()) + ".")
    lines.append("")
    header = "| query | " + " | ".join(engines) + " |"
    lines += [header, "|" + "---|" * (len(engines) + 1)]
    totals = {e: 0.0 for e in engines}
    complete = {e: True for e in engines}
    for q in queries:
        cells = []
        for e in engines:
            r = results[e]["queries"].get(q, {})
            t = r.get("median")
            if t is None:
                complete[e] = False
                cells.append("error" if r.get("error") else "–")
            else:
                totals[e] += t
                mark = "" if r.get("match", True) else " ✗"
                cells.append(fmt_s(t) + mark)
        lines.append(f"| {q} | " + " | ".join(cells) + " |")
    lines.append("| **total** | " + " | ".join(f"**{fmt_s(totals[e])}**" + ("" if complete[e] else "*") for e in engines) + " |")
    lines.append("")
    lines.append("✗: answer differs from DuckDB's; *: total over the queries that ran.")
    lines.append("")
    lines.append("| engine | total (s) | vs Spark | vs single-node DataFusion | cluster start (s) | peak memory, servers (MiB) | peak memory, client (MiB) |")
    lines.append("|---|---|---|---|---|---|---|")
    for e in engines:
        vs = lambda ref: (f"{totals[ref] / totals[e]:.2f}× faster" if totals[e] <= totals[ref] else f"{totals[e] / totals[ref]:.2f}× slower") if ref in totals and totals[e] > 0 and totals[ref] > 0 and ref != e else "–"
        r = results[e]
        lines.append(f"| {e} | {fmt_s(totals[e])} | {vs('spark')} | {vs('datafusion')} | {r['start_seconds']:.1f} | "
                     f"{r['server_peak'] / 2**20:.0f} | {r['client_peak'] / 2**20:.0f} |")
    twins = [(local, e) for e, local in S3_TWINS.items() if e in engines and local in engines]
    if twins:
        lines.append("")
        lines.append("## Over S3 against local disk")
        lines.append("")
        lines.append(f"The same Parquet files read from local disk and from the run's S3 server ({args.s3_server}); "
                     "requests and MB are the server's own counts per run of all the queries.")
        lines.append("")
        lines.append("| engine | local disk (s) | over S3 (s) | S3 / local | S3 requests | MB served |")
        lines.append("|---|---|---|---|---|---|")
        for local, e in twins:
            s3 = [results[e]["queries"][q].get("s3") or {} for q in queries]
            requests = sum(v for c in s3 for k, v in c.items() if k != "block_bytes_read")
            served = sum(c.get("block_bytes_read", 0) for c in s3) / 1e6
            ratio = f"{totals[e] / totals[local]:.2f}" if totals[local] > 0 and complete[e] and complete[local] else "–"
            lines.append(f"| {local} | {fmt_s(totals[local])} | {fmt_s(totals[e])} | {ratio} | "
                         f"{requests:.0f} | {served:.0f} |")
    mismatches = [(e, q, results[e]["queries"][q].get("why")) for e in engines for q in queries
                  if not results[e]["queries"].get(q, {}).get("match", True)]
    errors = [(e, q, results[e]["queries"][q]["error"]) for e in engines for q in queries if results[e]["queries"].get(q, {}).get("error")]
    lines.append("")
    if mismatches:
        lines.append("## Answers that differ from DuckDB")
        lines += [f"- {e} {q}: {why}" for e, q, why in mismatches]
    else:
        lines.append(f"All answers match DuckDB's (row counts and values to 0.01).")
    if errors:
        lines.append("")
        lines.append("## Errors")
        lines += [f"- {e} {q}: {why}" for e, q, why in errors]
    for e in engines:
        rows = [(q, results[e]["queries"][q]) for q in queries if results[e]["queries"].get(q, {}).get("breakdown", {}).get("scheduler_s") is not None]
        if not rows:
            continue
        rows.sort(key=lambda r: -(r[1]["median"] or 0))
        lines.append("")
        lines.append(f"## Where the time goes: {e}, slowest queries")
        lines.append("")
        lines.append("From the scheduler's job service (medians of the timed runs). *scheduler*: plan received to last task "
                     "done; *outside*: client-measured minus scheduler time (client planning, result fetch); *planning*: "
                     "plan received to first task launched; *idle*: after that, time with no task running (stage "
                     "transitions, task launch and status round trips); *task time*: sum of task durations over the "
                     "2 slots.")
        lines.append("")
        lines.append("| query | client (s) | scheduler (s) | outside (s) | planning (s) | idle (s) | stages | tasks | "
                     "task time (s) | shuffle written (MiB) |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|")
        for q, r in rows[:6]:
            b = r["breakdown"]
            lines.append(f"| {q} | {fmt_s(r['median'])} | {fmt_s(b['scheduler_s'])} | {fmt_s(max(0.0, r['median'] - b['scheduler_s']))} | "
                         f"{fmt_s(b.get('plan_s', 0))} | {fmt_s(b.get('idle_s', 0))} | "
                         f"{b['stages']:g} | {b['tasks']:g} | {fmt_s(b['task_s'])} | {b['shuffle_write_mb']:.1f} |")
        sums = {k: sum(r["breakdown"].get(k, 0) for _, r in rows) for k in ("scheduler_s", "plan_s", "idle_s")}
        client = sum(r["median"] or 0 for _, r in rows)
        lines.append("")
        lines.append(f"Over all {len(rows)} queries: client {fmt_s(client)} s, of which outside the scheduler "
                     f"{fmt_s(max(0.0, client - sums['scheduler_s']))} s, planning {fmt_s(sums['plan_s'])} s, "
                     f"idle between tasks {fmt_s(sums['idle_s'])} s.")
    for e in engines:
        s3 = {q: results[e]["queries"][q].get("s3") for q in queries if results[e]["queries"][q].get("s3")}
        if not s3:
            continue
        calls = sorted({k for c in s3.values() for k in c if k != "block_bytes_read"})
        lines.append("")
        lines.append(f"## S3 requests: {e}")
        lines.append("")
        lines.append("Counted by the S3 server itself, per run of each query (its answer run, warm-ups and timed runs "
                     "averaged): requests by API call, and MB the server read from its disk for them.")
        lines.append("")
        lines.append("| query | " + " | ".join(calls) + " | MB read | median (s) |")
        lines.append("|---|" + "---:|" * (len(calls) + 2))
        for q, c in s3.items():
            lines.append(f"| {q} | " + " | ".join(f"{c.get(k, 0):.0f}" for k in calls)
                         + f" | {c.get('block_bytes_read', 0) / 1e6:.0f} | {fmt_s(results[e]['queries'][q]['median'])} |")
        total = {k: sum(c.get(k, 0) for c in s3.values()) for k in calls + ["block_bytes_read"]}
        lines.append("| all | " + " | ".join(f"{total[k]:.0f}" for k in calls) + f" | {total['block_bytes_read'] / 1e6:.0f} | |")
    lines.append("")
    lines.append("Checksums (rows / sum of numbers): " + "; ".join(
        f"{q} {results[REFERENCE]['queries'][q].get('checksum', '?')}" for q in queries if REFERENCE in results))
    return "\n".join(lines) + "\n", totals


def chart(path, results, engines, queries, totals):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib missing: no chart")
        return
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(14, 9), gridspec_kw={"height_ratios": [3, 1.3]})
    width = 0.8 / max(1, len(engines))
    for i, e in enumerate(engines):
        xs = [j + i * width for j in range(len(queries))]
        ys = [results[e]["queries"].get(q, {}).get("median") or 0 for q in queries]
        ax1.bar(xs, ys, width, label=e)
    ax1.set_xticks([j + 0.4 - width / 2 for j in range(len(queries))])
    ax1.set_xticklabels(queries)
    ax1.set_ylabel("seconds (median)")
    ax1.set_yscale("log")
    ax1.legend(ncol=4, fontsize=8)
    ax1.set_title("TPC-H per query (log scale)")
    ax2.barh(engines, [totals[e] for e in engines], color=[f"C{i}" for i in range(len(engines))])
    ax2.set_xlabel("total seconds, 22 queries")
    ax2.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--engines", default=",".join(ALL_ENGINES))
    p.add_argument("--queries", default="1-22", help="e.g. 1-22 or 1,3,18")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--runs", type=int, default=3, help="timed runs per query (0: answers only, for checks)")
    p.add_argument("--data", help="Parquet directory (default: benches/data/sf<scale>)")
    p.add_argument("--out", help="results directory (default: benches/runs/<date>-sf<scale>)")
    p.add_argument("--quiver", default=None, help="the quiver binary (default: release build under $CARGO_TARGET_DIR)")
    p.add_argument("--vanilla", default=None, help="the ballista-vanilla binary (default: release build under $CARGO_TARGET_DIR)")
    p.add_argument("--executor-memory", default=None, help="memory limit per Quiver executor, e.g. 4GiB")
    p.add_argument("--spark-memory", default="4g")
    p.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE",
                   help="a session setting for the Quiver engines (repeatable), to try settings without a rebuild")
    p.add_argument("--s3-server", choices=["garage", "s3s-fs"], default="garage",
                   help="the S3 server of the -s3 engines (default: garage, installed into ~/.cache on first use)")
    p.add_argument("--duckdb-python", default=None,
                   help="the Python interpreter of both DuckDB engines (default: this one; with duckdb-s3, a venv "
                        f"with {' '.join(DUCKDB_HTTPFS)} made in ~/.cache on first use)")
    p.add_argument("--duckdb-set", action="append", default=[], metavar="KEY=VALUE",
                   help="a DuckDB setting for both DuckDB engines (repeatable), e.g. enable_external_file_cache=false: "
                        "DuckDB keeps what it read from S3 in memory by default")
    p.add_argument("--check", action="store_true", help="exit 1 when an answer differs from DuckDB's")
    args = p.parse_args()
    scale_name = f"{args.scale:g}"
    args.engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if "spark-s3" in args.engines:
        raise SystemExit("spark-s3: Spark reads S3 through hadoop-aws and the AWS SDK, jars that come only from "
                         "Maven Central, which this machine cannot reach (pyspark's wheel has neither)")
    unknown = set(args.engines) - set(ALL_ENGINES)
    if unknown:
        raise SystemExit(f"unknown engines {unknown}: choose from {ALL_ENGINES}")
    if REFERENCE not in args.engines:
        args.engines.append(REFERENCE)
    args.data = os.path.abspath(args.data or os.path.join(REPO, "benches", "data", f"sf{scale_name}"))
    stamp = datetime.datetime.now().strftime("%Y-%m-%d")
    args.out = os.path.abspath(args.out or os.path.join(REPO, "benches", "runs", f"{stamp}-sf{scale_name}"))
    if args.quiver is None:
        target = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))
        args.quiver = os.path.join(target, "release", "quiver")
    if any(e.startswith("quiver") for e in args.engines) and not os.path.exists(args.quiver):
        raise SystemExit(f"{args.quiver} not found: cargo build --release -p quiver (or pass --quiver)")

    if args.vanilla is None:
        args.vanilla = os.path.join(os.path.dirname(args.quiver), "ballista-vanilla")
    if args.duckdb_python is None:
        args.duckdb_python = duckdb_httpfs_venv() if "duckdb-s3" in args.engines else sys.executable
    if "ballista-vanilla" in args.engines and not os.path.exists(args.vanilla):
        raise SystemExit(f"{args.vanilla} not found: cargo build --release -p ballista-vanilla (or pass --vanilla)")

    ranges = []
    for part in args.queries.split(","):
        a, _, b = part.partition("-")
        ranges += list(range(int(a), int(b or a) + 1))
    queries = {}
    for n in ranges:
        with open(os.path.join(HERE, "queries", f"q{n}.sql")) as f:
            queries[f"q{n}"] = f.read()

    generate(args)
    os.makedirs(args.out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="quiver-bench-")
    args.s3 = SharedS3(args, work)
    results = {"_machine": machine(), "_versions": versions(args)}
    engines = {"quiver-cluster": QuiverCluster, "quiver-cluster-s3": QuiverClusterS3, "ballista-vanilla": BallistaVanilla,
               "quiver-embedded": QuiverEmbedded, "quiver-embedded-s3": QuiverEmbeddedS3}
    order = [REFERENCE] + [e for e in args.engines if e != REFERENCE]
    # Every engine stays up for the whole run and they take turns query by
    # query (the order rotating), so a slow spell of a shared machine hits
    # them all alike instead of whichever engine was running at the time.
    # Engines that use CPU while idle (vanilla Ballista, Spark) are stopped
    # with SIGSTOP between their turns, so they do not tax the others'.
    # Quiver's clusters use none at rest and are left running: their
    # executors count as lost after 30 s without a heartbeat.
    def signal_engine(engine, sig):
        if engine.paused_between_turns:
            for pid in engine.pids():
                try:
                    os.killpg(pid, sig)
                except ProcessLookupError:
                    pass
    started, per_engine, server_peaks, reference = {}, {name: {} for name in order}, {}, {}
    try:
        for name in order:
            log(f"starting {name}")
            engine = PyEngine(name, args, work) if name in PY_ENGINES else engines[name](args, work)
            started[name] = engine
            engine.start()
            signal_engine(engine, signal.SIGSTOP)
        for i, (q, sql) in enumerate(queries.items()):
            turn = order[i % len(order):] + order[:i % len(order)]
            done = []
            for name in turn:
                engine = started[name]
                signal_engine(engine, signal.SIGCONT)
                before = engine.s3_counts()
                answer, times, error = engine.query(q, sql)
                per_engine[name][q] = {"answer": answer, "times": times, "error": error,
                                       "breakdown": engine.breakdown() if times else None}
                if before is not None:
                    # Per run of the query: its answer run, warm-ups and timed runs.
                    runs = 1 + (args.warmup + args.runs if args.runs else 0)
                    after = engine.s3_counts()
                    per_engine[name][q]["s3"] = {k: (after[k] - before.get(k, 0)) / runs for k in after
                                                 if after[k] != before.get(k, 0)}
                signal_engine(engine, signal.SIGSTOP)
                done.append(f"{name} {fmt_s(statistics.median(times)) if times else error or '–'}")
            log(f"{q}: " + ", ".join(done))
        server_peaks = {name: engine.server_peak() for name, engine in started.items()}  # before the servers stop
    finally:
        for engine in started.values():
            signal_engine(engine, signal.SIGCONT)
            engine.stop()
        args.s3.stop()
    for name in order:
        engine, per_query = started[name], per_engine[name]
        out = {"queries": {}, "start_seconds": engine.start_seconds, "server_peak": server_peaks[name],
               "client_peak": engine.client_peak}
        for q, r in per_query.items():
            entry = {"times": r["times"], "median": statistics.median(r["times"]) if r["times"] else None, "error": r["error"]}
            if r.get("breakdown"):
                entry["breakdown"] = r["breakdown"]
            if r.get("s3"):
                entry["s3"] = r["s3"]
            if r["answer"] is not None:
                rows = r["answer"][1]
                entry["checksum"] = checksum(rows)
                if name == REFERENCE:
                    reference[q] = rows
                elif q in reference:
                    ok, why = same_answer(rows, reference[q])
                    entry["match"], entry["why"] = ok, why
            elif r["error"]:
                entry["match"], entry["why"] = False, r["error"]
            out["queries"][q] = entry
        results[name] = out
    text, totals = report(args, results, list(queries))
    with open(os.path.join(args.out, "report.md"), "w") as f:
        f.write(text)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=1, default=str)
    chart(os.path.join(args.out, "chart.png"), results, [e for e in order if e in results], list(queries), totals)
    shutil.rmtree(work, ignore_errors=True)
    print(text)
    bad = [(e, q) for e in args.engines for q in queries if e != REFERENCE and not results[e]["queries"][q].get("match", True)]
    if args.check and bad:
        print(f"answers differ from DuckDB's: {bad}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
