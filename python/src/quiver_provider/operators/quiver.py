"""Running SQL on a Quiver cluster from a task."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, BaseOperatorLink
from airflow.sdk.exceptions import AirflowException

from quiver_client import Job, JobState
from quiver_provider.hooks.quiver import QuiverHook
from quiver_provider.triggers.quiver import QuiverJobTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context
    from airflow.sdk.types import TaskInstanceKey

JOB_ID_KEY = "quiver_job_id"
JOB_URL_KEY = "quiver_job_url"


class QuiverJobLink(BaseOperatorLink):
    """The task's Quiver job, in the scheduler's web UI."""

    name = "Quiver job"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        return XCom.get_value(ti_key=ti_key, key=JOB_URL_KEY) or ""


class QuiverSQLOperator(BaseOperator):
    """Runs a SQL script as one job on a Quiver cluster.

    :param sql: the script (statements separated by ``;``), or the path of a
        ``.sql`` file relative to the DAG's template search path. Templated:
        ``{{ ds }}`` and friends work.
    :param sql_params: values for the script's ``${name}`` placeholders;
        templated, so ``{"day": "{{ ds }}"}`` works.
    :param conf: session settings for the job (``s3.*``, ``datafusion.*``).
    :param job_name: the job's name in the UI (default ``<dag_id>.<task_id>``).
    :param quiver_conn_id: the ``quiver`` connection.
    :param deferrable: wait in the triggerer instead of a worker slot.
    :param poll_interval: seconds between looks at the job.

    The job id goes to XCom at once (key ``quiver_job_id``) and is the task's
    return value; the job's progress goes to the task log; a failed job fails
    the task with the job's error; killing the task cancels the job.
    """

    template_fields: Sequence[str] = ("sql", "sql_params", "conf", "job_name")
    template_ext: Sequence[str] = (".sql",)
    template_fields_renderers = {"sql": "sql", "sql_params": "json", "conf": "json"}
    ui_color = "#d7e9f7"
    operator_extra_links = (QuiverJobLink(),)

    def __init__(
        self,
        *,
        sql: str,
        sql_params: Mapping[str, Any] | None = None,
        conf: Mapping[str, Any] | None = None,
        job_name: str | None = None,
        quiver_conn_id: str = QuiverHook.default_conn_name,
        deferrable: bool = False,
        poll_interval: float = 2.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.sql = sql
        self.sql_params = dict(sql_params or {})
        self.conf = dict(conf or {})
        self.job_name = job_name
        self.quiver_conn_id = quiver_conn_id
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.job_id: str | None = None
        self._last_progress = ""

    def execute(self, context: Context) -> str:
        hook = QuiverHook(self.quiver_conn_id)
        name = self.job_name or f"{self.dag_id}.{self.task_id}"
        with hook.get_conn() as client:
            # The job never outlives its task: Airflow's execution_timeout
            # becomes the job's own timeout on the cluster.
            timeout = self.execution_timeout.total_seconds() if self.execution_timeout else None
            job = client.submit(self.sql, name=name, params=self.sql_params, conf=self.conf, job_timeout=timeout)
            self.job_id = job.id
            url = hook.job_url(job.id)
            context["ti"].xcom_push(key=JOB_ID_KEY, value=job.id)
            context["ti"].xcom_push(key=JOB_URL_KEY, value=url)
            self.log.info("Quiver job %s submitted: %s", job.id, url)
            if self.deferrable:
                self.defer(
                    trigger=QuiverJobTrigger(job.id, self.quiver_conn_id, self.poll_interval),
                    method_name="execute_complete",
                )
            job = client.wait(job.id, poll_interval=self.poll_interval, on_progress=self._log_progress)
        return self._result(job)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> str:
        """Where a deferred task resumes: the trigger's event says how the job ended."""
        self.job_id = event["job_id"]
        if event["state"] == "error":
            raise AirflowException(f"cannot follow Quiver job {self.job_id}: {event.get('error')}")
        with QuiverHook(self.quiver_conn_id).get_conn() as client:
            job = client.job(self.job_id)
        self._log_statements(job)
        return self._result(job)

    def on_kill(self) -> None:
        if self.job_id is None:
            return
        with QuiverHook(self.quiver_conn_id).get_conn() as client:
            job = client.cancel(self.job_id)
        self.log.info("cancelled Quiver job %s: now %s", job.id, job.state.value)

    def _log_progress(self, job: Job) -> None:
        line = f"{job.state.value}: {job.progress.describe()}"
        if line != self._last_progress:
            self._last_progress = line
            self.log.info("Quiver job %s %s", job.id, line)
        if job.is_terminal:
            self._log_statements(job)

    def _log_statements(self, job: Job) -> None:
        for s in job.statements:
            outcome = s.summary or s.error or s.state.value
            self.log.info("  statement %d %s: %s", s.index, s.state.value, outcome)

    def _result(self, job: Job) -> str:
        if job.state is not JobState.SUCCEEDED:
            raise AirflowException(f"Quiver job {job.id} {job.state.value}: {job.error or 'no reason given'}")
        self.log.info("Quiver job %s succeeded in %.1fs", job.id, (job.duration_ms or 0) / 1000)
        return job.id
