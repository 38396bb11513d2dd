"""Memory backend (``memory://``): the whole contract in one process, for users' tests.

Jobs live in a dict guarded by one lock; each queue keeps a heap in claim order with lazy
deletion, so claims stay O(log n) as on the database backends. Every state change goes through
:func:`jobq.states.check` (in :meth:`MemoryBackend._move`), so this backend doubles as an
executable reading of the table and of the flow-control contract in ``base.py``:

* an enqueue is planned in full (ids, unique conflicts, dependencies, queue depth) before
  anything is stored, so a refused call writes nothing;
* every transition into a terminal state goes through :meth:`MemoryBackend._finish`, which
  resolves the job's dependents (:meth:`MemoryBackend._settle`) under the same lock;
* limited jobs (with a concurrency or rate key) wait in a set of their own rather than in the
  queue heaps; a claim first takes the ones :func:`select_limited` allows (sorting the available
  limited jobs of its queues: linear in their number, fine for tests), then fills the remaining
  slots from the heaps.
"""

from __future__ import annotations

import heapq
import itertools
import secrets
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from jobq.backends.base import (
    WORKER_LOST,
    WORKER_LOST_DEAD,
    JobFilter,
    Lease,
    NewJob,
    Outcome,
    OutcomeKind,
    QueueSettings,
    WorkerInfo,
    bad_batch_dependency,
    dependency_failed,
    log_not_recorded,
    not_found,
    not_replaceable,
    not_retryable,
    queue_full,
    retry_conflict,
    select_limited,
    unique_held,
    unknown_dependency,
)
from jobq.clock import NO_DEADLINE_US, from_us, now_us, opt_from_us, td_us, to_us
from jobq.exceptions import ConfigurationError, InvalidTransition
from jobq.job import AttemptError, JobRecord
from jobq.states import ACTIVE_STATES, TERMINAL_STATES, Action, JobState, check

_Key = tuple[int, int, int, int]

#: States that count toward a queue's ``max_depth``.
WAITING_STATES = frozenset({JobState.SCHEDULED, JobState.BLOCKED, JobState.AVAILABLE})
#: Fields an ``on_conflict="replace"`` enqueue rewrites.
_REPLACED = (
    "args_json",
    "kwargs_json",
    "priority",
    "run_at",
    "deadline",
    "timeout",
    "max_attempts",
    "tags",
)


@dataclass(slots=True)
class _Row:
    record: JobRecord
    eff_priority: int
    run_at_us: int
    leased_until_us: int | None = None
    finished_us: int | None = None
    heap_key: _Key | None = field(default=None)
    concurrency_limit: int | None = None
    rate_limit: int | None = None
    rate_period_us: int | None = None

    @property
    def limited(self) -> bool:
        return self.record.concurrency_key is not None or self.record.rate_key is not None


@dataclass(slots=True)
class _Lock:
    owner: str | None
    token: int
    expires_us: int


@dataclass(slots=True)
class _Enqueue:
    """One enqueue call being planned: nothing in here is visible until it is applied."""

    now: int
    #: planned records by id: new jobs, and holders rewritten by on_conflict="replace"
    records: dict[int, JobRecord] = field(default_factory=dict)
    #: ids of new jobs -> (concurrency_limit, rate_limit, rate_period_us)
    new: dict[int, tuple[int | None, int | None, int | None]] = field(default_factory=dict)
    #: unique_key -> ids of new jobs holding it
    by_key: dict[str, list[int]] = field(default_factory=dict)


class MemoryBackend:
    """An in-process job store with the same contract as the database backends."""

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._lock = threading.RLock()
        self._rows: dict[int, _Row] = {}
        self._ids = itertools.count(1)
        self._heaps: dict[str, list[tuple[_Key, int]]] = {}
        #: available jobs with a concurrency or rate key (claimed through select_limited)
        self._limited: set[int] = set()
        #: unique_key -> the active job holding it
        self._unique: dict[str, int] = {}
        #: unique_key -> every stored job with that key (for uniqueness windows)
        self._by_key: dict[str, set[int]] = {}
        #: dependency id -> ids of the jobs that depend on it
        self._dependents: dict[int, set[int]] = {}
        #: queue -> number of scheduled, blocked and available jobs
        self._waiting: dict[str, int] = {}
        #: concurrency_key -> number of running jobs
        self._running: dict[str, int] = {}
        #: rate_key -> start times (us) of claims, and the longest period asked for that key
        self._starts: dict[str, list[int]] = {}
        self._rate_window: dict[str, int] = {}
        self._queues: dict[str, QueueSettings] = {}
        self._ticks: dict[str, datetime] = {}
        self._locks: dict[str, _Lock] = {}
        self._version = 0
        self._subscribers: list[Callable[[], None]] = []
        self._workers: dict[str, WorkerInfo] = {}

    # -- helpers -----------------------------------------------------------------------------

    def _move(self, row: _Row, action: Action, target: JobState, **changes: object) -> None:
        """The one place a stored job changes state; keeps every index in step."""
        check(action, row.record.state, target)
        old = row.record
        row.record = replace(old, state=target, **changes)  # type: ignore[arg-type]
        if old.unique_key is not None:
            if target in ACTIVE_STATES:
                self._unique[old.unique_key] = old.id
            elif self._unique.get(old.unique_key) == old.id:
                del self._unique[old.unique_key]
        if old.state in WAITING_STATES:
            self._waiting[old.queue] -= 1
        if target in WAITING_STATES:
            self._waiting[old.queue] = self._waiting.get(old.queue, 0) + 1
        key = old.concurrency_key
        if key is not None and old.state is JobState.RUNNING:
            self._running[key] -= 1
        if key is not None and target is JobState.RUNNING:
            self._running[key] = self._running.get(key, 0) + 1
        if old.state is JobState.AVAILABLE:
            self._limited.discard(old.id)
        if target is JobState.AVAILABLE:
            self._push(row)
        self._version += 1

    def _finish(
        self, row: _Row, action: Action, target: JobState, now_: int, **changes: object
    ) -> None:
        """Move a job into a terminal state and resolve its dependents in the same step."""
        row.finished_us = now_
        row.leased_until_us = None
        self._move(row, action, target, finished_at=from_us(now_), leased_until=None, **changes)
        self._settle(row.record.id, target, now_)

    def _settle(
        self, job_id: int, ended: JobState, now_: int, children: Iterable[int] | None = None
    ) -> None:
        """Job ``job_id`` ended ``ended`` (or was deleted: ``cancelled``): cancel the blocked
        dependents that do not allow failure, down the chain; unblock those whose every
        dependency is now resolved."""
        work = [(job_id, ended, self._dependents.get(job_id, ()) if children is None else children)]
        while work:
            dep_id, dep_ended, kids = work.pop()
            for child_id in sorted(kids):
                child = self._rows.get(child_id)
                if child is None or child.record.state is not JobState.BLOCKED:
                    continue
                c = child.record
                if dep_ended is not JobState.COMPLETED and not c.allow_failed:
                    err = dependency_failed(dep_id, dep_ended.value, c.attempt, from_us(now_))
                    row_children = self._dependents.get(child_id, ())
                    child.finished_us = now_
                    self._move(
                        child,
                        Action.CANCEL,
                        JobState.CANCELLED,
                        finished_at=from_us(now_),
                        errors=(*c.errors, err),
                    )
                    work.append((child_id, JobState.CANCELLED, row_children))
                elif all(self._resolved(d, c.allow_failed) for d in c.depends_on):
                    child.eff_priority = c.priority
                    target = JobState.SCHEDULED if child.run_at_us > now_ else JobState.AVAILABLE
                    self._move(child, Action.UNBLOCK, target)

    def _resolved(self, dep_id: int, allow_failed: bool) -> bool:
        """Whether dependency ``dep_id`` no longer holds its dependent back. A dependency that
        is gone was pruned after it finished, or deleted (which already cancelled the dependents
        that do not allow failure)."""
        row = self._rows.get(dep_id)
        if row is None or row.record.state is JobState.COMPLETED:
            return True
        return allow_failed and row.record.state in TERMINAL_STATES

    def _push(self, row: _Row) -> None:
        r = row.record
        key = (
            -row.eff_priority,
            to_us(r.deadline) if r.deadline else NO_DEADLINE_US,
            row.run_at_us,
            r.id,
        )
        row.heap_key = key
        if row.limited:
            self._limited.add(r.id)
        else:
            heapq.heappush(self._heaps.setdefault(r.queue, []), (key, r.id))

    def _live(self, queue: str) -> tuple[_Key, int] | None:
        heap = self._heaps.get(queue)
        while heap:
            key, job_id = heap[0]
            row = self._rows.get(job_id)
            if row and row.record.state is JobState.AVAILABLE and row.heap_key == key:
                return heap[0]
            heapq.heappop(heap)
        return None

    def _held(self, lease: Lease) -> _Row | None:
        row = self._rows.get(lease.job_id)
        if row and row.record.state is JobState.RUNNING and row.record.lease_token == lease.token:
            return row
        return None

    def _insert(self, row: _Row) -> None:
        r = row.record
        self._rows[r.id] = row
        if r.unique_key is not None:
            self._by_key.setdefault(r.unique_key, set()).add(r.id)
            if r.state in ACTIVE_STATES:
                self._unique[r.unique_key] = r.id
        for dep in r.depends_on:
            self._dependents.setdefault(dep, set()).add(r.id)
        if r.state in WAITING_STATES:
            self._waiting[r.queue] = self._waiting.get(r.queue, 0) + 1
        if r.state is JobState.AVAILABLE:
            self._push(row)
        self._version += 1

    def _forget(self, row: _Row) -> set[int]:
        """Remove a job that is not running from every index; returns its dependents."""
        r = row.record
        del self._rows[r.id]
        if r.unique_key is not None:
            if self._unique.get(r.unique_key) == r.id:
                del self._unique[r.unique_key]
            self._by_key[r.unique_key].discard(r.id)
            if not self._by_key[r.unique_key]:
                del self._by_key[r.unique_key]
        for dep in r.depends_on:
            self._dependents.get(dep, set()).discard(r.id)
        if r.state in WAITING_STATES:
            self._waiting[r.queue] -= 1
        self._limited.discard(r.id)
        self._version += 1
        return self._dependents.pop(r.id, set())

    def _notify(self) -> None:
        with self._lock:
            callbacks = list(self._subscribers)
        for cb in callbacks:
            cb()

    # -- enqueue -----------------------------------------------------------------------------

    def enqueue_many(
        self, jobs: Sequence[NewJob], *, now: datetime | None = None, connection: Any = None
    ) -> list[JobRecord]:
        if connection is not None:
            raise ConfigurationError(
                f"transactional enqueue (connection=...) needs PostgreSQL; {self.url} cannot "
                "join another connection's transaction"
            )
        with self._lock:
            out = self._enqueue(jobs, _now(now))
        self._notify()
        return out

    def _enqueue(self, jobs: Sequence[NewJob], now_: int) -> list[JobRecord]:
        """Plan the whole call (raising before anything is stored), then apply it."""
        tx = _Enqueue(now_)
        ids: list[int] = []
        for position, nj in enumerate(jobs):
            ids.append(self._plan(tx, position, nj, ids))
        self._check_depth(tx)
        for job_id, rec in tx.records.items():
            if job_id in tx.new:
                self._apply_new(rec, tx.new[job_id])
            else:
                row = self._rows[job_id]
                row.run_at_us = to_us(rec.run_at)
                row.eff_priority = rec.priority
                changes = {f: getattr(rec, f) for f in _REPLACED}
                self._move(row, Action.REPLACE, rec.state, **changes)
        self._version += 1
        return [self._rows[i].record for i in ids]

    def _plan(self, tx: _Enqueue, position: int, nj: NewJob, ids: list[int]) -> int:
        """Plan job ``position`` of the call; returns the id its record will have."""
        deps = self._dependency_ids(position, nj, ids)
        run_at = to_us(nj.run_at) if nj.run_at is not None else tx.now + td_us(nj.delay or _ZERO)
        if nj.unique_key is not None:
            holder = self._holder(tx, nj)
            if holder is not None:
                if nj.on_conflict == "raise":
                    raise unique_held(nj.unique_key, holder)
                if nj.on_conflict == "replace":
                    if holder.state not in (JobState.SCHEDULED, JobState.AVAILABLE):
                        raise not_replaceable(nj.unique_key, holder)
                    state = JobState.SCHEDULED if run_at > tx.now else JobState.AVAILABLE
                    tx.records[holder.id] = replace(
                        holder,
                        state=state,
                        args_json=nj.args_json,
                        kwargs_json=nj.kwargs_json,
                        priority=nj.priority,
                        run_at=from_us(run_at),
                        deadline=nj.deadline,
                        timeout=nj.timeout,
                        max_attempts=nj.max_attempts,
                        tags=nj.tags,
                    )
                return holder.id

        state = JobState.SCHEDULED if run_at > tx.now else JobState.AVAILABLE
        errors: tuple[AttemptError, ...] = ()
        finished_at = None
        waiting = False
        for dep in deps:
            dep_state = self._planned(tx, dep).state
            if dep_state is JobState.COMPLETED or (nj.allow_failed and dep_state.is_terminal):
                continue
            if dep_state.is_terminal:  # failed before we came: cancelled at once
                state, finished_at = JobState.CANCELLED, from_us(tx.now)
                errors = (dependency_failed(dep, dep_state.value, 0, finished_at),)
                break
            waiting = True
        if waiting and state is not JobState.CANCELLED:
            state = JobState.BLOCKED

        job_id = next(self._ids)
        tx.records[job_id] = JobRecord(
            id=job_id,
            queue=nj.queue,
            task=nj.task,
            args_json=nj.args_json,
            kwargs_json=nj.kwargs_json,
            priority=nj.priority,
            deadline=nj.deadline,
            run_at=from_us(run_at),
            attempt=0,
            max_attempts=nj.max_attempts,
            timeout=nj.timeout,
            unique_key=nj.unique_key,
            tags=nj.tags,
            state=state,
            worker_id=None,
            lease_token=None,
            leased_until=None,
            result_json=None,
            errors=errors,
            created_at=from_us(tx.now),
            started_at=None,
            finished_at=finished_at,
            concurrency_key=nj.concurrency_key,
            rate_key=nj.rate_key,
            depends_on=deps,
            allow_failed=nj.allow_failed,
            secret=nj.secret,
        )
        period = td_us(nj.rate_period) if nj.rate_period is not None else None
        tx.new[job_id] = (nj.concurrency_limit, nj.rate_limit, period)
        if nj.unique_key is not None:
            tx.by_key.setdefault(nj.unique_key, []).append(job_id)
        return job_id

    def _dependency_ids(self, position: int, nj: NewJob, ids: list[int]) -> tuple[int, ...]:
        for dep in nj.depends_on:
            if dep not in self._rows:
                raise unknown_dependency(dep)
        for index in nj.depends_on_batch:
            if not 0 <= index < position:
                raise bad_batch_dependency(position, index)
        return tuple(sorted({*nj.depends_on, *(ids[i] for i in nj.depends_on_batch)}))

    def _planned(self, tx: _Enqueue, job_id: int) -> JobRecord:
        planned = tx.records.get(job_id)
        return planned if planned is not None else self._rows[job_id].record

    def _holder(self, tx: _Enqueue, nj: NewJob) -> JobRecord | None:
        """The job ``nj``'s unique_key conflicts with: the active holder (stored or planned
        earlier in this call), else, with a window, the newest job created within it."""
        key = nj.unique_key
        assert key is not None
        for job_id in reversed(tx.by_key.get(key, [])):
            if tx.records[job_id].state in ACTIVE_STATES:
                return tx.records[job_id]
        if key in self._unique:
            return self._planned(tx, self._unique[key])
        if nj.unique_window is None:
            return None
        cutoff = tx.now - td_us(nj.unique_window)
        recent = [
            job_id
            for job_id in (*self._by_key.get(key, ()), *tx.by_key.get(key, ()))
            if to_us(self._planned(tx, job_id).created_at) > cutoff
        ]
        return self._planned(tx, max(recent)) if recent else None

    def _check_depth(self, tx: _Enqueue) -> None:
        added: dict[str, int] = {}
        for job_id in tx.new:
            rec = tx.records[job_id]
            if rec.state in WAITING_STATES:
                added[rec.queue] = added.get(rec.queue, 0) + 1
        for queue, n in added.items():
            max_depth = self._queues.get(queue, _DEFAULT_QUEUE).max_depth
            if max_depth is not None and self._waiting.get(queue, 0) + n > max_depth:
                raise queue_full(queue, max_depth)

    def _apply_new(self, rec: JobRecord, limits: tuple[int | None, int | None, int | None]) -> None:
        if rec.state is JobState.CANCELLED:  # a dependency had failed already
            check(Action.ENQUEUE, None, JobState.BLOCKED)
            check(Action.CANCEL, JobState.BLOCKED, JobState.CANCELLED)
        else:
            check(Action.ENQUEUE, None, rec.state)
        concurrency_limit, rate_limit, rate_period = limits
        row = _Row(
            rec,
            rec.priority,
            to_us(rec.run_at),
            finished_us=to_us(rec.finished_at) if rec.finished_at else None,
            concurrency_limit=concurrency_limit,
            rate_limit=rate_limit,
            rate_period_us=rate_period,
        )
        if rec.rate_key is not None and rate_period is not None:
            window = self._rate_window.get(rec.rate_key, 0)
            self._rate_window[rec.rate_key] = max(window, rate_period)
        self._insert(row)

    # -- worker path -------------------------------------------------------------------------

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
        now_ = _now(now)
        with self._lock:
            served = [q for q in queues if not self._queues.get(q, _DEFAULT_QUEUE).paused]
            out = [
                self._start(self._rows[job_id], worker_id, lease, now_)
                for job_id in self._select_limited(served, limit, queue_order, now_)
            ]
            lost_left = max_lost
            skipped: list[tuple[str, tuple[_Key, int]]] = []  # lost jobs over max_lost
            while len(out) < limit:
                heads = [(h, q) for q in served if (h := self._live(q)) is not None]
                if not heads:
                    break
                (_, job_id), queue = heads[0] if queue_order else min(heads)
                head = heapq.heappop(self._heaps[queue])
                row = self._rows[job_id]
                if lost_left is not None and row.record.lost > 0:
                    if lost_left <= 0:
                        skipped.append((queue, head))
                        continue
                    lost_left -= 1
                out.append(self._start(row, worker_id, lease, now_))
            for queue, head in skipped:
                heapq.heappush(self._heaps[queue], head)
        return out

    def _select_limited(
        self, served: list[str], limit: int, queue_order: bool, now_: int
    ) -> list[int]:
        """The available limited jobs of ``served`` that the limits let this claim take."""
        rank = {q: i for i, q in enumerate(served)}
        rows = [self._rows[i] for i in self._limited if self._rows[i].record.queue in rank]
        if not rows or limit <= 0:
            return []
        rows.sort(
            key=lambda row: (
                rank[row.record.queue] if queue_order else 0,
                row.heap_key or (0, 0, 0, 0),
            )
        )
        started: dict[str, int] = {}
        for row in rows:
            key, period = row.record.rate_key, row.rate_period_us
            if key is not None and period is not None and key not in started:
                started[key] = sum(1 for t in self._recent_starts(key, now_) if t > now_ - period)
        candidates = [
            (
                row.record.id,
                row.record.concurrency_key,
                row.concurrency_limit,
                row.record.rate_key,
                row.rate_limit,
            )
            for row in rows
        ]
        return select_limited(candidates, self._running, started, limit)

    def _recent_starts(self, key: str, now_: int) -> list[int]:
        """Start times of ``key`` still inside the longest window asked for it (older ones are
        dropped as we go)."""
        cutoff = now_ - self._rate_window.get(key, 0)
        starts = [t for t in self._starts.get(key, ()) if t > cutoff]
        self._starts[key] = starts
        return starts

    def _start(self, row: _Row, worker_id: str, lease: timedelta, now_: int) -> JobRecord:
        r = row.record
        row.leased_until_us = now_ + td_us(lease)
        self._move(
            row,
            Action.CLAIM,
            JobState.RUNNING,
            attempt=r.attempt + 1,
            worker_id=worker_id,
            lease_token=secrets.token_hex(8),
            leased_until=from_us(row.leased_until_us),
            started_at=from_us(now_),
        )
        if r.rate_key is not None:
            self._starts.setdefault(r.rate_key, []).append(now_)
        return row.record

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
        with self._lock:
            done = self.record_outcomes(outcomes, now=now)
            return done, self.claim(
                queues,
                limit,
                worker_id=worker_id,
                lease=lease,
                queue_order=queue_order,
                now=now,
                max_lost=max_lost,
            )

    def heartbeat(
        self, leases: Sequence[Lease], *, lease: timedelta, now: datetime | None = None
    ) -> set[int]:
        until = _now(now) + td_us(lease)
        held: set[int] = set()
        with self._lock:
            for lease_ in leases:
                row = self._held(lease_)
                if row is not None:
                    row.leased_until_us = until
                    row.record = replace(row.record, leased_until=from_us(until))
                    held.add(lease_.job_id)
        return held

    def record_outcomes(
        self, outcomes: Sequence[Outcome], *, now: datetime | None = None
    ) -> set[int]:
        now_ = _now(now)
        done: set[int] = set()
        with self._lock:
            for o in outcomes:
                row = self._held(o.lease)
                if row is None:
                    log_not_recorded(o)
                    continue
                r = row.record
                errors = r.errors + ((o.error,) if o.error else ())
                if o.kind in (OutcomeKind.RETRY, OutcomeKind.SNOOZED):
                    run_at = to_us(o.run_at) if o.run_at else now_ + td_us(o.delay or _ZERO)
                    row.run_at_us = run_at
                    row.eff_priority = r.priority
                    row.leased_until_us = None
                    target = JobState.SCHEDULED if run_at > now_ else JobState.AVAILABLE
                    extra = 1 if o.kind is OutcomeKind.SNOOZED else 0
                    self._move(
                        row,
                        o.kind.action,
                        target,
                        run_at=from_us(run_at),
                        leased_until=None,
                        errors=errors,
                        max_attempts=r.max_attempts + extra,
                    )
                else:
                    self._finish(
                        row,
                        o.kind.action,
                        JobState(o.kind.value),
                        now_,
                        result_json=o.result_json,
                        errors=errors,
                    )
                done.add(r.id)
        return done

    def release(self, leases: Sequence[Lease], *, now: datetime | None = None) -> set[int]:
        done: set[int] = set()
        with self._lock:
            for lease_ in leases:
                row = self._held(lease_)
                if row is not None:
                    row.leased_until_us = None
                    self._move(
                        row,
                        Action.RELEASE,
                        JobState.AVAILABLE,
                        attempt=max(row.record.attempt - 1, 0),
                        worker_id=None,
                        leased_until=None,
                        started_at=None,
                    )
                    done.add(lease_.job_id)
        return done

    def held(self, leases: Sequence[Lease]) -> set[int]:
        with self._lock:
            return {lease.job_id for lease in leases if self._held(lease) is not None}

    def set_progress(self, lease: Lease, fraction: float | None, message: str | None) -> bool:
        with self._lock:
            row = self._held(lease)
            if row is None:
                return False
            row.record = replace(row.record, progress=fraction, progress_message=message)
            self._version += 1
            return True

    # -- operator actions --------------------------------------------------------------------

    def cancel(self, job_id: int, *, now: datetime | None = None) -> tuple[bool, JobRecord]:
        now_ = _now(now)
        with self._lock:
            row = self._rows.get(job_id)
            if row is None:
                raise not_found(job_id)
            if row.record.state not in ACTIVE_STATES:
                return False, row.record
            self._cancel(row, now_)
            self._settle(job_id, JobState.CANCELLED, now_)
            return True, row.record

    def _cancel(self, row: _Row, now_: int) -> None:
        """Cancel through the API (dependents are settled by the caller)."""
        err = AttemptError(0, from_us(now_), "Cancelled", "cancelled through the API")
        row.finished_us = now_
        row.leased_until_us = None
        self._move(
            row,
            Action.CANCEL,
            JobState.CANCELLED,
            finished_at=from_us(now_),
            leased_until=None,
            errors=(*row.record.errors, err),
        )

    def cancel_many(self, filter: JobFilter, *, now: datetime | None = None) -> int:
        now_ = _now(now)
        with self._lock:
            # first every job the filter matches, then the cascade, as one UPDATE would do
            doomed = [row for row in self._matching(filter) if row.record.state in ACTIVE_STATES]
            for row in doomed:
                self._cancel(row, now_)
            for row in doomed:
                self._settle(row.record.id, JobState.CANCELLED, now_)
        return len(doomed)

    def retry(self, job_id: int, *, now: datetime | None = None) -> JobRecord:
        now_ = _now(now)
        with self._lock:
            row = self._rows.get(job_id)
            if row is None:
                raise not_found(job_id)
            r = row.record
            if r.state not in TERMINAL_STATES:
                raise not_retryable(job_id, r.state.value)
            if r.unique_key is not None and r.unique_key in self._unique:
                raise retry_conflict(job_id)
            self._retry(row, now_)
            return row.record

    def _retry(self, row: _Row, now_: int) -> None:
        r = row.record
        row.run_at_us = now_
        row.eff_priority = r.priority
        row.finished_us = None
        self._move(
            row,
            Action.MANUAL_RETRY,
            JobState.AVAILABLE,
            run_at=from_us(now_),
            max_attempts=max(r.max_attempts, r.attempt + 1),
            finished_at=None,
            result_json=None,
            worker_id=None,
            leased_until=None,
        )

    def retry_many(self, filter: JobFilter, *, now: datetime | None = None) -> int:
        if filter.state is not None and not filter.state.is_terminal:
            raise InvalidTransition(
                f"retry_many cannot retry {filter.state.value} jobs: only completed, dead, "
                "cancelled or expired jobs can be retried (leave the state out for all four)"
            )
        now_ = _now(now)
        n = 0
        with self._lock:
            for row in self._matching(filter):
                r = row.record
                if r.state not in TERMINAL_STATES:
                    continue
                if r.unique_key is not None and r.unique_key in self._unique:
                    continue
                self._retry(row, now_)
                n += 1
        return n

    def delete(self, job_id: int, *, now: datetime | None = None) -> bool:
        now_ = _now(now)
        with self._lock:
            row = self._rows.get(job_id)
            if row is None:
                return False
            if row.record.state is JobState.RUNNING:
                raise InvalidTransition(
                    f"job {job_id} is running and cannot be deleted; cancel it first"
                )
            was_active = row.record.state in ACTIVE_STATES
            dependents = self._forget(row)
            if was_active:  # counts as cancelled for its dependents
                self._settle(job_id, JobState.CANCELLED, now_, dependents)
        return True

    # -- maintenance -------------------------------------------------------------------------

    def promote_due(self, *, now: datetime | None = None) -> int:
        now_ = _now(now)
        n = 0
        with self._lock:
            for row in self._rows.values():
                if row.record.state is JobState.SCHEDULED and row.run_at_us <= now_:
                    row.eff_priority = row.record.priority
                    self._move(row, Action.PROMOTE, JobState.AVAILABLE)
                    n += 1
        return n

    def rescue_expired(self, *, now: datetime | None = None) -> int:
        now_ = _now(now)
        n = 0
        with self._lock:
            for row in list(self._rows.values()):
                r = row.record
                if (
                    r.state is not JobState.RUNNING
                    or row.leased_until_us is None
                    or row.leased_until_us >= now_
                ):
                    continue
                if r.attempt >= r.max_attempts:
                    times = 1 + sum(1 for e in r.errors if e.type == "WorkerLost")
                    message = WORKER_LOST_DEAD.format(times=times)
                else:
                    message = WORKER_LOST.format(worker=r.worker_id or "?")
                err = AttemptError(r.attempt, from_us(now_), "WorkerLost", message)

                row.leased_until_us = None
                row.eff_priority = r.priority
                if r.attempt >= r.max_attempts:
                    self._finish(
                        row,
                        Action.RESCUE,
                        JobState.DEAD,
                        now_,
                        errors=(*r.errors, err),
                        lost=r.lost + 1,
                    )
                else:
                    self._move(
                        row,
                        Action.RESCUE,
                        JobState.AVAILABLE,
                        errors=(*r.errors, err),
                        leased_until=None,
                        lost=r.lost + 1,
                    )
                n += 1
        return n

    def age(self, *, every: timedelta, max_boost: int, now: datetime | None = None) -> int:
        now_, every_us = _now(now), td_us(every)
        if every_us <= 0 or max_boost <= 0:
            return 0
        n = 0
        with self._lock:
            for row in self._rows.values():
                r = row.record
                if r.state is not JobState.AVAILABLE:
                    continue
                boosted = r.priority + min(max_boost, max(0, now_ - row.run_at_us) // every_us)
                if boosted > row.eff_priority:
                    row.eff_priority = boosted
                    self._push(row)
                    n += 1
            self._version += n > 0
        return n

    def prune(
        self,
        *,
        older_than: timedelta,
        states: frozenset[JobState],
        now: datetime | None = None,
        limit: int = 10_000,
        keep: int = 0,
    ) -> int:
        cutoff = _now(now) - td_us(older_than)
        with self._lock:
            by_state: dict[JobState, list[_Row]] = {}
            for row in self._rows.values():
                if row.record.state in states & TERMINAL_STATES and row.finished_us is not None:
                    by_state.setdefault(row.record.state, []).append(row)
            doomed: list[_Row] = []
            for rows in by_state.values():
                rows.sort(key=lambda row: (row.finished_us or 0, row.record.id), reverse=True)
                doomed += [row for row in rows[keep:] if (row.finished_us or 0) < cutoff]
            doomed.sort(key=lambda row: (row.finished_us or 0, row.record.id))
            for row in doomed[:limit]:
                self._forget(row)
        return len(doomed[:limit])

    def next_due(self) -> datetime | None:
        with self._lock:
            due = [
                row.run_at_us
                for row in self._rows.values()
                if row.record.state is JobState.SCHEDULED
            ]
        return opt_from_us(min(due)) if due else None

    # -- queues ------------------------------------------------------------------------------

    def set_queue(
        self, queue: str, *, paused: bool | None = None, max_depth: int | bool | None = False
    ) -> QueueSettings:
        with self._lock:
            settings = self._queues.get(queue, _DEFAULT_QUEUE)
            if paused is not None:
                settings = replace(settings, paused=paused)
            if max_depth is not False:
                settings = replace(settings, max_depth=max_depth)
            self._queues[queue] = settings
            self._version += 1
            return settings

    def queue_settings(self) -> dict[str, QueueSettings]:
        with self._lock:
            return dict(self._queues)

    # -- periodic jobs -----------------------------------------------------------------------

    def enqueue_tick(
        self, name: str, tick: datetime, job: NewJob, *, now: datetime | None = None
    ) -> JobRecord | None:
        with self._lock:
            last = self._ticks.get(name)
            if last is not None and last >= tick:
                return None
            (record,) = self._enqueue([job], _now(now))
            self._ticks[name] = tick
        self._notify()
        return record

    def cron_ticks(self) -> dict[str, datetime]:
        with self._lock:
            return dict(self._ticks)

    # -- distributed locks -------------------------------------------------------------------

    def acquire_lock(
        self, name: str, owner: str, ttl: timedelta, *, now: datetime | None = None
    ) -> int | None:
        now_ = _now(now)
        with self._lock:
            lock = self._locks.get(name)
            if lock is not None and lock.owner is not None and lock.expires_us >= now_:
                return None
            token = (lock.token if lock else 0) + 1
            self._locks[name] = _Lock(owner, token, now_ + td_us(ttl))
            return token

    def renew_lock(
        self, name: str, token: int, ttl: timedelta, *, now: datetime | None = None
    ) -> bool:
        now_ = _now(now)
        with self._lock:
            lock = self._locks.get(name)
            if lock is None or lock.owner is None or lock.token != token:
                return False
            lock.expires_us = now_ + td_us(ttl)
            return True

    def release_lock(self, name: str, token: int) -> bool:
        with self._lock:
            lock = self._locks.get(name)
            if lock is None or lock.owner is None or lock.token != token:
                return False
            lock.owner = None  # the token stays: the next holder's is larger
            return True

    # -- reading -----------------------------------------------------------------------------

    def get(self, job_id: int) -> JobRecord | None:
        with self._lock:
            row = self._rows.get(job_id)
            return row.record if row else None

    def _matching(self, filter: JobFilter) -> list[_Row]:
        """Stored jobs matching ``filter``, oldest first."""
        needle = filter.search.lower() if filter.search is not None else None
        return [
            row
            for _, row in sorted(self._rows.items())
            if (filter.queue is None or row.record.queue == filter.queue)
            and (filter.state is None or row.record.state is filter.state)
            and (filter.task is None or row.record.task == filter.task)
            and (
                needle is None
                or needle in row.record.args_json.lower()
                or needle in row.record.kwargs_json.lower()
            )
        ]

    def list_jobs(
        self, filter: JobFilter, *, limit: int = 50, before_id: int | None = None
    ) -> list[JobRecord]:
        with self._lock:
            rows = self._matching(filter)
        records = [row.record for row in reversed(rows)]
        if before_id is not None:
            records = [r for r in records if r.id < before_id]
        return records[:limit]

    def stats(self) -> dict[str, dict[JobState, int]]:
        out: dict[str, dict[JobState, int]] = {}
        with self._lock:
            for row in self._rows.values():
                counts = out.setdefault(row.record.queue, {})
                counts[row.record.state] = counts.get(row.record.state, 0) + 1
        return out

    def register_worker(self, info: WorkerInfo) -> None:
        now = from_us(now_us())
        with self._lock:
            self._workers[info.id] = replace(info, started_at=now, heartbeat_at=now)

    def worker_heartbeat(self, worker_id: str, jobs_run: int) -> None:
        with self._lock:
            info = self._workers.get(worker_id)
            if info is not None:
                self._workers[worker_id] = replace(
                    info, heartbeat_at=from_us(now_us()), jobs_run=jobs_run
                )

    def unregister_worker(self, worker_id: str) -> None:
        with self._lock:
            self._workers.pop(worker_id, None)

    def list_workers(self) -> list[WorkerInfo]:
        with self._lock:
            return sorted(self._workers.values(), key=lambda w: w.started_at, reverse=True)

    def prune_workers(self, *, older_than: timedelta, now: datetime | None = None) -> int:
        cutoff = from_us(_now(now)) - older_than
        with self._lock:
            stale = [w for w, info in self._workers.items() if info.heartbeat_at < cutoff]
            for w in stale:
                del self._workers[w]
        return len(stale)

    def now(self) -> datetime:
        return from_us(now_us())

    def try_lead(self) -> bool:
        return True

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    def change_token(self) -> int:
        return self._version

    def close(self) -> None:
        pass


_ZERO = timedelta(0)
_DEFAULT_QUEUE = QueueSettings()


def _now(now: datetime | None) -> int:
    return now_us() if now is None else to_us(now)
