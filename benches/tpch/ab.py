#!/usr/bin/env python3
"""Interleaved A/B of two Quiver builds or settings on TPC-H, on two clusters at once.

    benches/tpch/ab.py --a OLD_BINARY --b NEW_BINARY
    benches/tpch/ab.py --a BINARY --b BINARY --b-conf quiver.semi_join_reduction=false --queries 4,21,22
    benches/tpch/ab.py --a BINARY --b BINARY --b-queries DIR --queries 10,13   # hand-rewritten SQL on B
    benches/tpch/ab.py --a BINARY --b BINARY --b-conf quiver.shared_footer_cache=false --s3   # data in S3

Each side is a scheduler and two executors (one slot each), as the
`quiver-cluster` engine of run.py. For every query both sides run in turn (A
then B, then B then A, ...), one warm-up and `--runs` timed runs each, so
the machine's noise hits both alike; the report gives each side's median per
query, the ratio B/A, the servers' peak memory and the CPU time they used (a
steadier measure of overhead than wall time on a shared machine). The
warm-up runs' answers are compared between the sides (row counts, values to
0.01, as run.py does) and a difference is marked in the report. This is how
a change is measured before it goes into a run.py report; `--b-queries`
measures a rewrite by hand before a rule is written for it. With `--s3` both
sides read the data from one Garage server, as run.py's `quiver-cluster-s3`
does.

Writes the report to --out (markdown) when given, and prints it.
"""
import argparse
import datetime
import os
import re
import statistics
import subprocess
import sys

from run import REPO, machine, prelude, read_csv_answer, same_answer, start_cluster, start_s3

QUERIES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "queries")


def query_text(q, dirs):
    """TPC-H query `q`'s text from the first of `dirs` that has `q<q>.sql`."""
    for d in dirs:
        if d and os.path.exists(os.path.join(d, f"q{q}.sql")):
            with open(os.path.join(d, f"q{q}.sql")) as f:
                return f.read()
    raise SystemExit(f"no q{q}.sql in {', '.join(d for d in dirs if d)}")


def query_list(spec):
    out = []
    for part in spec.split(","):
        if "-" in part:
            a, b = part.split("-")
            out += list(range(int(a), int(b) + 1))
        else:
            out.append(int(part))
    return out


class Side:
    def __init__(self, tag, binary, conf, work, s3_env, data):
        self.tag, self.binary, self.conf, self.work, self.s3_env = tag, binary, conf, work, s3_env
        self.servers, self.port = start_cluster(binary, tag, work, s3_env, data=data)

    def time(self, name, sql):
        """Seconds the client reported for one run of `sql` and its answer's rows, or (None, None) when it failed."""
        path = os.path.join(self.work, f"{self.tag}-{name}.sql")
        with open(path, "w") as f:
            f.write(sql)
        cmd = [self.binary, "sql", "--scheduler", f"127.0.0.1:{self.port}", "-f", path, "--format", "csv", "--timing"]
        for kv in self.conf:
            cmd += ["--conf", kv]
        out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, QUIVER_LOG="error", **self.s3_env))
        times = re.findall(r"^Time: ([0-9.]+)s$", out.stderr, re.M)
        if out.returncode != 0 or not times:
            print(f"side {self.tag}, {name} failed: {out.stderr.strip()[-300:]}", file=sys.stderr)
            return None, None
        return float(times[-1]), read_csv_answer(out.stdout)[1]

    def peak_mib(self):
        return sum(s.peak() for s in self.servers) / 2**20

    def cpu_seconds(self):
        """CPU time the scheduler and executors have used since they started."""
        return sum(s.cpu() for s in self.servers)

    def stop(self):
        for s in self.servers:
            s.stop()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--a", required=True, help="side A's quiver binary")
    p.add_argument("--b", required=True, help="side B's quiver binary (may be A's, with other --b-conf)")
    p.add_argument("--a-conf", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--b-conf", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--b-queries", metavar="DIR",
                   help="side B runs DIR/qN.sql instead of the standard query where DIR has one")
    p.add_argument("--queries", default="1-22")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--data", default=os.path.join(REPO, "benches", "data", "sf1"),
                   help="TPC-H Parquet (run.py generates it)")
    p.add_argument("--s3", action="store_true",
                   help="read the data through an S3 server (Garage, shared by both sides), as quiver-cluster-s3 does")
    p.add_argument("--out", help="write the report here (markdown)")
    args = p.parse_args()
    if not os.path.isdir(os.path.join(args.data, "lineitem")):
        raise SystemExit(f"no TPC-H data in {args.data}: generate it with `benches/tpch/run.py --runs 0 "
                         "--engines duckdb` (SF1) or pass --data")

    work = os.path.join(REPO, "benches", "work", "ab")
    os.makedirs(work, exist_ok=True)
    sides, servers = [], []
    try:
        s3_env, location = {}, args.data
        if args.s3:
            server, s3_env, _ = start_s3(args.data, work)
            servers.append(server)
            location = "s3://tpch"
        # Local data must be allowed explicitly: a cluster refuses local paths otherwise.
        local = None if args.s3 else os.path.abspath(args.data)
        sides = [Side("A", args.a, args.a_conf, work, s3_env, local), Side("B", args.b, args.b_conf, work, s3_env, local)]
        pre = prelude(location)
        rows, totals, differ, unchecked, failed = [], {"A": 0.0, "B": 0.0}, [], [], []
        for q in query_list(args.queries):
            sql = {tag: pre + query_text(q, dirs).strip().rstrip(";") + ";\n"
                   for tag, dirs in (("A", [QUERIES]), ("B", [args.b_queries, QUERIES]))}
            times, answers = {"A": [], "B": []}, {}
            for r in range(args.runs + 1):
                for side in (sides if r % 2 == 0 else sides[::-1]):
                    t, answer = side.time(f"q{q}", sql[side.tag])
                    if r == 0:
                        answers[side.tag] = answer
                    elif t is not None:
                        times[side.tag].append(t)
            if not times["A"] or not times["B"]:
                rows.append(f"| q{q} | failed | failed | – |")
                failed.append(f"q{q}")
                continue
            mark = ""
            if answers.get("A") is not None and answers.get("B") is not None:
                same, why = same_answer(answers["A"], answers["B"])
                if not same:
                    mark = " ✗"
                    differ.append(f"q{q}: {why}")
            else:
                unchecked.append(f"q{q}")
            a, b = statistics.median(times["A"]), statistics.median(times["B"])
            totals["A"] += a
            totals["B"] += b
            rows.append(f"| q{q}{mark} | {a:.3f} | {b:.3f} | {b / a:.2f} |")
            print(rows[-1], file=sys.stderr, flush=True)
        cpu = {side.tag: side.cpu_seconds() for side in sides}
        m = machine()
        lines = [
            f"# A/B: {' '.join(['benches/tpch/ab.py'] + sys.argv[1:])}",
            "",
            f"Date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}; "
            f"{m['cpus']} CPUs ({m['cpu']}), {m['memory_gib']} GiB; median of {args.runs} interleaved runs after "
            "1 warm-up; seconds" + ("; data in a Garage S3 server" if args.s3 else "") + ".",
            "",
            " ".join([f"A: `{args.a}`", *args.a_conf]) + "  ",
            " ".join([f"B: `{args.b}`", *args.b_conf] + ([f"queries from `{args.b_queries}`"] if args.b_queries else [])),
            "",
            "| query | A | B | B/A |",
            "|---|---|---|---|",
            *rows,
            f"| **total** | **{totals['A']:.3f}** | **{totals['B']:.3f}** | **{totals['B'] / max(totals['A'], 1e-9):.3f}** |",
            "",
            f"Peak memory of the servers (scheduler + 2 executors): A {sides[0].peak_mib():.0f} MiB, "
            f"B {sides[1].peak_mib():.0f} MiB.",
            "",
            f"CPU time of the servers over all runs, warm-ups included (the same runs on both sides; "
            f"less sensitive than wall time to what else the machine runs): A {cpu['A']:.2f} s, "
            f"B {cpu['B']:.2f} s, B/A {cpu['B'] / max(cpu['A'], 1e-9):.3f}.",
            "",
            ("✗: the sides' answers differ: " + "; ".join(differ) + "." if differ
             else "Both sides gave the same answers (row counts, values to 0.01)."),
            *([f"Not compared (a warm-up run failed): {', '.join(unchecked)}."] if unchecked else []),
            *([f"✗ Failed on a side (not in the totals): {', '.join(failed)}."] if failed else []),
        ]
        report = "\n".join(lines) + "\n"
        print(report)
        if args.out:
            os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
            with open(args.out, "w") as f:
                f.write(report)
        if failed or differ:
            raise SystemExit("the A/B is not valid: " + "; ".join(differ + [f"{q} failed" for q in failed]))
    finally:
        for s in sides:
            s.stop()
        for s in servers:
            s.stop()


if __name__ == "__main__":
    main()
