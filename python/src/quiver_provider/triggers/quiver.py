"""Deferrable waiting: a trigger that polls a Quiver job until it ends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from quiver_provider.hooks.quiver import QuiverHook


class QuiverJobTrigger(BaseTrigger):
    """Fires once the job ``job_id`` has ended, with its final state.

    The event is ``{"job_id", "state", "error"}``; ``state`` is
    ``succeeded``, ``failed`` or ``cancelled`` (or ``error`` when the
    scheduler could not be asked). When a user kills the deferred task, the
    job is cancelled (Airflow 3.3 calls :meth:`on_kill`).
    """

    def __init__(
        self,
        job_id: str,
        quiver_conn_id: str = QuiverHook.default_conn_name,
        poll_interval: float = 2.0,
        cancel_on_kill: bool = True,
    ) -> None:
        super().__init__()
        self.job_id = job_id
        self.quiver_conn_id = quiver_conn_id
        self.poll_interval = poll_interval
        self.cancel_on_kill = cancel_on_kill

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "job_id": self.job_id,
                "quiver_conn_id": self.quiver_conn_id,
                "poll_interval": self.poll_interval,
                "cancel_on_kill": self.cancel_on_kill,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            client = await QuiverHook(self.quiver_conn_id).aget_conn()
            async with client:
                while True:
                    job = await client.job(self.job_id)
                    if job.is_terminal:
                        yield TriggerEvent({"job_id": job.id, "state": job.state.value, "error": job.error})
                        return
                    self.log.info("Quiver job %s is %s: %s", job.id, job.state.value, job.progress.describe())
                    await asyncio.sleep(self.poll_interval)
        except Exception as e:
            yield TriggerEvent({"job_id": self.job_id, "state": "error", "error": str(e)})

    async def on_kill(self) -> None:
        if not self.cancel_on_kill:
            return
        client = await QuiverHook(self.quiver_conn_id).aget_conn()
        async with client:
            job = await client.cancel(self.job_id)
            self.log.info("cancelled Quiver job %s: now %s", job.id, job.state.value)
