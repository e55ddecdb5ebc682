"""Python client for Quiver: submit and follow jobs, read results as Arrow.

>>> import quiver_client
>>> q = quiver_client.QuiverClient("localhost:50050")                         # doctest: +SKIP
>>> q.sql("SELECT country, count(*) AS n FROM customers GROUP BY country")   # doctest: +SKIP
pyarrow.Table ...

* :class:`QuiverClient` (and :class:`AsyncQuiverClient`): the REST API —
  submit scripts with ``${params}`` and settings, wait, cancel, list jobs,
  fetch results as ``pyarrow.Table`` or pandas.
* :meth:`QuiverClient.query` and :mod:`quiver_client.flightsql`: Arrow Flight
  SQL through ADBC, for one query at a time.
"""

from .client import DEFAULT_PORT, AsyncQuiverClient, QuiverClient, scheduler_url
from .errors import (
    ApiError,
    JobFailed,
    JobNotFound,
    JobTimeout,
    QuiverError,
    SchedulerUnreachable,
    Unauthorized,
)
from .models import Job, JobState, Progress, Statement

__all__ = [
    "DEFAULT_PORT",
    "ApiError",
    "AsyncQuiverClient",
    "Job",
    "JobFailed",
    "JobNotFound",
    "JobState",
    "JobTimeout",
    "Progress",
    "QuiverClient",
    "QuiverError",
    "SchedulerUnreachable",
    "Statement",
    "Unauthorized",
    "scheduler_url",
]
