"""Running one claimed job: resolve task → check deadline → decode → run → classify.

The result is always an :class:`Outcome` from a closed set (completed, retry, dead, cancelled,
snoozed, expired); a task's exception never escapes into the worker.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from jobq import payload
from jobq.backends.base import Lease, Outcome, OutcomeKind
from jobq.clock import utcnow
from jobq.context import RunningJob, _current
from jobq.control import Cancel, Retry, Snooze
from jobq.exceptions import PayloadError
from jobq.job import AttemptError, JobRecord
from jobq.logs import job_fields
from jobq.retry import DEFAULT_RETRY
from jobq.secrets import scrub

if TYPE_CHECKING:
    from jobq.app import App
    from jobq.task import Task

log = logging.getLogger("jobq.worker")
MAX_TRACEBACK_CHARS = 20_000


def _error(record: JobRecord, type_: str, message: str, tb: str | None = None) -> AttemptError:
    """An attempt's error as stored: secret argument values scrubbed, traceback bounded."""
    return AttemptError(
        record.attempt,
        utcnow(),
        type_,
        scrub(message, record) or "",
        scrub(tb[-MAX_TRACEBACK_CHARS:], record) if tb else None,
    )


def _lease(record: JobRecord) -> Lease:
    assert record.lease_token is not None, "a claimed job always has a lease token"
    return Lease(record.id, record.lease_token)


def dead(record: JobRecord, type_: str, message: str, tb: str | None = None) -> Outcome:
    return Outcome(_lease(record), OutcomeKind.DEAD, error=_error(record, type_, message, tb))


def failure(
    record: JobRecord,
    task: Task[Any, Any] | None,
    exc: BaseException,
    type_: str | None = None,
    message: str | None = None,
    retry_delay: timedelta | None = None,
) -> Outcome:
    """The outcome of a failed attempt: a retry after the policy's delay, or dead when the job
    has used up its attempts or the policy says not to retry."""
    type_ = type_ or type(exc).__name__
    message = message if message is not None else str(exc)
    tb = "".join(traceback.format_exception(exc)) if exc.__traceback__ else None
    err = _error(record, type_, message, tb)
    if record.attempt >= record.max_attempts:
        return Outcome(_lease(record), OutcomeKind.DEAD, error=err)
    delay = retry_delay
    if delay is None:
        policy = task.defaults.retry if task is not None else DEFAULT_RETRY
        delay = policy.delay(record.attempt, exc)
        if delay is None:
            return Outcome(_lease(record), OutcomeKind.DEAD, error=err)
    return Outcome(_lease(record), OutcomeKind.RETRY, error=err, delay=delay)


@dataclass(frozen=True, slots=True)
class Call:
    """A claimed job that passed the checks and is ready to run."""

    task: Task[Any, Any]
    args: list[Any]
    kwargs: dict[str, Any]


def prepare(app: App, record: JobRecord) -> Outcome | Call:
    """Resolve the task, check the deadline, decode the payload: a Call, or the Outcome of a
    job that must not run."""
    task = app._tasks.get(record.task)
    if task is None:
        return dead(
            record,
            "UnknownTaskError",
            f"task {record.task!r} is not registered in this worker's app; register it "
            "(@app.task) in the app the worker runs, then retry the job",
        )
    if (
        record.deadline is not None
        and record.started_at is not None
        and record.started_at > record.deadline
        and not task.defaults.run_late
    ):
        return Outcome(
            _lease(record),
            OutcomeKind.EXPIRED,
            error=_error(
                record,
                "DeadlineExpired",
                f"deadline {record.deadline.isoformat()} passed before the job started "
                f"({record.started_at.isoformat()})",
            ),
        )
    try:
        return Call(task, record.args, record.kwargs)
    except PayloadError as exc:
        return dead(record, "PayloadError", str(exc))


def classify(
    record: JobRecord, task: Task[Any, Any], exc: BaseException | None, result: Any = None
) -> Outcome:
    """The outcome of a run that raised ``exc`` (or returned ``result`` when exc is None)."""
    if exc is None:
        try:
            result_json = payload.encode(result, "result")
        except PayloadError as err:
            return dead(
                record, "PayloadError", f"the task returned a value that cannot be stored: {err}"
            )
        return Outcome(_lease(record), OutcomeKind.COMPLETED, result_json=result_json)
    if isinstance(exc, Retry):
        reason = exc.reason or "the task asked to retry"
        return failure(record, task, exc, "Retry", reason, retry_delay=exc.delay)
    if isinstance(exc, Snooze):
        return Outcome(_lease(record), OutcomeKind.SNOOZED, delay=exc.delay, run_at=exc.at)
    if isinstance(exc, Cancel):
        return Outcome(
            _lease(record), OutcomeKind.CANCELLED, error=_error(record, "Cancel", exc.reason)
        )
    log.warning(
        "job %s (%s) attempt %d/%d failed: %s: %s",
        record.id,
        record.task,
        record.attempt,
        record.max_attempts,
        type(exc).__name__,
        scrub(str(exc), record),
    )
    return failure(record, task, exc)


def timed_out(record: JobRecord, task: Task[Any, Any] | None) -> Outcome:
    """The outcome of an attempt that ran past its timeout: retried or dead by policy."""
    exc = TimeoutError(f"job ran longer than its timeout of {record.timeout}")
    log.warning(
        "job %s (%s) timed out after %s",
        record.id,
        record.task,
        record.timeout,
        extra=job_fields(record),
    )
    return failure(record, task, exc, "Timeout", str(exc))


def execute(
    app: App,
    record: JobRecord,
    on_start: Callable[[JobRecord], None] | None = None,
    job: RunningJob | None = None,
) -> Outcome:
    """Run one claimed job in this thread and say how it ended (an ``async def`` task runs to
    completion on a private event loop). ``job`` is the handle ``current_job()`` returns."""
    call = prepare(app, record)
    if isinstance(call, Outcome):
        return call
    if on_start is not None:
        on_start(record)
    token = _current.set(job if job is not None else RunningJob(app, record))
    try:
        if call.task.is_async:
            result = asyncio.run(call.task.fn(*call.args, **call.kwargs))
        else:
            result = call.task.fn(*call.args, **call.kwargs)
    except BaseException as exc:  # a task's failure must never kill the worker
        return classify(record, call.task, exc)
    finally:
        _current.reset(token)
    return classify(record, call.task, None, result)


async def execute_async(
    app: App,
    record: JobRecord,
    on_start: Callable[[JobRecord], None] | None = None,
    job: RunningJob | None = None,
) -> Outcome:
    """Run one claimed ``async def`` job on the running event loop, within its timeout.

    A timeout cancels the task for real; cancelling the asyncio task that runs this (a
    cancelled job, a worker that gives up at shutdown) propagates ``CancelledError``.
    """
    call = prepare(app, record)
    if isinstance(call, Outcome):
        return call
    if on_start is not None:
        on_start(record)
    token = _current.set(job if job is not None else RunningJob(app, record))
    try:
        coro = call.task.fn(*call.args, **call.kwargs)
        timeout = record.timeout.total_seconds() if record.timeout is not None else None
        result = await asyncio.wait_for(coro, timeout)
    except asyncio.CancelledError:
        raise
    except TimeoutError as exc:
        if isinstance(exc.__cause__, asyncio.CancelledError):  # raised by wait_for
            return timed_out(record, call.task)
        return classify(record, call.task, exc)
    except BaseException as exc:
        return classify(record, call.task, exc)
    finally:
        _current.reset(token)
    return classify(record, call.task, None, result)
