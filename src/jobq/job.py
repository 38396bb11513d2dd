"""The job: :class:`JobRecord` (an immutable snapshot of a stored row) and :class:`Job`
(a handle with which application code follows and steers one job)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from jobq import payload
from jobq.exceptions import JobCancelled, JobExpired, JobFailed, PayloadError, WaitTimeout
from jobq.fastinit import fast_init
from jobq.states import JobState

if TYPE_CHECKING:
    from jobq.app import App


@dataclass(frozen=True, slots=True)
class AttemptError:
    """Why one attempt did not complete."""

    attempt: int
    at: datetime
    type: str
    message: str
    traceback: str | None = None


@fast_init
@dataclass(frozen=True, slots=True)
class JobRecord:
    """One job as stored. Times are UTC and tz-aware; durations are ``timedelta``.

    ``args_json``/``kwargs_json``/``result_json`` hold the stored JSON text; the ``args``,
    ``kwargs`` and ``result`` properties decode it (raising :class:`jobq.PayloadError` for a row
    that does not hold valid JSON).
    """

    id: int
    queue: str
    task: str
    args_json: str
    kwargs_json: str
    priority: int
    deadline: datetime | None
    run_at: datetime
    attempt: int
    max_attempts: int
    timeout: timedelta | None
    unique_key: str | None
    tags: tuple[str, ...]
    state: JobState
    worker_id: str | None
    lease_token: str | None
    leased_until: datetime | None
    result_json: str | None
    errors: tuple[AttemptError, ...]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    concurrency_key: str | None = None
    rate_key: str | None = None
    depends_on: tuple[int, ...] = ()
    allow_failed: bool = False
    progress: float | None = None
    progress_message: str | None = None
    secret: tuple[str, ...] = ()
    #: how many times the job was rescued from a worker that lost its lease (crashed, killed,
    #: cut off): workers hold at most one such job at a time (``Backend.claim``'s ``max_lost``)
    lost: int = 0

    @property
    def args(self) -> list[Any]:
        value = payload.decode(self.args_json, "args")
        if not isinstance(value, list):
            raise PayloadError(f"stored args are not a JSON list: {self.args_json[:80]!r}")
        return value

    @property
    def kwargs(self) -> dict[str, Any]:
        value = payload.decode(self.kwargs_json, "kwargs")
        if not isinstance(value, dict):
            raise PayloadError(f"stored kwargs are not a JSON object: {self.kwargs_json[:80]!r}")
        return value

    @property
    def result(self) -> Any:
        return None if self.result_json is None else payload.decode(self.result_json, "result")

    @property
    def last_error(self) -> AttemptError | None:
        return self.errors[-1] if self.errors else None


class Job:
    """A handle on one job: a snapshot of its row plus the app that stores it.

    Attributes read the snapshot; :meth:`refresh` re-reads it. Handles are cheap: ``App.get_job``
    makes a new one for any id.
    """

    __slots__ = ("_app", "_record")

    def __init__(self, app: App, record: JobRecord) -> None:
        self._app = app
        self._record = record

    def __repr__(self) -> str:
        r = self._record
        return f"<Job {r.id} {r.task} queue={r.queue} state={r.state.value} attempt={r.attempt}>"

    @property
    def record(self) -> JobRecord:
        """The snapshot this handle holds."""
        return self._record

    @property
    def id(self) -> int:
        return self._record.id

    @property
    def queue(self) -> str:
        return self._record.queue

    @property
    def task(self) -> str:
        return self._record.task

    @property
    def state(self) -> JobState:
        return self._record.state

    @property
    def priority(self) -> int:
        return self._record.priority

    @property
    def deadline(self) -> datetime | None:
        return self._record.deadline

    @property
    def run_at(self) -> datetime:
        return self._record.run_at

    @property
    def attempt(self) -> int:
        return self._record.attempt

    @property
    def max_attempts(self) -> int:
        return self._record.max_attempts

    @property
    def timeout(self) -> timedelta | None:
        return self._record.timeout

    @property
    def unique_key(self) -> str | None:
        return self._record.unique_key

    @property
    def tags(self) -> tuple[str, ...]:
        return self._record.tags

    @property
    def errors(self) -> tuple[AttemptError, ...]:
        return self._record.errors

    @property
    def created_at(self) -> datetime:
        return self._record.created_at

    @property
    def started_at(self) -> datetime | None:
        return self._record.started_at

    @property
    def finished_at(self) -> datetime | None:
        return self._record.finished_at

    @property
    def args(self) -> list[Any]:
        return self._record.args

    @property
    def depends_on(self) -> tuple[int, ...]:
        return self._record.depends_on

    @property
    def progress(self) -> float | None:
        """The fraction (0..1) the task last reported with ``set_progress`` (None if never)."""
        return self._record.progress

    @property
    def progress_message(self) -> str | None:
        return self._record.progress_message

    @property
    def kwargs(self) -> dict[str, Any]:
        return self._record.kwargs

    def refresh(self) -> Job:
        """Re-read the job from the store; returns ``self``."""
        self._record = self._app.get_job(self._record.id).record
        return self

    def result(self) -> Any:
        """The stored return value (None until the job has completed)."""
        return self._record.result

    def cancel(self) -> bool:
        """Cancel the job unless it already finished; True if this call cancelled it."""
        cancelled, record = self._app._cancel(self._record.id)
        self._record = record
        return cancelled

    def wait(self, timeout: float | None = None, *, poll: float = 0.05) -> Any:
        """Block until the job finishes; return its result.

        Raises :class:`jobq.WaitTimeout` after ``timeout`` seconds, and :class:`jobq.JobFailed`,
        :class:`jobq.JobCancelled` or :class:`jobq.JobExpired` if it did not complete.
        """
        finished = wait_until(lambda: self.refresh().state.is_terminal, timeout, poll)
        r = self._record
        if not finished:
            raise WaitTimeout(
                f"job {r.id} ({r.task}) is still {r.state.value} after {timeout}s; "
                "wait longer, or check that a worker serves queue "
                f"{r.queue!r} (jobq status)"
            )
        if r.state is JobState.COMPLETED:
            return r.result
        raise _outcome_error(r)


def wait_until(done: Callable[[], bool], timeout: float | None, poll: float) -> bool:
    """Call ``done`` until it is true (returning True) or ``timeout`` seconds passed (False),
    sleeping from 1 ms doubling up to ``poll`` between calls."""
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = 0.001
    while not done():
        if deadline is not None and time.monotonic() >= deadline:
            return False
        remaining = None if deadline is None else deadline - time.monotonic()
        time.sleep(delay if remaining is None else max(0.0, min(delay, remaining)))
        delay = min(delay * 2, poll)
    return True


def _outcome_error(r: JobRecord) -> Exception:
    err = r.last_error
    why = f": {err.type}: {err.message}" if err else ""
    if r.state is JobState.DEAD:
        return JobFailed(f"job {r.id} ({r.task}) is dead after {r.attempt} attempt(s){why}", r)
    if r.state is JobState.CANCELLED:
        return JobCancelled(f"job {r.id} ({r.task}) was cancelled{why}", r)
    return JobExpired(
        f"job {r.id} ({r.task}) expired: its deadline {r.deadline} passed before it started", r
    )
