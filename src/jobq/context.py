"""``jobq.current_job()``: a running task's handle on its own job."""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING

from jobq.exceptions import NoCurrentJob

if TYPE_CHECKING:
    from jobq.job import Job

_current: ContextVar[Job | None] = ContextVar("jobq_current_job", default=None)


def current_job() -> Job:
    """The job whose task is running in this thread or task (id, attempt, deadline, …).

    Raises :class:`jobq.NoCurrentJob` when called outside a running task.
    """
    job = _current.get()
    if job is None:
        raise NoCurrentJob(
            "jobq.current_job() was called outside a running task; call it from inside a "
            "function run by a jobq worker"
        )
    return job
