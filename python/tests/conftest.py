"""Real processes for the Python tests: an S3 server and a Quiver cluster.

``QUIVER_BIN`` names the ``quiver`` binary under test (the Rust test suite
sets it; ``scripts/test`` runs everything). The S3 server is ``moto_server``
(its conditional puts are atomic, which Delta commits need); the cluster is a
scheduler with an access token and two executors, on 127.0.0.1.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
TOKEN = "python-tests-token-8d1f"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    # PR_SET_PDEATHSIG = 1: SIGKILL the child when pytest goes away.
    ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)


def wait_for(what: str, ready: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if ready():
                return
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(0.2)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


@dataclass
class Processes:
    logs: Path
    running: list[subprocess.Popen] = field(default_factory=list)

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "wb")
        proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        self.running.append(proc)
        return proc

    def stop(self) -> None:
        for proc in reversed(self.running):
            proc.terminate()
        for proc in self.running:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture(scope="session")
def quiver_bin() -> str:
    path = os.environ.get("QUIVER_BIN")
    if not path or not os.access(path, os.X_OK):
        pytest.fail("QUIVER_BIN must name the quiver binary under test (scripts/test sets it)", pytrace=False)
    return path


@pytest.fixture(scope="session")
def processes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Processes]:
    procs = Processes(tmp_path_factory.mktemp("logs"))
    yield procs
    procs.stop()


@dataclass
class S3:
    endpoint: str

    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": "moto-key",
            "AWS_SECRET_ACCESS_KEY": "moto-secret-value",
            "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": self.endpoint,
        }


@pytest.fixture(scope="session")
def s3(processes: Processes, quiver_bin: str) -> S3:
    moto = shutil.which("moto_server")
    if moto is None:
        pytest.fail("moto_server is not installed: pip install 'moto[server]' (scripts/test does)", pytrace=False)
    port = free_port()
    processes.start("moto", [moto, "-H", "127.0.0.1", "-p", str(port)], dict(os.environ))
    server = S3(f"http://127.0.0.1:{port}")
    wait_for("moto_server", lambda: httpx.get(server.endpoint + "/").status_code < 500)
    env = {**os.environ, **server.env}
    subprocess.run([quiver_bin, "fs", "mb", "s3://lake"], env=env, check=True, capture_output=True)
    subprocess.run(
        [quiver_bin, "fs", "cp", "--recursive", str(REPO / "jobs" / "data"), "s3://lake/sample"],
        env=env,
        check=True,
        capture_output=True,
    )
    return server


@dataclass
class Cluster:
    url: str
    token: str
    env: dict[str, str]
    logs: Path

    def rest(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"authorization": f"Bearer {self.token}"}, timeout=30)

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.logs.glob("*.log")))


@pytest.fixture(scope="session")
def cluster(processes: Processes, s3: S3, quiver_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Cluster:
    work = tmp_path_factory.mktemp("cluster")
    port = free_port()
    env = {**os.environ, **s3.env, "QUIVER_LOG": "info"}
    env.pop("QUIVER_SCHEDULER", None)
    processes.start(
        "scheduler",
        [quiver_bin, "scheduler", "--bind", "127.0.0.1", "--port", str(port), "--external-host", "127.0.0.1",
         "--history", str(work / "history")],
        {**env, "QUIVER_TOKEN": TOKEN},
    )
    url = f"http://127.0.0.1:{port}"
    wait_for("the scheduler", lambda: httpx.get(url + "/healthz").status_code == 200)
    for i in range(2):
        processes.start(
            f"executor-{i}",
            [quiver_bin, "executor", "--scheduler", f"127.0.0.1:{port}", "--bind", "127.0.0.1",
             "--external-host", "127.0.0.1", "--flight-port", str(free_port()), "--grpc-port", str(free_port()),
             "--health-port", str(free_port()), "--slots", "2", "--heartbeat-interval", "1",
             "--work-dir", str(work / f"executor-{i}")],
            env,
        )
    c = Cluster(url, TOKEN, {**s3.env, "QUIVER_SCHEDULER": f"127.0.0.1:{port}", "QUIVER_TOKEN": TOKEN}, processes.logs)

    def two_alive() -> bool:
        with c.rest() as rest:
            return sum(e["state"] == "alive" for e in rest.get("/api/v1/executors").json()) >= 2

    wait_for("two executors", two_alive)
    return c
