"""The job service's records, as the scheduler's REST API sends them.

Only the fields a program usually needs are attributes; every record keeps
the whole JSON object in ``raw`` (the OpenAPI document at
``/api/v1/openapi.json`` describes all of it).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class JobState(str, enum.Enum):
    """Where a job is in its life."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        """True for states a job never leaves."""
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


@dataclass(frozen=True)
class Progress:
    """How far a job has come."""

    stages_total: int = 0
    stages_done: int = 0
    tasks_total: int = 0
    tasks_done: int = 0
    tasks_running: int = 0
    tasks_failed: int = 0
    rows_read: int = 0
    rows_written: int = 0

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Progress:
        data = data or {}
        return cls(**{name: int(data.get(name) or 0) for name in cls.__dataclass_fields__})

    def describe(self) -> str:
        """One line, as the CLI prints it: ``stages 2/3, tasks 5/8 (2 running)``."""
        text = f"stages {self.stages_done}/{self.stages_total}, tasks {self.tasks_done}/{self.tasks_total}"
        if self.tasks_running:
            text += f" ({self.tasks_running} running)"
        if self.tasks_failed:
            text += f", {self.tasks_failed} failed attempts"
        return text


@dataclass(frozen=True)
class Statement:
    """One statement of a script job."""

    index: int
    sql: str
    state: JobState
    summary: str | None
    error: str | None
    result_rows: int | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Statement:
        return cls(
            index=int(data["index"]),
            sql=data.get("sql", ""),
            state=JobState(data["state"]),
            summary=data.get("summary"),
            error=data.get("error"),
            result_rows=data.get("result_rows"),
        )


@dataclass(frozen=True)
class Job:
    """A job: its summary, and for :meth:`QuiverClient.job` its statements."""

    id: str
    name: str
    source: str
    state: JobState
    submitted_at: int
    finished_at: int | None
    duration_ms: int | None
    error: str | None
    progress: Progress
    statements: tuple[Statement, ...] = ()
    outputs: tuple[str, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Job:
        return cls(
            id=data["id"],
            name=data.get("name", ""),
            source=data.get("source", ""),
            state=JobState(data["state"]),
            submitted_at=int(data.get("submitted_at") or 0),
            finished_at=data.get("finished_at"),
            duration_ms=data.get("duration_ms"),
            error=data.get("error"),
            progress=Progress.from_json(data.get("progress")),
            statements=tuple(Statement.from_json(s) for s in data.get("statements") or ()),
            outputs=tuple(data.get("outputs") or ()),
            raw=data,
        )

    @property
    def is_terminal(self) -> bool:
        """True once the job has ended (succeeded, failed or cancelled)."""
        return self.state.is_terminal
