"""What the client raises."""

from __future__ import annotations


class QuiverError(Exception):
    """Base of every error this package raises."""


class SchedulerUnreachable(QuiverError):
    """The scheduler could not be reached (wrong address, not running)."""


class Unauthorized(QuiverError):
    """The scheduler wants an access token and got none or a wrong one."""


class ApiError(QuiverError):
    """The scheduler answered with an error; ``status`` is the HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class JobNotFound(ApiError):
    """No such job (or no such result)."""


class JobFailed(QuiverError):
    """A job ended failed or cancelled; ``job`` is its final record."""

    def __init__(self, job: object, message: str) -> None:
        super().__init__(message)
        self.job = job


class JobTimeout(QuiverError):
    """A job did not end within the time given to wait for it."""
