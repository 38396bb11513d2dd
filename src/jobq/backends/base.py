"""The backend seam: one protocol at the level of a job's life (DESIGN §5).

Every backend owns its storage and atomicity and honours the same contract, which the shared
conformance suite (``tests/conformance``) checks against each of them:

* ``enqueue_many`` is atomic: every job of the call is committed, or none is.
* ``claim`` moves up to ``limit`` available jobs to ``running`` in DESIGN §4 order, adds one to
  each one's ``attempt``, and gives each a fresh ``lease_token`` valid until ``now + lease``.
* ``rescue_expired`` adds one to each rescued job's ``lost`` count. With ``max_lost=None`` a
  claim takes jobs whatever their ``lost``; with an int N it takes jobs never lost as usual, plus
  at most N jobs with ``lost > 0`` (the first in claim order). A worker that already holds a lost
  job claims with ``max_lost=0``, else ``max_lost=1``: a job that kills its worker (a poison
  job) is then never claimed in the same batch as another lost job, so it cannot keep taking
  the same batch-mates down with it until they too are parked as dead. Claims of limited jobs
  (concurrency or rate keys) may ignore ``max_lost``.
* ``heartbeat``, ``record_outcomes`` and ``release`` act only on jobs whose (id, lease_token) still
  match and which are still ``running`` (fencing); they return the ids they changed.
* The backend's clock decides leases and due times. Every time-dependent method takes ``now``
  (UTC, tz-aware) so tests can move time; ``None`` means the backend's own clock.

Flow control (scheduling, limits, dependencies) is part of the same contract:

* **Unique jobs.** A job with a ``unique_key`` conflicts with any job holding the same key in an
  active state (scheduled, blocked, available, running), and, when ``unique_window`` is set, with
  any job of that key created within the window (``created_at > now - unique_window``, whatever
  its state). ``on_conflict`` says what happens: ``skip`` returns the holder's record instead of
  inserting (the active holder if there is one, else the newest job in the window); ``replace``
  rewrites the holder's payload, priority, run_at, deadline, timeout, max_attempts and tags when
  it has not started yet (scheduled or available: Action.REPLACE), and raises UniqueConflict when
  it is running or blocked or finished; ``raise`` raises UniqueConflict. A UniqueConflict (a
  raise, or a refused replace) refuses the whole call: nothing of it is written. Enforced by the
  store, race-free between processes.
* **Dependencies.** ``depends_on`` ids (and ``depends_on_batch``: indexes of earlier jobs of the
  same call) must exist, else DependencyError and nothing written. A job whose dependencies are
  not all resolved is enqueued ``blocked``. A batch index names the record returned at that
  position (for a skipped unique job: its holder). A record's ``depends_on`` holds every
  dependency id, ascending, without duplicates. A dependency is resolved when it completes, or,
  with ``allow_failed``, when it ends in any terminal state. When a dependency ends dead, cancelled
  or expired and the dependent does not allow failure, the dependent is cancelled (Action.CANCEL,
  with an AttemptError of type ``DependencyFailed`` naming the dependency), and so on down the
  chain, in the same transaction. When the last dependency resolves, the job moves to
  ``available`` (or ``scheduled`` if its run_at is still ahead): Action.UNBLOCK. Resolution
  happens in the same transaction as the transition that finished the dependency, on every path
  (record_outcomes, record_and_claim, cancel, cancel_many, rescue to dead, expiry at claim,
  delete). Deleting a job counts as cancelling it for its dependents (the error says the
  dependency "ended cancelled").
* **Concurrency limits.** A job with ``concurrency_key`` is claimed only while fewer than its
  ``concurrency_limit`` jobs with that key are ``running``, across every process and machine.
* **Rate limits.** A job with ``rate_key`` is claimed only while fewer than ``rate_limit`` jobs
  with that key were claimed (started) within the last ``rate_period`` (a sliding window: a start
  counts while ``started_at > now - rate_period``; a released job's start still counts).
* **Paused queues** are not claimed from (enqueue still works).
* **Backpressure.** A queue with ``max_depth`` refuses an enqueue that would take its waiting
  jobs (scheduled, blocked, available) past it: QueueFull, nothing written.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from jobq.exceptions import (
    DependencyError,
    InvalidTransition,
    JobNotFound,
    QueueFull,
    UniqueConflict,
)
from jobq.fastinit import fast_init
from jobq.job import AttemptError, JobRecord
from jobq.states import Action, JobState


@fast_init
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
    #: "skip" | "replace" | "raise" (see the module docstring)
    on_conflict: str = "skip"
    unique_window: timedelta | None = None
    concurrency_key: str | None = None
    concurrency_limit: int | None = None
    rate_key: str | None = None
    rate_limit: int | None = None
    rate_period: timedelta | None = None
    depends_on: tuple[int, ...] = ()
    #: indexes of earlier jobs in the same enqueue_many call that this job depends on
    depends_on_batch: tuple[int, ...] = ()
    allow_failed: bool = False
    #: names of secret kwargs, and str(index) of secret positional args (redacted on display)
    secret: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class QueueSettings:
    """Store-wide settings of one queue (seen by every process)."""

    paused: bool = False
    max_depth: int | None = None


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
    #: case-insensitive substring of the stored args or kwargs JSON text (literal: ``%`` and
    #: ``_`` match only themselves)
    search: str | None = None


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
        max_lost: int | None = None,
    ) -> list[JobRecord]:
        """Lease up to ``limit`` available jobs from ``queues``, best first.

        With ``queue_order`` the queues are drained in the order given (for weighted queues);
        otherwise DESIGN §4 order applies across all of them. ``max_lost``: None takes jobs
        whatever their ``lost`` count; an int N takes jobs with ``lost == 0`` plus at most N
        jobs with ``lost > 0``, in claim order (limited jobs may ignore it).
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
        max_lost: int | None = None,
    ) -> tuple[set[int], list[JobRecord]]:
        """``record_outcomes`` then ``claim``, in one transaction: one commit instead of two.
        ``max_lost`` limits the claim as for :meth:`claim`.

        Returns (ids whose outcome was recorded, claimed jobs).
        """
        ...

    def release(self, leases: Sequence[Lease], *, now: datetime | None = None) -> set[int]:
        """Hand running jobs back to ``available`` without using up their attempt."""
        ...

    def held(self, leases: Sequence[Lease]) -> set[int]:
        """Read-only: the ids of ``leases`` still held (running under that token). Workers poll
        it about once a second to notice a running job was cancelled."""
        ...

    def set_progress(self, lease: Lease, fraction: float | None, message: str | None) -> bool:
        """Store a running job's progress (fenced by its lease); False if the lease is gone.
        The last progress stays readable after the job ends."""
        ...

    def cancel(self, job_id: int, *, now: datetime | None = None) -> tuple[bool, JobRecord]:
        """Cancel an active job; returns (whether it changed, its record). Raises JobNotFound."""
        ...

    def cancel_many(self, filter: JobFilter, *, now: datetime | None = None) -> int:
        """Cancel every active job matching ``filter`` (running ones included, as ``cancel``
        does); dependents are resolved as for ``cancel``. Returns how many jobs matching the
        filter changed (dependents cancelled by the cascade are not counted)."""
        ...

    def retry_many(self, filter: JobFilter, *, now: datetime | None = None) -> int:
        """``retry`` every finished job matching ``filter`` (``filter.state`` must be a terminal
        state or None, meaning all four; an active state raises InvalidTransition); jobs whose
        unique_key is held are skipped. Returns how many were made available."""
        ...

    def delete(self, job_id: int, *, now: datetime | None = None) -> bool:
        """Remove a job that is not running (InvalidTransition if it is: cancel it first);
        False if there was no such job. Its blocked dependents are resolved as if it had been
        cancelled."""
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
        no attempt left); the lost attempt counts, and each one's ``lost`` count grows by one.
        Returns how many."""
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
        keep: int = 0,
    ) -> int:
        """Delete up to ``limit`` finished jobs in ``states`` finished before now - older_than,
        sparing the ``keep`` most recently finished jobs of each state (by finished_at, then id;
        whatever their age)."""
        ...

    # -- queues ------------------------------------------------------------------------------

    def set_queue(
        self, queue: str, *, paused: bool | None = None, max_depth: int | bool | None = False
    ) -> QueueSettings:
        """Change a queue's store-wide settings: ``paused`` (None: unchanged), ``max_depth``
        (an int, None to remove the limit, False: unchanged). Returns the new settings."""
        ...

    def queue_settings(self) -> dict[str, QueueSettings]:
        """Settings of every queue that has any (queues never configured are absent; a queue
        once configured stays listed, with default values if they were put back)."""
        ...

    # -- periodic jobs -----------------------------------------------------------------------

    def enqueue_tick(
        self, name: str, tick: datetime, job: NewJob, *, now: datetime | None = None
    ) -> JobRecord | None:
        """Enqueue ``job`` for periodic schedule ``name``'s tick ``tick``, exactly once: in one
        transaction, if the stored last tick of ``name`` is absent or earlier than ``tick``,
        store ``tick`` and enqueue ``job`` (returning its record); otherwise write nothing and
        return None. Safe when several schedulers on several machines race."""
        ...

    def cron_ticks(self) -> dict[str, datetime]:
        """The last enqueued tick of each periodic schedule."""
        ...

    # -- distributed locks -------------------------------------------------------------------

    def acquire_lock(
        self, name: str, owner: str, ttl: timedelta, *, now: datetime | None = None
    ) -> int | None:
        """Take lock ``name`` for ``owner`` until now + ttl if it is free or its lease expired
        (``expires_at < now``: held up to and including its expiry instant); returns the fencing
        token (strictly greater than every token issued for ``name`` before), or None if a lease
        is still valid, its holder's own included (not re-entrant)."""
        ...

    def renew_lock(
        self, name: str, token: int, ttl: timedelta, *, now: datetime | None = None
    ) -> bool:
        """Extend a held lock to now + ttl; False if ``token`` no longer holds it (expired and
        taken over, or released). The current token may renew even after expiry, as long as
        nobody took the lock over."""
        ...

    def release_lock(self, name: str, token: int) -> bool:
        """Free a lock held under ``token``; False if that token no longer held it."""
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
        extra={"job_id": outcome.lease.job_id},
    )


def queue_full(queue: str, max_depth: int) -> QueueFull:
    return QueueFull(
        f"queue {queue!r} is full: it holds its max_depth of {max_depth:,} waiting jobs; retry "
        "later, add workers, or raise the limit (jobq queues set-max-depth)"
    )


def unique_held(key: str, holder: JobRecord) -> UniqueConflict:
    return UniqueConflict(
        f"unique_key {key!r} is held by job {holder.id} ({holder.state.value}); use "
        "on_conflict='skip' to get that job back instead"
    )


def not_replaceable(key: str, holder: JobRecord) -> UniqueConflict:
    return UniqueConflict(
        f"unique_key {key!r} is held by job {holder.id}, which is {holder.state.value}: only a "
        "job that has not started (scheduled or available) can be replaced"
    )


def unknown_dependency(job_id: int) -> DependencyError:
    return DependencyError(
        f"depends_on names job {job_id}, which does not exist (it may have been pruned); "
        "enqueue the dependency first and pass its job or id"
    )


def bad_batch_dependency(position: int, index: int) -> DependencyError:
    return DependencyError(
        f"job {position} of the batch depends on batch index {index}: a job can depend only on "
        "jobs earlier in the same call (this also rules out cycles)"
    )


def dependency_failed(dep_id: int, state: str, attempt: int, at: datetime) -> AttemptError:
    """The error appended to a dependent cancelled because its dependency did not complete."""
    return AttemptError(
        attempt,
        at,
        "DependencyFailed",
        f"dependency {dep_id} ended {state}; cancelled (pass allow_failed=True to run anyway)",
    )


def select_limited(
    candidates: Sequence[tuple[int, str | None, int | None, str | None, int | None]],
    running: dict[str, int],
    started: dict[str, int],
    limit: int,
) -> list[int]:
    """Which limited candidates a claim may take, in the order given.

    ``candidates``: (id, concurrency_key, concurrency_limit, rate_key, rate_limit) in claim
    order; ``running``: running jobs per concurrency key; ``started``: starts within the
    window per rate key. Every backend claims limited jobs through this one rule.
    """
    running, started = dict(running), dict(started)
    out: list[int] = []
    for job_id, ckey, climit, rkey, rlimit in candidates:
        if len(out) >= limit:
            break
        if ckey is not None and climit is not None and running.get(ckey, 0) >= climit:
            continue
        if rkey is not None and rlimit is not None and started.get(rkey, 0) >= rlimit:
            continue
        if ckey is not None:
            running[ckey] = running.get(ckey, 0) + 1
        if rkey is not None:
            started[rkey] = started.get(rkey, 0) + 1
        out.append(job_id)
    return out


#: Messages of the error a rescue appends (``{worker}``/``{times}`` filled in by each backend).
WORKER_LOST = "worker {worker} lost its lease (crashed, killed, hung or cut off from the database)"
WORKER_LOST_DEAD = (
    "worker lost {times} times: this job may be killing the process that runs it (segfault, "
    "os._exit, out of memory), so it is parked as dead instead of looping"
)
