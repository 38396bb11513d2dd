"""The worker: one coordinator thread and T executor threads in this process.

The coordinator owns every conversation with the backend: it claims in batches sized to the free
slots, renews all held leases in one heartbeat, records finished attempts in batches, and runs
maintenance (promote due jobs, rescue expired leases, aging, pruning). Executor threads only run
jobs and hand their outcomes back, so a slow task never delays a lease renewal.

Crash semantics (at-least-once): an attempt that finished but whose outcome was not yet recorded
when the process died runs again after its lease expires.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import queue
import random
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import FrameType
from typing import TYPE_CHECKING

from jobq import observe
from jobq.backends.base import Lease, Outcome, OutcomeKind, WorkerInfo
from jobq.clock import utcnow
from jobq.context import RunningJob
from jobq.control import Cancelled
from jobq.exceptions import ConfigurationError, JobqError
from jobq.executor import execute, execute_async, timed_out
from jobq.job import JobRecord
from jobq.logs import job_fields
from jobq.options import validate_queue
from jobq.states import TERMINAL_STATES, JobState

if TYPE_CHECKING:
    from jobq.app import App
    from jobq.periodic import Scheduler

log = logging.getLogger("jobq.worker")

#: How long a finished attempt's outcome may wait to share a commit with others while the
#: threads still have claimed jobs queued (see ``Worker._exchange``).
ACK_DELAY = 0.005
#: Claimed jobs waiting for a thread, at most, per thread (the default prefetch): enough that
#: the threads have work while the next batch is claimed, never a hoard that other workers
#: could have run.
PREFETCH_PER_THREAD = 2
#: Longest pause between two looks at the change token of an idle worker (seconds): the
#: latency a commit of another process may wait before it is seen, on SQLite.
IDLE_POLL_MAX = 0.02
#: For this long after it last found work, an idle worker looks every millisecond before
#: backing off: steady traffic is seen at once, a long-idle worker stays near idle.
IDLE_BRISK = 0.05


@dataclass(frozen=True, slots=True)
class Aging:
    """Waiting raises a job's effective priority by one per ``every``, by at most ``max_boost``."""

    every: timedelta = timedelta(minutes=5)
    max_boost: int = 10


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """How a worker runs. Durations are ``timedelta``; ``weights`` maps queue → weight."""

    queues: tuple[str, ...] = ("default",)
    threads: int = 8
    lease: timedelta = timedelta(seconds=30)
    burst: bool = False
    grace: timedelta = timedelta(seconds=30)
    weights: Mapping[str, int] | None = None
    prefetch: int | None = None
    poll_interval: timedelta = timedelta(seconds=1)
    maintenance_interval: timedelta = timedelta(seconds=1)
    retention: timedelta | None = timedelta(days=7)
    aging: Aging | None = Aging()
    #: Recycle (stop gracefully, reporting exit_reason "recycle") after this many attempts.
    max_jobs: int | None = None
    #: Recycle once this process's resident memory exceeds this many MiB.
    max_memory_mb: int | None = None
    #: Recycle when a thread abandoned to a timed-out job is still stuck after this long
    #: (only a fresh process gets rid of a thread that will not return). None: never.
    stuck_grace: timedelta | None = None
    #: Autoscaling: run between ``min_threads`` and ``threads`` executor threads, adding one
    #: while all are busy and more work is waiting, retiring one after ``scale_down_after``
    #: idle. None: always ``threads``.
    min_threads: int | None = None
    scale_down_after: timedelta = timedelta(seconds=30)
    #: How many ``async def`` jobs run at once on this process's event loop (they take no
    #: thread; sync and async jobs may share a queue).
    async_limit: int = 100
    #: A job cancelled while running is told so (``current_job().cancel_requested``; async
    #: tasks are cancelled at once); a thread task still running after this long gets
    #: ``jobq.Cancelled`` raised into it and its thread is replaced.
    cancel_grace: timedelta = timedelta(seconds=10)
    #: How often running jobs are checked for cancellation, and progress is written.
    watch_interval: timedelta = timedelta(seconds=0.5)
    #: Keep finished jobs this long (one age for all, or per state; None: forever) ...
    retention_by_state: Mapping[JobState, timedelta | None] | None = None
    #: ... and at most this many finished jobs per state (None: no count limit).
    retention_count: int | None = None
    #: Periodic schedules this worker's leader enqueues (see jobq.periodic).
    scheduler: Scheduler | None = None
    #: Serve this process's Prometheus metrics on this port (see jobq.metrics). None: don't.
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        if not self.queues:
            raise ConfigurationError("a worker needs at least one queue, e.g. queues=['default']")
        for q in self.queues:
            try:
                validate_queue(q)
            except JobqError as exc:
                raise ConfigurationError(str(exc)) from None
        if (
            isinstance(self.threads, bool)
            or not isinstance(self.threads, int)
            or not (1 <= self.threads <= 1024)
        ):
            raise ConfigurationError(f"threads must be an int from 1 to 1024, got {self.threads!r}")
        if self.lease < timedelta(seconds=1):
            raise ConfigurationError(
                f"lease must be at least 1 second, got {self.lease.total_seconds():g}s; the "
                "worker renews it every third of it, so very short leases let jobs run twice "
                "under load"
            )
        if (
            isinstance(self.async_limit, bool)
            or not isinstance(self.async_limit, int)
            or not (1 <= self.async_limit <= 100_000)
        ):
            raise ConfigurationError(
                f"async_limit must be an int from 1 to 100000, got {self.async_limit!r}"
            )
        if self.min_threads is not None and (
            isinstance(self.min_threads, bool)
            or not isinstance(self.min_threads, int)
            or not 1 <= self.min_threads <= self.threads
        ):
            raise ConfigurationError(
                f"min_threads must be an int from 1 to threads ({self.threads}), got "
                f"{self.min_threads!r}"
            )
        for name in ("max_jobs", "max_memory_mb"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ConfigurationError(f"{name} must be an int >= 1 or None, got {value!r}")
        if self.weights is not None:
            for q, w in self.weights.items():
                if q not in self.queues or isinstance(w, bool) or not isinstance(w, int) or w < 1:
                    raise ConfigurationError(
                        f"weight {w!r} for queue {q!r}: weights must be ints >= 1 for queues the "
                        f"worker serves ({', '.join(self.queues)})"
                    )


@dataclass(slots=True)
class WorkerSummary:
    """What one ``run()`` did."""

    claimed: int = 0
    outcomes: dict[OutcomeKind, int] = field(default_factory=dict)
    lost_leases: int = 0
    timed_out: int = 0
    released: int = 0
    #: Why run() returned: "stopped" (stop() or a signal), "burst" (queues empty) or
    #: "recycle" (a max_jobs / max_memory_mb / stuck-thread limit; see recycle_reason).
    exit_reason: str = "stopped"
    recycle_reason: str = ""

    @property
    def finished(self) -> int:
        """Attempts whose outcome was recorded, whatever it was."""
        return sum(self.outcomes.values())

    @property
    def completed(self) -> int:
        return self.outcomes.get(OutcomeKind.COMPLETED, 0)


@dataclass(slots=True)
class _Held:
    """A job this process has claimed and not yet acknowledged."""

    record: JobRecord
    lease: Lease
    started: float | None = None  # monotonic, once a thread picks it up
    thread: str | None = None
    timed_out: bool = False
    lost: bool = False
    is_async: bool = False
    future: concurrent.futures.Future[None] | None = None  # an async job's run on the loop
    job: RunningJob | None = None  # what current_job() returns inside the task
    ident: int | None = None  # the executor thread's id, while it runs the job
    lost_at: float | None = None  # monotonic time the lease was found gone
    progress: tuple[float | None, str | None] | None = None  # reported, not yet written


class Worker:
    """Runs jobs from ``config.queues`` until stopped (or, with ``burst``, until none are left).

    Use :meth:`jobq.App.run_worker` rather than building one directly.
    """

    def __init__(self, app: App, config: WorkerConfig) -> None:
        self.app = app
        self.backend = app.backend
        self.config = config
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"
        self.summary = WorkerSummary()
        self._inbox: queue.SimpleQueue[JobRecord | None] = queue.SimpleQueue()
        self._held: dict[int, _Held] = {}
        self._acks: list[Outcome] = []
        self._acks_since = 0.0  # monotonic time the oldest unrecorded outcome was handed back
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._abandoned: dict[str, float] = {}  # thread name -> monotonic time abandoned
        self._maybe_work = True
        self._next_aging = 0.0
        self._next_cron: datetime | None = None  # when the app's scheduler next has work
        self._next_promote = float("inf")
        self._down_since: float | None = None
        self._retry_delay = 0.0
        self._retry_at = 0.0
        self._prefetch = (
            config.prefetch if config.prefetch is not None else PREFETCH_PER_THREAD * config.threads
        )
        self._live_threads = 0  # executor threads taking jobs (not the abandoned ones)
        self._busy_threads = 0
        self._last_scale_up = 0.0
        # async jobs get slots of their own, only if the app has async tasks at all
        self._async_capacity = (
            config.async_limit if any(t.is_async for t in app._tasks.values()) else 0
        )
        self._event_loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._async_slots: asyncio.Semaphore | None = None

    # -- public ------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop claiming; running jobs finish within the grace period. Safe from any thread."""
        self._stopping.set()
        self._wake.set()

    def notify(self) -> None:
        """Wake an idle worker: new jobs may be available (called on local enqueues)."""
        self._maybe_work = True
        self._wake.set()

    def run(self) -> WorkerSummary:
        """Run until stopped; returns what was done. Blocks the calling thread."""
        cfg = self.config
        log.info(
            "worker %s starting: queues=%s threads=%d lease=%ss",
            self.worker_id,
            ",".join(cfg.queues),
            cfg.threads,
            cfg.lease.total_seconds(),
        )
        stop_metrics = observe.serve_metrics(cfg.metrics_port, cfg.metrics_host)
        for _ in range(cfg.min_threads or cfg.threads):
            self._start_thread()
        self.app._workers.add(self)
        unsubscribe = self.backend.subscribe(self.notify)
        self._register()
        try:
            self._loop()
        finally:
            stop_metrics()
            unsubscribe()
            self.app._workers.discard(self)
            self._shutdown()
            self._unregister()
        log.info("worker %s stopped: %s", self.worker_id, self.summary)
        return self.summary

    # -- coordinator -------------------------------------------------------------------------

    def _loop(self) -> None:
        cfg = self.config
        heartbeat_every = cfg.lease.total_seconds() / 3
        next_heartbeat = time.monotonic() + heartbeat_every
        next_maintenance = 0.0
        next_poll = 0.0
        next_watch = 0.0
        token = self.backend.change_token()
        idle_step = 0.001
        active_at = 0.0
        while not self._stopping.is_set():
            if self._down_since is not None and time.monotonic() < self._retry_at:
                self._stopping.wait(self._retry_at - time.monotonic())
                continue
            self._wake.clear()
            now = time.monotonic()
            if now >= next_maintenance:
                self._maintain()
                self._check_limits(now)
                next_maintenance = now + cfg.maintenance_interval.total_seconds()
            # a failed renewal is retried as soon as the store is back, not a third of a lease
            # later (the backoff above paces the retries)
            if now >= next_heartbeat and self._heartbeat():
                next_heartbeat = now + heartbeat_every
            if now >= next_watch:
                self._watch(now)
                next_watch = now + cfg.watch_interval.total_seconds()
            self._check_timeouts(now)
            if now >= self._next_promote:
                self._next_promote = float("inf")
                self._promote()
            if now >= next_poll:
                self._maybe_work = True
                next_poll = now + cfg.poll_interval.total_seconds()
            # scale first, so that this very claim fetches work for a new thread (one that found
            # nothing to do would soon retire again)
            self._autoscale(now)
            claimed = self._exchange(claim=self._maybe_work)
            if claimed:
                idle_step = 0.001
                active_at = time.monotonic()
                continue
            with self._lock:
                busy = bool(self._held) or bool(self._acks)
            if cfg.burst and not busy and not self._maybe_work:
                self._promote()
                if not self._exchange(claim=True) and self._down_since is None:
                    self.summary.exit_reason = "burst"
                    return
                continue
            # Idle (or all slots busy): wait for a finished job, a local enqueue, another
            # process's commit (change token), or the next timer.
            wait_until = min(
                next_heartbeat,
                next_maintenance,
                next_poll,
                next_watch if self._held else float("inf"),
                self._next_timeout(),
                self._next_promote,
                self._acks_since + ACK_DELAY if self._acks else float("inf"),
            )
            while not self._wake.is_set() and not self._stopping.is_set():
                remaining = wait_until - time.monotonic()
                if remaining <= 0:
                    break
                if self._wake.wait(min(idle_step, remaining)):
                    break
                new_token = self.backend.change_token()
                if new_token != token:
                    token = new_token
                    self._maybe_work = True
                    idle_step = 0.001
                    break
                if time.monotonic() - active_at > IDLE_BRISK:
                    idle_step = min(idle_step * 1.5, IDLE_POLL_MAX)

    def _capacity(self) -> int:
        """Jobs the threads may hold unfinished: one running per thread, plus the prefetch
        (claimed, waiting for a thread), at most ``PREFETCH_PER_THREAD`` per thread."""
        return self._live_threads + min(self._prefetch, PREFETCH_PER_THREAD * self._live_threads)

    def _batch_due(self) -> bool:
        """Whether the outcomes gathered so far should be recorded (and the free slots filled)
        now. Not while every thread is busy and claimed jobs still wait for one, unless the
        oldest outcome has waited ``ACK_DELAY``: each exchange costs a durable commit, so the
        fewer and fuller they are, the more jobs per second. Caller holds ``_lock``."""
        return (
            self._inbox.qsize() == 0
            or len(self._held) - len(self._acks) <= self._live_threads
            or (bool(self._acks) and time.monotonic() - self._acks_since >= ACK_DELAY)
            or self._stopping.is_set()
        )

    def _exchange(self, claim: bool) -> int:
        """Record finished attempts and, if ``claim`` and slots are free, claim more jobs, in
        one transaction (one commit per batch, not two). Returns how many were claimed.

        While every thread is busy and claimed jobs still wait for one, it waits (see
        :meth:`_batch_due`): a commit per finished job would make the commit, not the jobs,
        the limit."""
        with self._lock:
            if claim and not self._batch_due():
                return 0
            acks, self._acks = self._acks, []
            # acknowledged jobs give their slots back in the same transaction
            acked = {o.lease.job_id for o in acks}
            n_async = sum(1 for i, h in self._held.items() if h.is_async and i not in acked)
            n_sync = len(self._held) - len(acked & self._held.keys()) - n_async
            # claimed but not started stays bounded: a prefetch beyond the threads running
            free = max(0, self._capacity() - n_sync) + max(0, self._async_capacity - n_async)
            # A job rescued from a lost worker may be what kills its process (a poison job):
            # hold at most one such job at a time, so that it cannot take other lost jobs down
            # with it again (each time costs them an attempt).
            holds_lost = any(h.record.lost for i, h in self._held.items() if i not in acked)
            lost_acked = any(self._held[i].record.lost for i in acked & self._held.keys())
        if not claim or self._stopping.is_set():
            free = 0
        if not acks and free <= 0:
            return 0
        cfg = self.config
        records: list[JobRecord] = []
        try:
            if free > 0:
                queues: Sequence[str] = cfg.queues
                if cfg.weights:
                    queues = _weighted_order(cfg.queues, cfg.weights)
                _, records = self.backend.record_and_claim(
                    acks,
                    queues,
                    free,
                    worker_id=self.worker_id,
                    lease=cfg.lease,
                    queue_order=bool(cfg.weights),
                    max_lost=0 if holds_lost else 1,
                )
            else:
                self.backend.record_outcomes(acks)
        except JobqError as exc:
            self._store_failed(f"recording {len(acks)} outcomes / claiming", exc)
            with self._lock:
                self._acks[:0] = acks
            return 0
        self._store_ok()
        with self._lock:
            for o in acks:
                self._held.pop(o.lease.job_id, None)
                self.summary.outcomes[o.kind] = self.summary.outcomes.get(o.kind, 0) + 1
                if o.delay is not None:  # a retry or snooze of ours: promote it when due
                    due = time.monotonic() + o.delay.total_seconds()
                    self._next_promote = min(self._next_promote, due)
            for r in records:
                assert r.lease_token is not None
                task = self.app._tasks.get(r.task)
                is_async = task is not None and task.is_async
                h = _Held(r, Lease(r.id, r.lease_token), is_async=is_async)
                h.job = RunningJob(self.app, r, self._progress_reporter(h))
                self._held[r.id] = h
        if free > 0:
            self._maybe_work = len(records) == free
        elif lost_acked:
            # a claim may have left lost jobs behind while this one was held: look again now
            self._maybe_work = True
            self._wake.set()
        self.summary.claimed += len(records)
        if self.config.max_jobs is not None and self.summary.finished >= self.config.max_jobs:
            self.recycle(f"ran {self.summary.finished} jobs (max_jobs={self.config.max_jobs})")
        for r in records:
            self._inbox.put(r)
        return len(records)

    def _register(self) -> None:
        """Make this process visible (``jobq status``): who it is, what it serves, alive."""
        host, pid, _ = self.worker_id.rsplit(":", 2)
        info = WorkerInfo(
            id=self.worker_id,
            host=host,
            pid=int(pid),
            queues=self.config.queues,
            threads=self.config.threads,
            started_at=utcnow(),
            heartbeat_at=utcnow(),
        )
        try:
            self.backend.register_worker(info)
        except JobqError as exc:
            self._store_failed("registering this worker", exc)

    def _unregister(self) -> None:
        try:
            self.backend.unregister_worker(self.worker_id)
        except JobqError as exc:
            log.warning("could not unregister worker %s: %s", self.worker_id, exc)

    def _heartbeat(self) -> bool:
        """Renew the leases of every held job (first: they matter most), then this worker's
        registry entry. False if the store could not be reached (the caller retries soon)."""
        with self._lock:
            leases = [h.lease for h in self._held.values() if not h.lost]
        try:
            held = self.backend.heartbeat(leases, lease=self.config.lease) if leases else set()
        except JobqError as exc:
            self._store_failed("renewing leases", exc)
            return False
        self._mark_lost(leases, held)
        try:
            self.backend.worker_heartbeat(self.worker_id, self.summary.finished)
        except JobqError as exc:
            self._store_failed("worker heartbeat", exc)
            return False
        self._store_ok()
        return True

    def _mark_lost(self, leases: list[Lease], held: set[int]) -> None:
        """Jobs whose lease is gone (cancelled, or expired and rescued): tell the task, cancel
        an async one at once; a thread gets ``cancel_grace`` to stop (see :meth:`_watch`)."""
        now = time.monotonic()
        with self._lock:
            for lease in leases:
                h = self._held.get(lease.job_id)
                if lease.job_id in held or h is None or h.lost or h.lease != lease:
                    continue
                h.lost = True
                h.lost_at = now
                if h.job is not None:
                    h.job._request_cancel()
                if h.future is not None:  # an async job can really be stopped
                    h.future.cancel()
                self.summary.lost_leases += 1
                log.warning(
                    "job %s: its lease is gone (cancelled, or expired and rescued); the task "
                    "is asked to stop and its outcome will not be recorded",
                    lease.job_id,
                    extra=job_fields(h.record),
                )

    def _watch(self, now: float) -> None:
        """Write reported progress, notice running jobs that were cancelled, and hard-stop
        thread tasks that ignored a cancellation for ``cancel_grace``."""
        with self._lock:
            running = [h for h in self._held.values() if h.started is not None]
            progress = [(h.lease, h.progress) for h in running if h.progress is not None]
            for h in running:
                h.progress = None
            leases = [h.lease for h in running if not h.lost]
        try:
            for lease, (fraction, message) in progress:
                self.backend.set_progress(lease, fraction, message)
            held = self.backend.held(leases) if leases else set()
        except JobqError as exc:
            self._store_failed("checking running jobs", exc)
            return
        self._mark_lost(leases, held)
        grace = self.config.cancel_grace.total_seconds()
        with self._lock:
            overdue = [
                h
                for h in self._held.values()
                if h.lost
                and h.lost_at is not None
                and now - h.lost_at > grace
                and not h.is_async
                and h.thread is not None
                and h.thread not in self._abandoned
            ]
        for h in overdue:
            self._hard_stop(h)

    def _hard_stop(self, h: _Held) -> None:
        """Raise ``jobq.Cancelled`` into the thread running a cancelled job and give its slot to
        a fresh thread; a thread that still does not return counts as stuck (``stuck_grace``)."""
        log.warning(
            "job %s: still running %gs after it was cancelled; raising Cancelled in thread %s",
            h.record.id,
            self.config.cancel_grace.total_seconds(),
            h.thread,
            extra=job_fields(h.record),
        )
        assert h.thread is not None
        with self._lock:
            if self._held.get(h.record.id) is not h:
                return  # the task returned meanwhile; its thread moved on
            del self._held[h.record.id]
            self._abandoned[h.thread] = time.monotonic()
            self._live_threads -= 1
            self._busy_threads -= 1
            if h.ident is not None:
                _raise_in_thread(h.ident, Cancelled)
        self._start_thread()

    def _progress_reporter(self, h: _Held) -> Callable[[float | None, str | None], None]:
        def report(fraction: float | None, message: str | None) -> None:
            h.progress = (fraction, message)

        return report

    def _store_failed(self, what: str, exc: JobqError) -> None:
        """One clear line when the job store becomes unreachable, then quiet retries with
        backoff; running jobs go on, and their outcomes wait to be recorded."""
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = now
            self._retry_delay = 0.25
            log.error(
                "job store unavailable (%s failed: %s); retrying with backoff, running jobs go "
                "on and nothing is lost",
                what,
                exc,
            )
        else:
            self._retry_delay = min(self._retry_delay * 2, 5.0)
            log.debug("job store still unavailable (%s): %s", what, exc)
        self._retry_at = now + self._retry_delay

    def _store_ok(self) -> None:
        if self._down_since is not None:
            log.warning(
                "job store reachable again after %.1fs", time.monotonic() - self._down_since
            )
            self._down_since = None
            self._maybe_work = True

    def _promote(self) -> None:
        try:
            if self.backend.promote_due():
                self._maybe_work = True
        except JobqError as exc:
            self._store_failed("promoting due jobs", exc)

    def _maintain(self) -> None:
        cfg = self.config
        try:
            # Every worker rescues expired leases, not only the leader: a leader that is stopped
            # but not dead (SIGSTOP, a paused VM, heavy swapping) keeps its session and its
            # lock, and must not leave the jobs of lost workers running forever. The statement
            # moves only rows whose lease has run out, so concurrent rescues are idempotent.
            self.backend.rescue_expired()
            if not self.backend.try_lead():
                return  # another process is the maintenance leader
            due = self.backend.next_due()
            if due is not None and due <= utcnow() and self.backend.promote_due():
                self._maybe_work = True
            if cfg.aging is not None and time.monotonic() >= self._next_aging:
                # aging scans the available jobs, so it runs a few times per aging step only
                self._next_aging = time.monotonic() + max(cfg.aging.every.total_seconds() / 4, 1)
                self.backend.age(every=cfg.aging.every, max_boost=cfg.aging.max_boost)
            self._run_periodic()
            if random.random() < 0.02:
                self._prune()
                # workers killed without unregistering stay listed (as not alive) a while
                self.backend.prune_workers(older_than=max(10 * cfg.lease, timedelta(minutes=10)))
        except JobqError as exc:
            self._store_failed("maintenance", exc)

    def _run_periodic(self) -> None:
        """Enqueue due cron ticks (exactly once across every worker: the store decides)."""
        scheduler = self.config.scheduler
        if scheduler is None or not scheduler.schedules:
            return
        if self._next_cron is not None and utcnow() < self._next_cron:
            return
        now = self.backend.now()
        if scheduler.tick(self.backend, now=now):
            self._maybe_work = True
        self._next_cron = scheduler.next_wakeup(now)

    def _prune(self) -> None:
        """Retention: finished jobs older than their state's age, and beyond the count."""
        cfg = self.config
        by_state = cfg.retention_by_state or {}
        for state in sorted(TERMINAL_STATES):
            age = by_state.get(state, cfg.retention)
            if age is not None:
                self.backend.prune(older_than=age, states=frozenset({state}))
            if cfg.retention_count is not None:
                self.backend.prune(
                    older_than=timedelta(0), states=frozenset({state}), keep=cfg.retention_count
                )

    def recycle(self, reason: str) -> None:
        """Stop gracefully so that a supervisor starts a fresh process in this one's place."""
        if self.summary.exit_reason != "recycle":
            log.warning("worker %s recycling: %s", self.worker_id, reason)
            self.summary.exit_reason = "recycle"
            self.summary.recycle_reason = reason
        self.stop()

    def _check_limits(self, now: float) -> None:
        cfg = self.config
        if cfg.max_memory_mb is not None:
            rss = resident_mb()
            if rss > cfg.max_memory_mb:
                self.recycle(f"uses {rss:.0f} MiB (max_memory_mb={cfg.max_memory_mb})")
        if cfg.stuck_grace is not None:
            alive = {t.name for t in self._threads if t.is_alive()}
            for name, since in list(self._abandoned.items()):
                if name not in alive:
                    continue
                if now - since > cfg.stuck_grace.total_seconds():
                    self.recycle(
                        f"thread {name} is still stuck in a timed-out job after "
                        f"{cfg.stuck_grace.total_seconds():g}s"
                    )

    def _next_timeout(self) -> float:
        """Monotonic time at which the earliest running job passes its timeout."""
        with self._lock:
            return min(
                (
                    h.started + h.record.timeout.total_seconds()
                    for h in self._held.values()
                    if h.started is not None
                    and h.record.timeout is not None
                    and not h.timed_out
                    and not h.is_async
                ),
                default=float("inf"),
            )

    def _check_timeouts(self, now: float) -> None:
        expired: list[_Held] = []
        with self._lock:
            for h in self._held.values():
                t = h.record.timeout
                if (
                    t is not None
                    and h.started is not None
                    and not h.timed_out
                    and not h.is_async  # asyncio.wait_for times those out for real
                    and now - h.started > t.total_seconds()
                ):
                    h.timed_out = True
                    expired.append(h)
        for h in expired:
            outcome = timed_out(h.record, self.app._tasks.get(h.record.task))
            log.warning(
                "job %s: its thread %s is abandoned to it",
                h.record.id,
                h.thread,
                extra=job_fields(h.record),
            )
            self.summary.timed_out += 1
            with self._lock:
                observe.job_finished(h.record, outcome, h.started)
                if not self._acks:
                    self._acks_since = time.monotonic()
                self._acks.append(outcome)
            # The stuck thread keeps its OS thread until the task returns; a fresh thread takes
            # its slot so the pool keeps its size.
            if h.thread is not None:
                self._abandoned[h.thread] = time.monotonic()
                with self._lock:
                    self._live_threads -= 1
                    self._busy_threads -= 1
            if len(self._abandoned) <= self.config.threads * 4:
                self._start_thread()
            else:
                log.error(
                    "%d threads abandoned to timed-out jobs; not replacing more: restart "
                    "this worker",
                    len(self._abandoned),
                )

    def _shutdown(self) -> None:
        """Hand back unstarted jobs, let running ones finish within the grace, release the rest."""
        self._stopping.set()
        unstarted: list[Lease] = []
        while True:
            try:
                r = self._inbox.get_nowait()
            except queue.Empty:
                break
            if r is not None:
                with self._lock:
                    h = self._held.pop(r.id, None)
                if h is not None:
                    unstarted.append(h.lease)
        with self._lock:  # async jobs still waiting for an event-loop slot have not started
            for job_id, h in list(self._held.items()):
                if h.is_async and h.started is None and h.future is not None:
                    h.future.cancel()
                    del self._held[job_id]
                    unstarted.append(h.lease)
        for _ in self._threads:
            self._inbox.put(None)
        self._release(unstarted)
        give_up = time.monotonic() + self.config.grace.total_seconds()
        heartbeat_every = self.config.lease.total_seconds() / 3
        next_heartbeat = time.monotonic() + heartbeat_every
        while True:
            self._exchange(claim=False)
            with self._lock:
                running = [h for h in self._held.values() if not h.timed_out]
            if not running or time.monotonic() >= give_up:
                break
            if time.monotonic() >= next_heartbeat:
                self._heartbeat()
                next_heartbeat = time.monotonic() + heartbeat_every
            self._wake.wait(0.05)
            self._wake.clear()
        self._exchange(claim=False)
        with self._lock:
            leftover = [h.lease for h in self._held.values()]
            for h in self._held.values():
                if h.future is not None:
                    h.future.cancel()
            self._held.clear()
        self._stop_loop()
        if leftover:
            log.warning(
                "grace period over: releasing %d running job(s) to run elsewhere", len(leftover)
            )
            self._release(leftover)

    def _release(self, leases: list[Lease]) -> None:
        if not leases:
            return
        try:
            self.summary.released += len(self.backend.release(leases))
        except JobqError as exc:
            log.error(
                "releasing %d jobs failed; they run again when their leases expire: %s",
                len(leases),
                exc,
            )

    # -- executor threads --------------------------------------------------------------------

    @property
    def thread_count(self) -> int:
        """Executor threads taking jobs now (autoscaling moves it)."""
        return self._live_threads

    def _start_thread(self) -> None:
        with self._lock:
            self._live_threads += 1
        t = threading.Thread(target=self._run_jobs, name=f"jobq-{len(self._threads)}", daemon=True)
        self._threads.append(t)
        t.start()

    def _autoscale(self, now: float) -> None:
        """Add a thread while every thread is busy and claims come back full (a backlog)."""
        cfg = self.config
        if cfg.min_threads is None or self._stopping.is_set():
            return
        with self._lock:
            saturated = self._busy_threads >= self._live_threads
            room = self._live_threads < cfg.threads
        if saturated and room and self._maybe_work and now - self._last_scale_up > 0.05:
            self._last_scale_up = now
            self._start_thread()
            log.debug("scaled up to %d threads", self._live_threads)

    def _run_jobs(self) -> None:
        try:
            self._take_jobs()
        except Cancelled:
            if threading.current_thread().name not in self._abandoned:
                raise
            # hard-stopped after a cancellation; its slot went to a fresh thread

    def _take_jobs(self) -> None:
        name = threading.current_thread().name
        idle = self.config.scale_down_after.total_seconds()
        while True:
            try:
                record = self._inbox.get(timeout=idle if self.config.min_threads else None)
            except queue.Empty:
                with self._lock:  # idle long enough: retire, down to min_threads
                    if self._live_threads > (self.config.min_threads or self.config.threads):
                        self._live_threads -= 1
                        log.debug("scaled down to %d threads", self._live_threads)
                        return
                continue
            if record is None:
                with self._lock:
                    self._live_threads -= 1
                return
            with self._lock:
                h = self._held.get(record.id)
                is_async = h is not None and h.is_async
            if is_async:
                self._submit_async(record)  # runs on the event loop; this thread moves on
                continue
            with self._lock:
                self._busy_threads += 1
                job = h.job if h is not None else None
            outcome = execute(self.app, record, on_start=lambda r: self._started(r, name), job=job)
            self._finished(record, outcome)
            if name in self._abandoned:
                return  # its slot was counted out and given to a replacement thread
            with self._lock:
                self._busy_threads -= 1

    def _finished(self, record: JobRecord, outcome: Outcome | None) -> None:
        """Hand a finished attempt's outcome to the coordinator (None: it was cancelled).

        The coordinator is woken by the first outcome of a batch (its ``ACK_DELAY`` clock)
        and when a batch is due, not by every job: on a busy worker most would find nothing
        to do, and take the GIL from the threads to find it."""
        with self._lock:
            h = self._held.get(record.id)
            if h is not None and outcome is not None and not h.timed_out and not h.lost:
                observe.job_finished(record, outcome, h.started)  # counted before it is stored
                if not self._acks:
                    self._acks_since = time.monotonic()
                self._acks.append(outcome)
                if len(self._acks) > 1 and not self._batch_due():
                    return
            elif h is not None and h.lost:
                self._held.pop(record.id, None)
                log.warning(
                    "job %s ended (%s) after its lease was lost; nothing recorded",
                    record.id,
                    outcome.kind.value if outcome else "cancelled",
                    extra=job_fields(record),
                )
        self._wake.set()

    # -- the event loop for async tasks ------------------------------------------------------

    def _submit_async(self, record: JobRecord) -> None:
        with self._lock:  # executor threads may meet their first async job at the same time
            if self._event_loop is None:
                self._event_loop = asyncio.new_event_loop()
                self._async_slots = asyncio.Semaphore(self.config.async_limit)
                self._loop_thread = threading.Thread(
                    target=self._event_loop.run_forever, name="jobq-asyncio", daemon=True
                )
                self._loop_thread.start()
            loop = self._event_loop
        future = asyncio.run_coroutine_threadsafe(self._run_async(record), loop)
        with self._lock:
            h = self._held.get(record.id)
            if h is not None:
                h.future = future

    async def _run_async(self, record: JobRecord) -> None:
        assert self._async_slots is not None
        async with self._async_slots:
            try:
                with self._lock:
                    h = self._held.get(record.id)
                    job = h.job if h is not None else None
                outcome = await execute_async(
                    self.app, record, on_start=lambda r: self._started(r, "asyncio"), job=job
                )
            except asyncio.CancelledError:
                self._finished(record, None)
                raise
        self._finished(record, outcome)

    def _stop_loop(self) -> None:
        loop, thread = self._event_loop, self._loop_thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        if not thread.is_alive():
            loop.close()

    def _started(self, record: JobRecord, thread: str) -> None:
        with self._lock:
            h = self._held.get(record.id)
            if h is not None:
                h.started = time.monotonic()
                h.thread = thread
                h.ident = threading.get_ident()
        observe.job_started(record)
        if record.timeout is not None:
            self._wake.set()


def _weighted_order(queues: Sequence[str], weights: Mapping[str, int]) -> list[str]:
    """A random order of ``queues`` in which a queue comes first with odds of its weight."""
    pool = [(q, weights.get(q, 1)) for q in queues]
    order = []
    while pool:
        pick = random.uniform(0, sum(w for _, w in pool))
        for i, (q, w) in enumerate(pool):
            pick -= w
            if pick <= 0 or i == len(pool) - 1:
                order.append(q)
                del pool[i]
                break
    return order


#: The signal a supervisor sends its worker processes to stop them gracefully. Unlike
#: SIGTERM it never counts as the second, exit-at-once signal, so a worker that also gets a
#: SIGTERM of its own (systemd's default KillMode signals every process) still drains.
GRACEFUL_STOP_SIGNAL = signal.SIGUSR2


@contextlib.contextmanager
def signal_handlers(worker: Worker) -> Iterator[None]:
    """First SIGTERM/SIGINT: graceful stop. Second: exit at once (leases recover the jobs).
    :data:`GRACEFUL_STOP_SIGNAL`: graceful stop, however often it comes.

    A Python signal handler runs in the main thread between any two bytecodes, also while
    that thread holds a lock: inside ``Event.wait`` or ``Event.set`` (an ``Event`` is a
    ``Condition`` over a non-reentrant lock), in the middle of a log line. A handler that
    took such a lock itself would wait for ever on its own thread. So the handler takes no
    lock: it counts, exits at once on the second signal, and otherwise hands the signal to a
    relay thread (``SimpleQueue.put`` is reentrant), which logs and stops the worker."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    count = 0
    requests: queue.SimpleQueue[int | None] = queue.SimpleQueue()

    def handle(signum: int, frame: FrameType | None) -> None:
        nonlocal count
        if signum != GRACEFUL_STOP_SIGNAL:
            count += 1
            if count > 1:
                name = signal.Signals(signum).name
                with contextlib.suppress(OSError):
                    os.write(2, f"jobq: received {name} again: exiting now\n".encode())
                os._exit(128 + signum)
        requests.put(signum)

    def relay() -> None:
        while (signum := requests.get()) is not None:
            if signum == GRACEFUL_STOP_SIGNAL:
                log.warning("asked by the supervisor to stop: finishing running jobs")
            else:
                log.warning(
                    "received %s: finishing running jobs (up to %ss), send again to exit at once",
                    signal.Signals(signum).name,
                    worker.config.grace.total_seconds(),
                )
            worker.stop()

    relay_thread = threading.Thread(target=relay, name="jobq-signals", daemon=True)
    relay_thread.start()
    handled = (signal.SIGTERM, signal.SIGINT, GRACEFUL_STOP_SIGNAL)
    previous = {sig: signal.signal(sig, handle) for sig in handled}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        requests.put(None)
        relay_thread.join(timeout=5)


def _raise_in_thread(ident: int, exc: type[BaseException]) -> bool:
    """Raise ``exc`` in thread ``ident`` at its next Python instruction (CPython); a thread
    blocked in C code (a socket read) sees it only when that call returns."""
    import ctypes

    n = ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(exc))
    if n > 1:  # never expected: undo rather than hit the wrong threads
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), None)
        return False
    return bool(n == 1)


def resident_mb() -> float:
    """This process's resident memory in MiB (current on Linux, peak elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 2**10
