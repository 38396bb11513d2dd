"""Memory backend (``memory://``): the whole contract in one process, for users' tests.

Jobs live in a dict guarded by one lock; each queue keeps a heap in claim order with lazy
deletion, so claims stay O(log n) as on the database backends. Every state change goes through
:func:`jobq.states.check`, so this backend doubles as an executable reading of the table.
"""

from __future__ import annotations

import heapq
import itertools
import secrets
import threading
from collections.abc import Callable, Sequence
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
    WorkerInfo,
    log_not_recorded,
    not_found,
    not_retryable,
    retry_conflict,
)
from jobq.clock import NO_DEADLINE_US, from_us, now_us, opt_from_us, td_us, to_us
from jobq.exceptions import ConfigurationError
from jobq.job import AttemptError, JobRecord
from jobq.states import ACTIVE_STATES, TERMINAL_STATES, Action, JobState, check

_Key = tuple[int, int, int, int]


@dataclass(slots=True)
class _Row:
    record: JobRecord
    eff_priority: int
    run_at_us: int
    leased_until_us: int | None = None
    finished_us: int | None = None
    heap_key: _Key | None = field(default=None)


class MemoryBackend:
    """An in-process job store with the same contract as the database backends."""

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._lock = threading.RLock()
        self._rows: dict[int, _Row] = {}
        self._ids = itertools.count(1)
        self._heaps: dict[str, list[tuple[_Key, int]]] = {}
        self._unique: dict[str, int] = {}
        self._version = 0
        self._subscribers: list[Callable[[], None]] = []
        self._workers: dict[str, WorkerInfo] = {}

    # -- helpers -----------------------------------------------------------------------------

    def _move(self, row: _Row, action: Action, target: JobState, **changes: object) -> None:
        check(action, row.record.state, target)
        old = row.record
        row.record = replace(old, state=target, **changes)  # type: ignore[arg-type]
        if old.unique_key is not None:
            if target in ACTIVE_STATES:
                self._unique[old.unique_key] = old.id
            elif self._unique.get(old.unique_key) == old.id:
                del self._unique[old.unique_key]
        if target is JobState.AVAILABLE:
            self._push(row)
        self._version += 1

    def _push(self, row: _Row) -> None:
        r = row.record
        key = (
            -row.eff_priority,
            to_us(r.deadline) if r.deadline else NO_DEADLINE_US,
            row.run_at_us,
            r.id,
        )
        row.heap_key = key
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

    # -- enqueue -----------------------------------------------------------------------------

    def enqueue_many(
        self, jobs: Sequence[NewJob], *, now: datetime | None = None, connection: Any = None
    ) -> list[JobRecord]:
        if connection is not None:
            raise ConfigurationError(
                f"transactional enqueue (connection=...) needs PostgreSQL; {self.url} cannot "
                "join another connection's transaction"
            )
        now_ = _now(now)
        out: list[JobRecord] = []
        with self._lock:
            for nj in jobs:
                if nj.unique_key is not None and nj.unique_key in self._unique:
                    out.append(self._rows[self._unique[nj.unique_key]].record)
                    continue
                run_at = (
                    to_us(nj.run_at)
                    if nj.run_at is not None
                    else now_ + (td_us(nj.delay) if nj.delay else 0)
                )
                state = JobState.SCHEDULED if run_at > now_ else JobState.AVAILABLE
                check(Action.ENQUEUE, None, state)
                record = JobRecord(
                    id=next(self._ids),
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
                    errors=(),
                    created_at=from_us(now_),
                    started_at=None,
                    finished_at=None,
                )
                row = _Row(record, nj.priority, run_at)
                self._rows[record.id] = row
                if nj.unique_key is not None:
                    self._unique[nj.unique_key] = record.id
                if state is JobState.AVAILABLE:
                    self._push(row)
                out.append(record)
            self._version += 1
            callbacks = list(self._subscribers)
        for cb in callbacks:
            cb()
        return out

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
    ) -> list[JobRecord]:
        now_ = _now(now)
        out: list[JobRecord] = []
        with self._lock:
            while len(out) < limit:
                heads = [(h, q) for q in queues if (h := self._live(q)) is not None]
                if not heads:
                    break
                (_, job_id), queue = heads[0] if queue_order else min(heads)
                heapq.heappop(self._heaps[queue])
                row = self._rows[job_id]
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
                out.append(row.record)
        return out

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
        with self._lock:
            done = self.record_outcomes(outcomes, now=now)
            return done, self.claim(
                queues, limit, worker_id=worker_id, lease=lease, queue_order=queue_order, now=now
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
                    run_at = to_us(o.run_at) if o.run_at else now_ + td_us(o.delay or timedelta(0))
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
                    target = JobState(o.kind.value)
                    row.finished_us = now_
                    row.leased_until_us = None
                    self._move(
                        row,
                        o.kind.action,
                        target,
                        result_json=o.result_json,
                        errors=errors,
                        finished_at=from_us(now_),
                        leased_until=None,
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

    # -- operator actions --------------------------------------------------------------------

    def cancel(self, job_id: int, *, now: datetime | None = None) -> tuple[bool, JobRecord]:
        now_ = _now(now)
        with self._lock:
            row = self._rows.get(job_id)
            if row is None:
                raise not_found(job_id)
            if row.record.state not in ACTIVE_STATES:
                return False, row.record
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
            return True, row.record

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
            return row.record

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
            for row in self._rows.values():
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
                    row.finished_us = now_
                    self._move(
                        row,
                        Action.RESCUE,
                        JobState.DEAD,
                        errors=(*r.errors, err),
                        leased_until=None,
                        finished_at=from_us(now_),
                    )
                else:
                    self._move(
                        row,
                        Action.RESCUE,
                        JobState.AVAILABLE,
                        errors=(*r.errors, err),
                        leased_until=None,
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
    ) -> int:
        cutoff = _now(now) - td_us(older_than)
        with self._lock:
            doomed = [
                job_id
                for job_id, row in self._rows.items()
                if row.record.state in states & TERMINAL_STATES
                and row.finished_us is not None
                and row.finished_us < cutoff
            ][:limit]
            for job_id in doomed:
                del self._rows[job_id]
        return len(doomed)

    def next_due(self) -> datetime | None:
        with self._lock:
            due = [
                row.run_at_us
                for row in self._rows.values()
                if row.record.state is JobState.SCHEDULED
            ]
        return opt_from_us(min(due)) if due else None

    # -- reading -----------------------------------------------------------------------------

    def get(self, job_id: int) -> JobRecord | None:
        with self._lock:
            row = self._rows.get(job_id)
            return row.record if row else None

    def list_jobs(
        self, filter: JobFilter, *, limit: int = 50, before_id: int | None = None
    ) -> list[JobRecord]:
        with self._lock:
            records = [row.record for row in self._rows.values()]
        out = []
        for r in sorted(records, key=lambda r: -r.id):
            if (
                (before_id is not None and r.id >= before_id)
                or (filter.queue is not None and r.queue != filter.queue)
                or (filter.state is not None and r.state is not filter.state)
                or (filter.task is not None and r.task != filter.task)
            ):
                continue
            out.append(r)
            if len(out) >= limit:
                break
        return out

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


def _now(now: datetime | None) -> int:
    return now_us() if now is None else to_us(now)
