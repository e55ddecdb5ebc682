"""Clients of a Quiver scheduler's REST API, blocking and async.

>>> from quiver_client import QuiverClient
>>> q = QuiverClient("localhost:50050")               # or QUIVER_SCHEDULER / QUIVER_TOKEN
>>> job = q.run("SELECT 40 + ${n} AS answer", params={"n": "2"})
>>> q.result(job.id).to_pydict()                      # doctest: +SKIP
{'answer': [42]}
"""

from __future__ import annotations

import math

import os
import ssl
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pyarrow as pa

from .errors import (
    ApiError,
    JobFailed,
    JobNotFound,
    JobTimeout,
    SchedulerUnreachable,
    Unauthorized,
)
from .models import Job, JobState

DEFAULT_PORT = 50050
SCHEDULER_ENV = "QUIVER_SCHEDULER"
TOKEN_ENV = "QUIVER_TOKEN"
CA_FILE_ENV = "QUIVER_CA_FILE"

ProgressCallback = Callable[[Job], None]


def scheduler_url(address: str) -> str:
    """``host``, ``host:port``, ``http(s)://host:port`` or ``quiver://host:port``
    as the scheduler's base URL (port 50050 when none is given).

    >>> scheduler_url("scheduler")
    'http://scheduler:50050'
    >>> scheduler_url("quiver://10.0.0.5:7077/")
    'http://10.0.0.5:7077'
    """
    text = address.strip().rstrip("/")
    if not text:
        raise ValueError("empty scheduler address: write HOST:PORT or http://HOST:PORT")
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    scheme = {"http": "http", "https": "https", "quiver": "http", "grpc": "http", "df": "http"}.get(parts.scheme)
    if scheme is None or not parts.hostname or parts.path not in ("", "/"):
        raise ValueError(f"'{address}' is not a scheduler address: write HOST:PORT or http://HOST:PORT")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{scheme}://{host}:{parts.port or DEFAULT_PORT}"


def tls_verify() -> ssl.SSLContext | bool:
    """What an ``https://`` scheduler's certificate is checked against: only
    the CA in the PEM file ``QUIVER_CA_FILE`` names when it is set, else the
    system's roots."""
    ca_file = os.environ.get(CA_FILE_ENV)
    if not ca_file:
        return True
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as e:
        raise ValueError(f"cannot use {ca_file} ({CA_FILE_ENV}) as the CA to trust: {e}") from e


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
        if isinstance(body, dict) and "error" in body:
            return str(body["error"])
    except ValueError:
        pass
    return response.text or response.reason_phrase


def _check(response: httpx.Response, base: str) -> httpx.Response:
    if response.is_success:
        return response
    message = _message(response)
    if response.status_code == 401:
        raise Unauthorized(f"the scheduler at {base} refused the request: {message} (set QUIVER_TOKEN)")
    if response.status_code == 404:
        raise JobNotFound(404, message)
    raise ApiError(response.status_code, message)


def _arrow(response: httpx.Response) -> pa.Table:
    return pa.ipc.open_stream(response.content).read_all()


def _submit_body(
    sql: str,
    name: str | None,
    params: Mapping[str, Any] | None,
    conf: Mapping[str, Any] | None,
    job_timeout: float | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"sql": sql, "source": "rest"}
    if job_timeout is not None:
        if job_timeout <= 0:
            raise ValueError(f"job_timeout must be positive seconds, not {job_timeout}")
        body["timeout_secs"] = max(1, math.ceil(job_timeout))
    if name:
        body["name"] = name
    if params:
        body["params"] = {str(k): str(v) for k, v in params.items()}
    if conf:
        body["conf"] = {str(k): str(v) for k, v in conf.items()}
    return body


def _list_query(
    state: JobState | str | None, source: str | None, search: str | None, limit: int, offset: int
) -> dict[str, str]:
    query = {"limit": str(limit), "offset": str(offset)}
    if state:
        query["state"] = JobState(state).value
    if source:
        query["source"] = source
    if search:
        query["q"] = search
    return query


def _result_query(statement: int | None) -> dict[str, str]:
    query = {"format": "arrow"}
    if statement is not None:
        query["statement"] = str(statement)
    return query


def _failure(job: Job) -> JobFailed:
    return JobFailed(job, f"job {job.id} ({job.name}) {job.state.value}: {job.error or 'no reason given'}")


class _Base:
    def __init__(self, scheduler: str | None, token: str | None) -> None:
        address = scheduler or os.environ.get(SCHEDULER_ENV) or f"localhost:{DEFAULT_PORT}"
        self.base_url = scheduler_url(address)
        token = token if token is not None else os.environ.get(TOKEN_ENV)
        self._token = token or None

    def _headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self._token}"} if self._token else {}

    # What each call sends: (method, path, request keyword arguments), shared
    # by the blocking and the async client.
    @staticmethod
    def _submit_spec(
        sql: str,
        name: str | None,
        params: Mapping[str, Any] | None,
        conf: Mapping[str, Any] | None,
        job_timeout: float | None = None,
    ) -> tuple[str, str, dict[str, Any]]:
        return "POST", "/api/v1/jobs", {"json": _submit_body(sql, name, params, conf, job_timeout)}

    @staticmethod
    def _job_spec(job_id: str) -> tuple[str, str, dict[str, Any]]:
        return "GET", f"/api/v1/jobs/{quote(job_id, safe='')}", {}

    @staticmethod
    def _cancel_spec(job_id: str) -> tuple[str, str, dict[str, Any]]:
        return "POST", f"/api/v1/jobs/{quote(job_id, safe='')}/cancel", {}

    @staticmethod
    def _result_spec(job_id: str, statement: int | None) -> tuple[str, str, dict[str, Any]]:
        return "GET", f"/api/v1/jobs/{quote(job_id, safe='')}/result", {"params": _result_query(statement)}

    def job_url(self, job_id: str) -> str:
        """The job's page in the scheduler's web UI."""
        return f"{self.base_url}/ui/jobs/{quote(job_id, safe='')}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r}, token={'set' if self._token else 'none'})"


class QuiverClient(_Base):
    """A blocking client of one scheduler.

    ``scheduler`` is ``host:port`` (default ``QUIVER_SCHEDULER``, then
    ``localhost:50050``); ``token`` the access token (default ``QUIVER_TOKEN``).
    """

    def __init__(self, scheduler: str | None = None, token: str | None = None, *, timeout: float = 60.0) -> None:
        super().__init__(scheduler, token)
        self._http = httpx.Client(
            base_url=self.base_url, headers=self._headers(), timeout=timeout, verify=tls_verify()
        )

    def close(self) -> None:
        """Closes the connection pool."""
        self._http.close()

    def __enter__(self) -> QuiverClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as e:
            raise SchedulerUnreachable(
                f"cannot reach the scheduler at {self.base_url}: {e} (is it running? check QUIVER_SCHEDULER)"
            ) from e
        return _check(response, self.base_url)

    def submit(
        self,
        sql: str,
        *,
        name: str | None = None,
        params: Mapping[str, Any] | None = None,
        conf: Mapping[str, Any] | None = None,
        job_timeout: float | None = None,
    ) -> Job:
        """Submits a script (statements separated by ``;``) as one job and
        returns at once. ``params`` fill its ``${name}`` placeholders; ``conf``
        holds session settings (``s3.*``, ``datafusion.*``, ...);
        ``job_timeout`` is how many seconds the job may run on the cluster
        once started, after which the scheduler stops it and it fails."""
        method, path, kwargs = self._submit_spec(sql, name, params, conf, job_timeout)
        return Job.from_json(self._request(method, path, **kwargs).json())

    def job(self, job_id: str) -> Job:
        """A job's record, with its statements."""
        method, path, kwargs = self._job_spec(job_id)
        return Job.from_json(self._request(method, path, **kwargs).json())

    def wait(
        self,
        job_id: str,
        *,
        timeout: float | None = None,
        poll_interval: float = 1.0,
        on_progress: ProgressCallback | None = None,
    ) -> Job:
        """Waits until a job ends and returns its final record; ``on_progress``
        sees the record at every poll. Raises :class:`JobTimeout` after
        ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if on_progress is not None:
                on_progress(job)
            if job.is_terminal:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise JobTimeout(f"job {job_id} still {job.state.value} after {timeout}s")
            time.sleep(poll_interval)

    def run(
        self,
        sql: str,
        *,
        name: str | None = None,
        params: Mapping[str, Any] | None = None,
        conf: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        on_progress: ProgressCallback | None = None,
        job_timeout: float | None = None,
    ) -> Job:
        """Submits a script and waits for it; raises :class:`JobFailed` (with
        the job's error) unless it succeeded. ``timeout`` bounds the wait here,
        ``job_timeout`` the job's run on the cluster (see :meth:`submit`)."""
        job = self.submit(sql, name=name, params=params, conf=conf, job_timeout=job_timeout)
        job = self.wait(job.id, timeout=timeout, on_progress=on_progress)
        if job.state is not JobState.SUCCEEDED:
            raise _failure(job)
        return job

    def sql(
        self,
        sql: str,
        *,
        params: Mapping[str, Any] | None = None,
        conf: Mapping[str, Any] | None = None,
        name: str = "python",
        timeout: float | None = None,
    ) -> pa.Table:
        """Runs a script as a job and returns its last query's rows."""
        job = self.run(sql, name=name, params=params, conf=conf, timeout=timeout)
        return self.result(job.id)

    def cancel(self, job_id: str) -> Job:
        """Cancels a job; its running tasks stop."""
        method, path, kwargs = self._cancel_spec(job_id)
        return Job.from_json(self._request(method, path, **kwargs).json())

    def jobs(
        self,
        *,
        state: JobState | str | None = None,
        source: str | None = None,
        search: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[Job]:
        """Jobs, newest first."""
        body = self._request("GET", "/api/v1/jobs", params=_list_query(state, source, search, limit, offset)).json()
        return [Job.from_json(j) for j in body["jobs"]]

    def result(self, job_id: str, statement: int | None = None) -> pa.Table:
        """The stored rows of a statement (the job's last query by default)."""
        method, path, kwargs = self._result_spec(job_id, statement)
        return _arrow(self._request(method, path, **kwargs))

    def result_pandas(self, job_id: str, statement: int | None = None) -> Any:
        """:meth:`result` as a pandas DataFrame (needs pandas)."""
        return self.result(job_id, statement).to_pandas()

    def query(self, sql: str) -> pa.Table:
        """Runs one query over Arrow Flight SQL and returns its rows (the
        scheduler's port, the same token); it shows in the UI as a job."""
        from .flightsql import connect

        with connect(self.base_url, self._token) as conn, conn.cursor() as cursor:
            cursor.execute(sql)
            return cursor.fetch_arrow_table()

    def cluster(self) -> dict[str, Any]:
        """The cluster at a glance: executors, slots, jobs."""
        return self._request("GET", "/api/v1/cluster").json()

    def executors(self) -> list[dict[str, Any]]:
        """Executors, alive and lost."""
        return self._request("GET", "/api/v1/executors").json()


class AsyncQuiverClient(_Base):
    """The async twin of :class:`QuiverClient` (for Airflow triggers and asyncio programs)."""

    def __init__(self, scheduler: str | None = None, token: str | None = None, *, timeout: float = 60.0) -> None:
        super().__init__(scheduler, token)
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=self._headers(), timeout=timeout, verify=tls_verify()
        )

    async def aclose(self) -> None:
        """Closes the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncQuiverClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as e:
            raise SchedulerUnreachable(f"cannot reach the scheduler at {self.base_url}: {e}") from e
        return _check(response, self.base_url)

    async def submit(
        self,
        sql: str,
        *,
        name: str | None = None,
        params: Mapping[str, Any] | None = None,
        conf: Mapping[str, Any] | None = None,
        job_timeout: float | None = None,
    ) -> Job:
        """See :meth:`QuiverClient.submit`."""
        method, path, kwargs = self._submit_spec(sql, name, params, conf, job_timeout)
        return Job.from_json((await self._request(method, path, **kwargs)).json())

    async def job(self, job_id: str) -> Job:
        """See :meth:`QuiverClient.job`."""
        method, path, kwargs = self._job_spec(job_id)
        return Job.from_json((await self._request(method, path, **kwargs)).json())

    async def cancel(self, job_id: str) -> Job:
        """See :meth:`QuiverClient.cancel`."""
        method, path, kwargs = self._cancel_spec(job_id)
        return Job.from_json((await self._request(method, path, **kwargs)).json())

    async def result(self, job_id: str, statement: int | None = None) -> pa.Table:
        """See :meth:`QuiverClient.result`."""
        method, path, kwargs = self._result_spec(job_id, statement)
        return _arrow(await self._request(method, path, **kwargs))
