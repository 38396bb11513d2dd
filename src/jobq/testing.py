"""Helpers for testing code that uses jobq (use them with ``jobq.App("memory://")``).

* :func:`drain` runs queued jobs inline, in the calling thread, until none is left.
* :func:`assert_enqueued` / :func:`refute_enqueued` check what code under test enqueued.

Example::

    app = jobq.App("memory://")
    place_order(app, order_id=42)                  # code under test enqueues a job
    jobq.testing.assert_enqueued(app, task=send_email, args=[42, "a@example.com"])
    result = jobq.testing.drain(app)
    assert result.completed == 1
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from jobq.app import App
from jobq.backends.base import OutcomeKind
from jobq.clock import utcnow
from jobq.executor import execute
from jobq.job import Job
from jobq.states import JobState
from jobq.task import Task

__all__ = ["DrainResult", "assert_enqueued", "drain", "refute_enqueued"]

_QUEUED = (JobState.AVAILABLE, JobState.SCHEDULED)


@dataclass(slots=True)
class DrainResult:
    """What :func:`drain` ran: jobs by how their attempt ended."""

    jobs: list[Job] = field(default_factory=list)
    outcomes: dict[OutcomeKind, int] = field(default_factory=dict)

    @property
    def completed(self) -> int:
        return self.outcomes.get(OutcomeKind.COMPLETED, 0)

    @property
    def failed(self) -> int:
        return self.outcomes.get(OutcomeKind.RETRY, 0) + self.outcomes.get(OutcomeKind.DEAD, 0)


def drain(
    app: App,
    queues: Sequence[str] | None = None,
    *,
    with_scheduled: bool = False,
    max_jobs: int = 10_000,
) -> DrainResult:
    """Run available jobs of ``queues`` (default: all queues with jobs) in this thread, one at a
    time in claim order, until none is left; jobs the run enqueues are run too.

    With ``with_scheduled``, scheduled jobs (future ``run_at`` or waiting to retry) are run as
    if their time had come, so a failing job is retried until it completes or is dead. Stops
    with an AssertionError after ``max_jobs`` attempts (a job that re-enqueues itself forever).
    """
    backend = app.backend
    result = DrainResult()
    far_future = utcnow() + timedelta(days=365 * 100)
    while True:
        served = list(queues) if queues is not None else sorted(backend.stats())
        if with_scheduled:
            backend.promote_due(now=far_future)
        claimed = (
            backend.claim(served, 1, worker_id="jobq.testing.drain", lease=timedelta(hours=1))
            if served
            else []
        )
        if not claimed:
            return result
        if len(result.jobs) >= max_jobs:
            raise AssertionError(
                f"drain ran {max_jobs} attempts and jobs are still queued; a "
                "job may be re-enqueueing itself forever"
            )
        record = claimed[0]
        outcome = execute(app, record)
        backend.record_outcomes([outcome])
        result.outcomes[outcome.kind] = result.outcomes.get(outcome.kind, 0) + 1
        result.jobs.append(Job(app, record))


def _matches(
    job: Job,
    task: str | None,
    args: Sequence[Any] | None,
    kwargs: Mapping[str, Any] | None,
    queue: str | None,
) -> bool:
    return (
        (task is None or job.task == task)
        and (queue is None or job.queue == queue)
        and (args is None or job.args == list(args))
        and (kwargs is None or job.kwargs == dict(kwargs))
    )


def _find(
    app: App,
    task: Task[Any, Any] | str | None,
    args: Sequence[Any] | None,
    kwargs: Mapping[str, Any] | None,
    queue: str | None,
) -> tuple[list[Job], list[Job]]:
    name = task.name if isinstance(task, Task) else task
    queued = [j for state in _QUEUED for j in app.list_jobs(state=state, task=name, limit=1000)]
    return [j for j in queued if _matches(j, name, args, kwargs, queue)], queued


def assert_enqueued(
    app: App,
    task: Task[Any, Any] | str | None = None,
    *,
    args: Sequence[Any] | None = None,
    kwargs: Mapping[str, Any] | None = None,
    queue: str | None = None,
    count: int | None = None,
) -> list[Job]:
    """Assert that queued (available or scheduled) jobs match; returns them.

    ``None`` criteria match anything; ``count`` demands exactly that many matches.
    """
    found, queued = _find(app, task, args, kwargs, queue)
    if not found or (count is not None and len(found) != count):
        want = (
            f"task={getattr(task, 'name', task)!r} args={args!r} kwargs={kwargs!r} queue={queue!r}"
        )
        have = "\n".join(f"  {j!r} args={j.args!r} kwargs={j.kwargs!r}" for j in queued[:20])
        raise AssertionError(
            f"expected {count if count is not None else 'at least 1'} queued job(s) matching "
            f"{want}, found {len(found)}. Queued jobs:\n{have or '  (none)'}"
        )
    return found


def refute_enqueued(
    app: App,
    task: Task[Any, Any] | str | None = None,
    *,
    args: Sequence[Any] | None = None,
    kwargs: Mapping[str, Any] | None = None,
    queue: str | None = None,
) -> None:
    """Assert that no queued job matches."""
    found, _ = _find(app, task, args, kwargs, queue)
    if found:
        raise AssertionError(f"expected no queued job matching, found: {found!r}")
