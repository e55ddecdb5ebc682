"""Waiting for a Quiver job, or for data to arrive in the lake."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow.sdk import BaseSensorOperator
from airflow.sdk.exceptions import AirflowException

from quiver_client import JobState
from quiver_provider.hooks.quiver import QuiverHook

if TYPE_CHECKING:
    from airflow.sdk import Context


class QuiverJobSensor(BaseSensorOperator):
    """Waits until the Quiver job ``job_id`` ends; fails if it did not succeed.

    ``job_id`` is templated, so ``"{{ ti.xcom_pull('submit', key='quiver_job_id') }}"`` works.
    """

    template_fields: Sequence[str] = ("job_id",)

    def __init__(self, *, job_id: str, quiver_conn_id: str = QuiverHook.default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.job_id = job_id
        self.quiver_conn_id = quiver_conn_id

    def poke(self, context: Context) -> bool:
        with QuiverHook(self.quiver_conn_id).get_conn() as client:
            job = client.job(self.job_id)
        self.log.info("Quiver job %s is %s: %s", job.id, job.state.value, job.progress.describe())
        if not job.is_terminal:
            return False
        if job.state is not JobState.SUCCEEDED:
            raise AirflowException(f"Quiver job {job.id} {job.state.value}: {job.error or 'no reason given'}")
        return True


class QuiverPrefixSensor(BaseSensorOperator):
    """Waits until objects arrive under an S3 prefix: at least ``min_objects``
    whose names match ``pattern`` (a glob on the part after the prefix).

    ``prefix`` is ``s3://bucket/path/`` and templated
    (``s3://lake/raw/orders/day={{ ds }}/``). Storage comes from the usual
    AWS variables (``AWS_ENDPOINT_URL`` for MinIO, ``AWS_ACCESS_KEY_ID``,
    ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``), as for every Quiver process.
    """

    template_fields: Sequence[str] = ("prefix", "pattern")

    def __init__(self, *, prefix: str, pattern: str = "*", min_objects: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.prefix = prefix
        self.pattern = pattern
        self.min_objects = min_objects

    def _filesystem(self) -> Any:
        from pyarrow import fs

        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        options: dict[str, Any] = {"region": os.environ.get("AWS_REGION", "us-east-1")}
        if endpoint:
            parts = urlsplit(endpoint)
            options["endpoint_override"] = parts.netloc
            options["scheme"] = parts.scheme or "http"
        key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
        if key and secret:
            options.update(access_key=key, secret_key=secret, session_token=os.environ.get("AWS_SESSION_TOKEN"))
        else:
            options["anonymous"] = True
        return fs.S3FileSystem(**options)

    def poke(self, context: Context) -> bool:
        from pyarrow import fs

        if not self.prefix.startswith(("s3://", "s3a://")):
            raise AirflowException(f"'{self.prefix}' is not an S3 prefix: write s3://bucket/path/")
        path = self.prefix.split("://", 1)[1].rstrip("/")
        try:
            infos = self._filesystem().get_file_info(fs.FileSelector(path, recursive=True, allow_not_found=True))
        except OSError as e:
            raise AirflowException(f"cannot list {self.prefix}: {e}") from e
        names = [i.path[len(path) :].lstrip("/") for i in infos if i.type == fs.FileType.File]
        matching = [n for n in names if fnmatch.fnmatch(n, self.pattern)]
        self.log.info("%d object(s) under %s match %r (waiting for %d)", len(matching), self.prefix, self.pattern, self.min_objects)
        return len(matching) >= self.min_objects
