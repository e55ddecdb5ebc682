"""The ``quiver`` connection and a hook over the scheduler's REST API."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseHook

from quiver_client import AsyncQuiverClient, QuiverClient
from quiver_client.client import DEFAULT_PORT


class QuiverHook(BaseHook):
    """Talks to a Quiver scheduler named by an Airflow connection.

    The connection (type ``quiver``): host and port of the scheduler, the
    access token as the password, and in extras ``"tls": true`` for https
    and ``"ui_url"`` for the address browsers reach the web UI at (links
    from the task to its job), when it differs from the one Airflow uses.
    As an environment variable::

        AIRFLOW_CONN_QUIVER_DEFAULT='quiver://:TOKEN@scheduler:50050?ui_url=http%3A%2F%2Flocalhost%3A50050'
    """

    conn_name_attr = "quiver_conn_id"
    default_conn_name = "quiver_default"
    conn_type = "quiver"
    hook_name = "Quiver"

    def __init__(self, quiver_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.quiver_conn_id = quiver_conn_id

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """How the connection form shows the fields."""
        return {
            "hidden_fields": ["schema", "login"],
            "relabeling": {"host": "Scheduler host", "password": "Access token"},
            "placeholders": {
                "host": "scheduler",
                "port": str(DEFAULT_PORT),
                "extra": '{"tls": false, "ui_url": "http://localhost:50050"}',
            },
        }

    @staticmethod
    def _settings(conn: Any) -> tuple[str, str | None, str | None]:
        extra = conn.extra_dejson or {}
        scheme = "https" if str(extra.get("tls", "false")).lower() in ("1", "true", "yes", "on") else "http"
        address = f"{scheme}://{conn.host or 'localhost'}:{conn.port or DEFAULT_PORT}"
        return address, conn.password or None, extra.get("ui_url")

    def get_conn(self) -> QuiverClient:
        """A blocking client of the connection's scheduler."""
        address, token, _ = self._settings(self.get_connection(self.quiver_conn_id))
        return QuiverClient(address, token)

    async def aget_conn(self) -> AsyncQuiverClient:
        """An async client (for triggers: no blocking calls on the event loop)."""
        address, token, _ = self._settings(await self.aget_connection(self.quiver_conn_id))
        return AsyncQuiverClient(address, token)

    def job_url(self, job_id: str) -> str:
        """The job's page in the web UI, at the address browsers use."""
        address, token, ui_url = self._settings(self.get_connection(self.quiver_conn_id))
        client = QuiverClient(ui_url or address, token)
        try:
            return client.job_url(job_id)
        finally:
            client.close()

    def test_connection(self) -> tuple[bool, str]:
        """Reaches the scheduler and reports its executors (the UI's *Test* button)."""
        try:
            with self.get_conn() as client:
                cluster = client.cluster()
            return True, f"Quiver {cluster.get('version')}: {cluster.get('executors_alive')} executors alive"
        except Exception as e:  # any failure is the answer
            return False, str(e)
