"""``jobq.current_job()``: a running task's handle on its own job.

The handle is a :class:`RunningJob`: a :class:`jobq.Job` that can also report progress and
tell the task that someone cancelled it.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import replace
from typing import TYPE_CHECKING

from jobq.exceptions import InvalidJobError, NoCurrentJob
from jobq.job import Job, JobRecord

if TYPE_CHECKING:
    from jobq.app import App

_current: ContextVar[Job | None] = ContextVar("jobq_current_job", default=None)

MAX_PROGRESS_MESSAGE = 200


class RunningJob(Job):
    """The handle a running task gets from :func:`current_job`."""

    __slots__ = ("_cancel", "_cancelled", "_report")

    def __init__(
        self,
        app: App,
        record: JobRecord,
        report: Callable[[float | None, str | None], None] | None = None,
    ) -> None:
        super().__init__(app, record)
        self._cancelled = False
        self._cancel: threading.Event | None = None  # made on first wait_cancelled()
        self._report = report

    @property
    def cancel_requested(self) -> bool:
        """True once the job was cancelled while running (``job.cancel()``, ``jobq jobs
        cancel``, the dashboard). Check it between steps and return (or raise
        :class:`jobq.Cancel`); a task that does not stop is hard-stopped after the worker's
        ``cancel_grace``."""
        return self._cancelled

    def wait_cancelled(self, timeout: float | None = None) -> bool:
        """Sleep up to ``timeout`` seconds, waking early if the job is cancelled; returns
        :attr:`cancel_requested`. A cancellable replacement for ``time.sleep`` in tasks."""
        event = self._cancel
        if event is None:
            event = self._cancel = threading.Event()
        if self._cancelled:  # set before the event existed (see _request_cancel)
            event.set()
        return event.wait(timeout)

    def set_progress(self, fraction: float | None, message: str | None = None) -> None:
        """Report progress: ``fraction`` from 0 to 1 (or None), and a short message.

        Readable from the job handle (``job.refresh().progress``), ``jobq jobs show`` and the
        dashboard. Writes are batched by the worker (about twice a second), so calling this
        in a tight loop is cheap."""
        if fraction is not None:
            if (
                isinstance(fraction, bool)
                or not isinstance(fraction, int | float)
                or not math.isfinite(fraction)
                or not 0 <= fraction <= 1
            ):
                raise InvalidJobError(
                    f"progress fraction must be a number from 0 to 1 (or None), got {fraction!r}"
                )
            fraction = float(fraction)
        if message is not None:
            if not isinstance(message, str):
                raise InvalidJobError(f"progress message must be a str, got {message!r}")
            message = message[:MAX_PROGRESS_MESSAGE]
        self._record = replace(self._record, progress=fraction, progress_message=message)
        if self._report is not None:
            self._report(fraction, message)

    def _request_cancel(self) -> None:
        self._cancelled = True  # first the flag, then the event: see wait_cancelled
        event = self._cancel
        if event is not None:
            event.set()


def current_job() -> RunningJob:
    """The job whose task is running in this thread or task (id, attempt, deadline, …).

    Raises :class:`jobq.NoCurrentJob` when called outside a running task.
    """
    job = _current.get()
    if job is None:
        raise NoCurrentJob(
            "jobq.current_job() was called outside a running task; call it from inside a "
            "function run by a jobq worker"
        )
    if not isinstance(job, RunningJob):  # e.g. set by jobq.testing helpers
        job = RunningJob(job._app, job.record)
        _current.set(job)
    return job
