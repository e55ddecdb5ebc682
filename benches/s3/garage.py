#!/usr/bin/env python3
"""Garage, a real S3 object store, as the stand-in for MinIO in the S3 benchmarks.

MinIO cannot be installed here (no container registry, no binary); Garage
2.5.0 comes from the Rust crate registry. One node, one replica, no
compression (MinIO compresses nothing by default), on loopback ports:

    benches/s3/garage.py serve --data benches/data/sf1.0      # uploads, then serves until Ctrl-C
    benches/s3/garage.py serve --data ... --ceiling ceiling.json  # and measures the server first

`start()` is what `benches/tpch/run.py --s3-server garage` uses. The binary
is installed once with `cargo install garage@2.5.0 --locked` (about 14
minutes on 2 cores) into `~/.cache/garage-2.5.0`, outside the checkout.
"""
import argparse
import os
import secrets
import shutil
import subprocess
import sys
import time

VERSION = "2.5.0"
ROOT = os.path.expanduser(os.environ.get("QUIVER_GARAGE_ROOT", f"~/.cache/garage-{VERSION}"))
BUCKET = "tpch"
# Garage's key ids are "GK" and 24 hex digits; its secrets 64 hex digits.
KEY_ID = "GK" + "5155495645522d62656e6368"  # "QUIVER-bench" in hex
KEY_SECRET = "0b5e7a1c" * 8

# The benchmark harness's process helpers (ab.py imports them the same way).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tpch"))
from run import Server, free_port, log, port_open  # noqa: E402


def binary():
    """The garage binary, installed into ~/.cache on first use."""
    path = os.path.join(ROOT, "bin", "garage")
    if not os.path.exists(path):
        log(f"installing garage {VERSION} into {ROOT} (cargo install, about 14 minutes)")
        env = {k: v for k, v in os.environ.items() if k != "CARGO_TARGET_DIR"}
        subprocess.run(["cargo", "install", f"garage@{VERSION}", "--locked", "--root", ROOT], check=True, env=env)
    return path


class Garage:
    """A single-node Garage on free loopback ports, its data under `work`.

    `command` starts it; `configure(proc)`, once it runs, gives it its
    layout, the benchmark's key and the bucket.
    """

    def __init__(self, work):
        self.dir = os.path.join(work, "garage")
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        self.port = free_port()
        self.config = os.path.join(self.dir, "garage.toml")
        self.rpc, self.admin = free_port(), free_port()
        rpc = self.rpc
        with open(self.config, "w") as f:
            f.write(f"""metadata_dir = "{self.dir}/meta"
data_dir = "{self.dir}/data"
db_engine = "lmdb"
replication_factor = 1
compression_level = "none"
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{secrets.token_hex(32)}"

[s3_api]
s3_region = "us-east-1"
api_bind_addr = "127.0.0.1:{self.port}"

[admin]
api_bind_addr = "127.0.0.1:{self.admin}"
""")
        os.chmod(self.config, 0o600)
        self.garage = binary()
        self.log = os.path.join(work, "garage.log")
        self.command = [self.garage, "-c", self.config, "server"]
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def configure(self, proc):
        """Layout, key and bucket, once `proc` (started from `command`) answers."""
        node = self._wait_for_node(proc)
        self.cli("layout", "assign", "-z", "local", "-c", "100G", node)
        self.cli("layout", "apply", "--version", "1")
        self.cli("key", "import", "--yes", "-n", "bench", KEY_ID, KEY_SECRET)
        self.cli("bucket", "create", BUCKET)
        self.cli("bucket", "allow", "--read", "--write", "--owner", BUCKET, "--key", "bench")

    def cli(self, *args):
        out = subprocess.run([self.garage, "-c", self.config, *args], capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"garage {' '.join(args[:2])} failed: {out.stderr.strip()[-500:]} (log: {self.log})")
        return out.stdout

    def _wait_for_node(self, proc):
        deadline = time.time() + 60
        while time.time() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"garage exited at start-up; see {self.log}")
            # `node id` reads the node's key from disk, so it can answer
            # before the server listens: wait for its RPC port too.
            out = subprocess.run([self.garage, "-c", self.config, "node", "id", "-q"], capture_output=True, text=True)
            if out.returncode == 0 and "@" in out.stdout and port_open(self.rpc):
                return out.stdout.split("@")[0].strip()
            time.sleep(0.2)
        raise SystemExit(f"garage did not come up in 60 s; see {self.log}")

    def env(self):
        """What an S3 client needs to reach the bucket."""
        return {"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": KEY_SECRET, "AWS_REGION": "us-east-1",
                "AWS_ENDPOINT_URL": self.endpoint}

    def client(self):
        """A boto3 S3 client of the bucket's key."""
        import boto3  # installed with moto[server]
        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=KEY_ID, aws_secret_access_key=KEY_SECRET)

    def upload(self, data):
        """Puts every file under `data` into the bucket through the S3 API, as a user would."""
        from boto3.s3.transfer import TransferConfig
        s3 = self.client()
        t0, total = time.time(), 0
        for dirpath, _, files in os.walk(data):
            for f in sorted(files):
                path = os.path.join(dirpath, f)
                s3.upload_file(path, BUCKET, os.path.relpath(path, data),
                               Config=TransferConfig(multipart_chunksize=16 << 20, max_concurrency=4))
                total += os.path.getsize(path)
        log(f"uploaded {data} ({total / 1e6:.0f} MB) to s3://{BUCKET} in {time.time() - t0:.1f} s")

    def metrics(self):
        """The server's own counts so far: S3 requests by API call, and bytes read from its blocks."""
        import re
        import urllib.request
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/metrics", timeout=5) as r:
            text = r.read().decode()
        counts = {}
        for line in text.splitlines():
            m = re.match(r'api_s3_request_counter\{.*api_endpoint="([A-Za-z0-9]+)".*\} ([0-9.e+]+)$', line)
            if m:
                counts[m.group(1)] = counts.get(m.group(1), 0) + float(m.group(2))
            elif line.startswith("block_bytes_read "):
                counts["block_bytes_read"] = float(line.split()[1])
        return counts


def start(work, data):
    """A Garage with `data` uploaded to s3://tpch: its `Server` (log in `work`), the `Garage` and
    the clients' environment."""
    garage = Garage(work)
    process = Server("garage", garage.command, work)
    garage.configure(process.proc)
    garage.upload(data)
    return process, garage, garage.env()


def ceiling(garage, out, prefix="lineitem/"):
    """Runs the s3-ceiling tool against `garage` (built with cargo when missing)."""
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "target"))
    built = [os.path.join(target, profile, "s3-ceiling") for profile in ("release", "release-nonlto")]
    tool = next((t for t in built if os.path.exists(t)), built[0])
    if not os.path.exists(tool):
        subprocess.run(["cargo", "build", "--release", "-p", "s3-ceiling"], check=True)
    cmd = [tool, "--endpoint", garage.endpoint, "--bucket", BUCKET, "--prefix", prefix, "--out", out]
    subprocess.run(cmd, check=True, env=dict(os.environ, **garage.env()))



def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="start Garage, upload --data, serve until interrupted")
    serve.add_argument("--data", required=True, help="directory whose files go into s3://tpch")
    serve.add_argument("--work", default=None, help="where Garage keeps its data (default: a directory under /tmp)")
    serve.add_argument("--ceiling", metavar="JSON", help="measure the server with s3-ceiling and write the results here")
    serve.add_argument("--exit", action="store_true", help="stop after the upload (and --ceiling) instead of serving")
    args = p.parse_args()
    work = args.work or os.path.join("/tmp", f"quiver-garage-{os.getpid()}")
    os.makedirs(work, exist_ok=True)
    process, garage, env = start(work, os.path.abspath(args.data))
    try:
        if args.ceiling:
            ceiling(garage, os.path.abspath(args.ceiling))
        if not args.exit:
            for k, v in env.items():
                print(f"export {k}={v}")
            sys.stdout.flush()
            log("serving; Ctrl-C stops it")
            process.proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        process.stop()


if __name__ == "__main__":
    main()
