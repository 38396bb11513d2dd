"""The backend seam: one protocol at the level of a job's life (DESIGN §5).

Every backend owns its storage and atomicity and honours the same contract, which the shared
conformance suite (``tests/conformance``) checks against each of them:

* ``enqueue_many`` is atomic: every job of the call is committed, or none is.
* ``claim`` moves up to ``limit`` available jobs to ``running`` in DESIGN §4 order, adds one to
  each one's ``attempt``, and gives each a fresh ``lease_token`` valid until ``now + lease``.
* ``heartbeat``, ``record_outcomes`` and ``release`` act only on jobs whose (id, lease_token) still
  match and which are still ``running`` (fencing); they return the ids they changed.
* The backend's clock decides leases and due times. Every time-dependent method takes ``now``
  (UTC, tz-aware) so tests can move time; ``None`` means the backend's own clock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from jobq.exceptions import InvalidTransition, JobNotFound, UniqueConflict
from jobq.job import AttemptError, JobRecord
from jobq.states import Action, JobState


@dataclass(frozen=True, slots=True)
class NewJob:
    """A validated job ready to be stored; the payload is already encoded JSON text.

    ``run_at=None`` means "now" by the backend's clock; ``delay`` is added to the backend's now.
    """

    queue: str
    task: str
    args_json: str
    kwargs_json: str
    priority: int
    max_attempts: int
    timeout: timedelta | None = None
    run_at: datetime | None = None
    delay: timedelta | None = None
    deadline: datetime | None = None
    unique_key: str | None = None
    tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Lease:
    """Proof that a worker holds a running job."""

    job_id: int
    token: str


class OutcomeKind(StrEnum):
    """The closed set of ways an attempt can end."""

    COMPLETED = "completed"
    RETRY = "retry"
    DEAD = "dead"
    CANCELLED = "cancelled"
    SNOOZED = "snoozed"
    EXPIRED = "expired"

    @property
    def action(self) -> Action:
        return _OUTCOME_ACTION[self]


_OUTCOME_ACTION = {
    OutcomeKind.COMPLETED: Action.COMPLETE,
    OutcomeKind.RETRY: Action.RETRY,
    OutcomeKind.DEAD: Action.DISCARD,
    OutcomeKind.CANCELLED: Action.CANCEL,
    OutcomeKind.SNOOZED: Action.SNOOZE,
    OutcomeKind.EXPIRED: Action.EXPIRE,
}


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one attempt ended, to be recorded under its lease.

    For RETRY and SNOOZED the next run is ``run_at`` if given, else the backend's now + ``delay``.
    ``error`` is appended to the job's per-attempt errors.
    """

    lease: Lease
    kind: OutcomeKind
    result_json: str | None = None
    error: AttemptError | None = None
    delay: timedelta | None = None
    run_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """One registered worker process, as ``jobq status`` and the dashboard show it."""

    id: str
    host: str
    pid: int
    queues: tuple[str, ...]
    threads: int
    started_at: datetime
    heartbeat_at: datetime
    jobs_run: int = 0

    def alive(self, now: datetime, lease: timedelta) -> bool:
        """Seen within one lease: a live worker heartbeats every third of it."""
        return now - self.heartbeat_at <= lease


@dataclass(frozen=True, slots=True)
class JobFilter:
    """Which jobs a listing returns; ``None`` fields do not filter."""

    queue: str | None = None
    state: JobState | None = None
    task: str | None = None


class Backend(Protocol):
    """What jobq needs from a job store. See the module docstring for the shared contract."""

    #: The URL the backend was opened with, with any password redacted.
    url: str

    def enqueue_many(
        self, jobs: Sequence[NewJob], *, now: datetime | None = None, connection: Any = None
    ) -> list[JobRecord]:
        """Store ``jobs`` atomically; return their records in the same order.

        A job whose ``unique_key`` is held by an active job is not inserted: the record of the
        job holding the key is returned in its place. With ``connection`` (backends that
        support it), the jobs are written in that connection's current transaction and exist
        only if it commits; otherwise :class:`jobq.ConfigurationError`.
        """
        ...

    def claim(
        self,
        queues: Sequence[str],
        limit: int,
        *,
        worker_id: str,
        lease: timedelta,
        queue_order: bool = False,
        now: datetime | None = None,
    ) -> list[JobRecord]:
        """Lease up to ``limit`` available jobs from ``queues``, best first.

        With ``queue_order`` the queues are drained in the order given (for weighted queues);
        otherwise DESIGN §4 order applies across all of them.
        """
        ...

    def heartbeat(
        self, leases: Sequence[Lease], *, lease: timedelta, now: datetime | None = None
    ) -> set[int]:
        """Extend the given leases to ``now + lease``; return the ids still held."""
        ...

    def record_outcomes(
        self, outcomes: Sequence[Outcome], *, now: datetime | None = None
    ) -> set[int]:
        """Record finished attempts atomically; return the ids whose lease still matched."""
        ...

    def record_and_claim(
        self,
        outcomes: Sequence[Outcome],
        queues: Sequence[str],
        limit: int,
        *,
        worker_id: str,
        lease: timedelta,
        queue_order: bool = False,
        now: datetime | None = None,
    ) -> tuple[set[int], list[JobRecord]]:
        """``record_outcomes`` then ``claim``, in one transaction: one commit instead of two.

        Returns (ids whose outcome was recorded, claimed jobs).
        """
        ...

    def release(self, leases: Sequence[Lease], *, now: datetime | None = None) -> set[int]:
        """Hand running jobs back to ``available`` without using up their attempt."""
        ...

    def cancel(self, job_id: int, *, now: datetime | None = None) -> tuple[bool, JobRecord]:
        """Cancel an active job; returns (whether it changed, its record). Raises JobNotFound."""
        ...

    def retry(self, job_id: int, *, now: datetime | None = None) -> JobRecord:
        """Make a finished job available again (raising ``max_attempts`` if it is used up).

        Raises JobNotFound, InvalidTransition (job not finished), UniqueConflict.
        """
        ...

    def promote_due(self, *, now: datetime | None = None) -> int:
        """Move scheduled jobs whose ``run_at`` has come to ``available``; return how many."""
        ...

    def rescue_expired(self, *, now: datetime | None = None) -> int:
        """Return running jobs whose lease ran out to ``available`` (or ``dead`` when they have
        no attempt left); the lost attempt counts. Returns how many."""
        ...

    def age(self, *, every: timedelta, max_boost: int, now: datetime | None = None) -> int:
        """Raise the effective priority of available jobs by one per ``every`` waited, up to
        ``max_boost``; returns how many changed."""
        ...

    def prune(
        self,
        *,
        older_than: timedelta,
        states: frozenset[JobState],
        now: datetime | None = None,
        limit: int = 10_000,
    ) -> int:
        """Delete up to ``limit`` finished jobs in ``states`` finished before now - older_than."""
        ...

    def next_due(self) -> datetime | None:
        """The earliest ``run_at`` of a scheduled job, if any."""
        ...

    def get(self, job_id: int) -> JobRecord | None: ...

    def list_jobs(
        self, filter: JobFilter, *, limit: int = 50, before_id: int | None = None
    ) -> list[JobRecord]:
        """Jobs matching ``filter``, newest first; ``before_id`` pages back."""
        ...

    def stats(self) -> dict[str, dict[JobState, int]]:
        """Number of jobs per queue and state (states with no jobs are omitted)."""
        ...

    def register_worker(self, info: WorkerInfo) -> None:
        """Record a worker process (its ``started_at``/``heartbeat_at`` are the store's now)."""
        ...

    def worker_heartbeat(self, worker_id: str, jobs_run: int) -> None:
        """Refresh a registered worker's ``heartbeat_at`` (store's now) and ``jobs_run``."""
        ...

    def unregister_worker(self, worker_id: str) -> None:
        """Forget a worker that stopped cleanly."""
        ...

    def list_workers(self) -> list[WorkerInfo]:
        """Registered workers, most recently started first (stale ones included)."""
        ...

    def prune_workers(self, *, older_than: timedelta, now: datetime | None = None) -> int:
        """Forget workers not seen for ``older_than`` (killed without unregistering)."""
        ...

    def now(self) -> datetime:
        """The store's clock."""
        ...

    def try_lead(self) -> bool:
        """Whether this process should run maintenance now (promote, rescue, age, prune).

        Backends whose maintenance is safe to run from every process concurrently may always
        say yes; others elect one leader across all processes and machines.
        """
        ...

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` (from any thread) when jobs may have become available, as soon as
        the backend can tell; returns a function that unsubscribes. A backend that cannot tell
        may never call it: idle workers also poll :meth:`change_token`."""
        ...

    def change_token(self) -> int:
        """A cheap number that changes when another connection or process commits.

        Idle workers poll it to wake without running a claim query.
        """
        ...

    def close(self) -> None: ...


# -- what every backend says the same way ----------------------------------------------------

log = logging.getLogger("jobq.backend")


def not_found(job_id: int) -> JobNotFound:
    return JobNotFound(f"no job with id {job_id} (it may have been pruned)")


def not_retryable(job_id: int, state: str) -> InvalidTransition:
    return InvalidTransition(
        f"job {job_id} is {state}; only completed, dead, cancelled or expired jobs can be "
        "retried (cancel it first to stop it)"
    )


def retry_conflict(job_id: int) -> UniqueConflict:
    return UniqueConflict(
        f"job {job_id} cannot be retried: another active job holds its unique_key"
    )


def log_not_recorded(outcome: Outcome) -> None:
    """A late write, refused by fencing: logged, never applied (DESIGN §3)."""
    log.warning(
        "job %s: outcome %s not recorded: its lease %s is no longer held (expired and "
        "rescued, cancelled, or claimed again)",
        outcome.lease.job_id,
        outcome.kind.value,
        outcome.lease.token,
    )


#: Messages of the error a rescue appends (``{worker}``/``{times}`` filled in by each backend).
WORKER_LOST = "worker {worker} lost its lease (crashed, killed, hung or cut off from the database)"
WORKER_LOST_DEAD = (
    "worker lost {times} times: this job may be killing the process that runs it (segfault, "
    "os._exit, out of memory), so it is parked as dead instead of looping"
)
