"""The :class:`App`: a job store, a registry of tasks, and the verbs around them."""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, ParamSpec, TypeVar, overload

from jobq.backends import Backend, JobFilter, check_url, open_backend, redact_url
from jobq.backends.base import NewJob, QueueSettings, WorkerInfo
from jobq.clock import as_duration
from jobq.cron import Cron
from jobq.exceptions import ConfigurationError, InvalidJobError, JobNotFound, QueueFull
from jobq.group import Group
from jobq.heap import keep_freed_heap
from jobq.job import Job, JobRecord
from jobq.locks import Lock
from jobq.metrics import record_enqueued
from jobq.options import (
    JobOptions,
    KeyFunction,
    RateLimit,
    TaskDefaults,
    build_job,
    job_builder,
    validate_queue,
    validate_task_name,
)
from jobq.payload import DEFAULT_MAX_BYTES
from jobq.periodic import Periodic, Scheduler
from jobq.retry import DEFAULT_RETRY, RetryPolicy
from jobq.secrets import normalize as normalize_secret
from jobq.secrets import redact_args
from jobq.states import TERMINAL_STATES, JobState
from jobq.task import Call, Task
from jobq.worker import Aging, Worker, WorkerConfig, WorkerSummary, signal_handlers

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_URL_ENV = "JOBQ_URL"
DEFAULT_AGING = Aging()


class App:
    """A job queue: where jobs are stored (``url``) and which tasks can run them.

    ``url`` is ``sqlite:///path/to/jobs.db`` (the embedded default) or ``memory://`` (one
    process, for tests); without it, ``$JOBQ_URL`` is used. The store is opened on first use, or
    by :meth:`open`; opening it checks that it is usable and raises a clear error if not.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        lease: timedelta = timedelta(seconds=30),
        retention: timedelta | Mapping[JobState | str, timedelta | None] | None = timedelta(days=7),
        retention_count: int | None = None,
        aging: Aging | None = DEFAULT_AGING,
        max_payload_bytes: int | None = DEFAULT_MAX_BYTES,
    ) -> None:
        if url is None:
            url = os.environ.get(DEFAULT_URL_ENV)
            if not url:
                raise ConfigurationError(
                    "no job store URL: pass one, e.g. jobq.App('sqlite:///jobs.db'), or set "
                    f"${DEFAULT_URL_ENV}"
                )
        check_url(url)
        self.url = url
        self.lease = lease
        self.retention, self.retention_by_state = _retention(retention)
        if retention_count is not None and (
            isinstance(retention_count, bool)
            or not isinstance(retention_count, int)
            or retention_count < 0
        ):
            raise ConfigurationError(
                f"retention_count must be an int >= 0 or None, got {retention_count!r}"
            )
        self.retention_count = retention_count
        self.aging = aging
        self.max_payload_bytes = max_payload_bytes
        self._tasks: dict[str, Task[Any, Any]] = {}
        self._backend: Backend | None = None
        self._open_lock = threading.Lock()
        self._workers: weakref.WeakSet[Worker] = weakref.WeakSet()
        #: the periodic schedules of this app (``@app.periodic``); the workers' leader runs them
        self.scheduler = Scheduler()

    def __repr__(self) -> str:
        return f"<jobq.App {redact_url(self.url)} tasks={len(self._tasks)}>"

    # -- the store ---------------------------------------------------------------------------

    @property
    def backend(self) -> Backend:
        """The opened job store (opened now if it was not yet)."""
        backend = self._backend
        if backend is None:
            with self._open_lock:
                if self._backend is None:
                    self._backend = open_backend(self.url)
                backend = self._backend
        return backend

    def open(self) -> App:
        """Open the store now (it is otherwise opened on first use); returns ``self``."""
        _ = self.backend
        return self

    def close(self) -> None:
        """Close the store's connections. The app may be opened again by using it."""
        with self._open_lock:
            backend, self._backend = self._backend, None
        if backend is not None:
            backend.close()

    def __enter__(self) -> App:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- tasks -------------------------------------------------------------------------------

    @overload
    def task(self, fn: Callable[P, R], /) -> Task[P, R]: ...

    @overload
    def task(
        self,
        *,
        name: str | None = None,
        queue: str = "default",
        priority: int = 0,
        max_attempts: int = 3,
        timeout: timedelta | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
        run_late: bool = False,
        concurrency_limit: int | None = None,
        concurrency_key: str | KeyFunction | None = None,
        rate_limit: RateLimit | str | tuple[int, float] | None = None,
        rate_key: str | None = None,
        secret: Sequence[str | int] = (),
    ) -> Callable[[Callable[P, R]], Task[P, R]]: ...

    def task(  # type: ignore[misc]  # mypy cannot match ParamSpec-generic overloads
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        queue: str = "default",
        priority: int = 0,
        max_attempts: int = 3,
        timeout: timedelta | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
        run_late: bool = False,
        concurrency_limit: int | None = None,
        concurrency_key: str | KeyFunction | None = None,
        rate_limit: RateLimit | str | tuple[int, float] | None = None,
        rate_key: str | None = None,
        secret: Sequence[str | int] = (),
    ) -> Any:
        """Register a function as a task: ``@app.task`` or ``@app.task(queue=..., ...)``.

        ``name`` defaults to ``module.qualname``; producers and workers must agree on it.
        ``timeout`` fails an attempt that runs longer; ``run_late`` runs a job even after its
        deadline passed (otherwise it ends ``expired``).

        ``concurrency_limit``: at most that many of its jobs run at once across every worker,
        per ``concurrency_key`` if given (a string, or ``f(args, kwargs) -> str`` such as one
        key per customer). ``rate_limit`` ("10/s", "100/m", "5/10s"): at most that many starts
        per period, per ``rate_key`` (default: the task). ``secret``: names of keyword
        arguments (or indexes of positional ones) shown as ``***`` in logs, errors, the CLI
        and the dashboard.
        """
        try:
            defaults = TaskDefaults(
                queue=queue,
                priority=priority,
                max_attempts=max_attempts,
                timeout=timeout,
                retry=retry,
                run_late=run_late,
                concurrency_limit=concurrency_limit,
                concurrency_key=concurrency_key,
                rate_limit=RateLimit.parse(rate_limit) if rate_limit is not None else None,
                rate_key=rate_key,
                secret=normalize_secret(secret),
            )
        except (InvalidJobError, TypeError, ValueError) as exc:  # from RateLimit / secret
            raise ConfigurationError(str(exc)) from None

        def register(f: Callable[..., Any]) -> Task[Any, Any]:
            if not callable(f):
                raise ConfigurationError(f"@app.task needs a function, got {f!r}")
            task_name = name or f"{f.__module__}.{f.__qualname__}"
            try:
                validate_task_name(task_name)
            except Exception as exc:
                raise ConfigurationError(str(exc)) from None
            existing = self._tasks.get(task_name)
            if existing is not None and existing.fn is not f:
                raise ConfigurationError(
                    f"task name {task_name!r} is already registered for {existing.fn!r}; give "
                    "one of them another name with @app.task(name=...)"
                )
            task_defaults = dataclasses.replace(
                defaults, secret=_secret_positions(f, defaults.secret)
            )
            t: Task[Any, Any] = Task(self, f, task_name, task_defaults)
            self._tasks[task_name] = t
            return t

        if fn is not None:
            return register(fn)
        return register

    def periodic(
        self,
        cron: str,
        *,
        task: Task[Any, Any] | str | None = None,
        name: str | None = None,
        timezone: str = "UTC",
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        missed: str = "skip",
        catch_up_limit: int = 10,
        tick_kwarg: str | None = None,
        queue: str | None = None,
        priority: int | None = None,
        max_attempts: int | None = None,
        timeout: timedelta | float | None = None,
        unique_key: str | None = None,
        tags: Sequence[str] | None = None,
    ) -> Any:
        """Run a task on a cron schedule.

        ``@app.periodic("*/5 * * * *")`` on a function registers it as a task (default options)
        and schedules it; put it above ``@app.task(...)`` to schedule a task with options of its
        own. ``app.periodic("0 3 * * *", task=send_report, args=["daily"])`` schedules an
        existing task (a Task, or a task name) and returns the :class:`jobq.periodic.Periodic`.

        Each tick is enqueued exactly once however many workers run, on however many machines.
        ``timezone``: an IANA name whose wall-clock times the fields describe. ``missed``: ticks
        missed while no worker ran are dropped but the latest (``"skip"``), or up to
        ``catch_up_limit`` of them are enqueued too (``"catch_up"``). ``name`` (default: the
        task's name) keeps the schedule's last tick in the store: give one when a task has two
        schedules. ``tick_kwarg``: pass the tick (ISO 8601, UTC) as that keyword argument.
        Invalid input raises :class:`jobq.ConfigurationError` here, and registers nothing.
        """
        options = JobOptions(
            queue=queue,
            priority=priority,
            max_attempts=max_attempts,
            timeout=timeout,
            unique_key=unique_key,
            tags=tags,
        )
        schedule = Cron.parse(cron, timezone=timezone)

        def make(task_name: str, defaults: TaskDefaults) -> Periodic:
            return Periodic(
                name or task_name,
                schedule,
                task_name,
                args,
                kwargs,
                options,
                missed=missed,
                catch_up_limit=catch_up_limit,
                tick_kwarg=tick_kwarg,
                defaults=defaults,
                max_payload_bytes=self.max_payload_bytes,
            )

        def schedule_for(target: Any) -> tuple[Any, Periodic]:
            """(what the decorator returns, the schedule added)."""
            if isinstance(target, Task):
                if target.app is not self:
                    raise ConfigurationError(
                        f"task {target.name!r} belongs to another app; schedule it with that app"
                    )
                return target, self.scheduler.add(make(target.name, target.defaults))
            if isinstance(target, str):
                registered = self._tasks.get(target)
                defaults = registered.defaults if registered is not None else TaskDefaults()
                p = self.scheduler.add(make(target, defaults))
                return p, p
            if not callable(target):
                raise ConfigurationError(
                    f"@app.periodic needs a function or a task, got {target!r}"
                )
            # validate and add the schedule first, so that a bad one registers no task
            p = self.scheduler.add(
                make(f"{target.__module__}.{target.__qualname__}", TaskDefaults())
            )
            try:
                return self.task(target), p
            except BaseException:
                self.scheduler.remove(p.name)
                raise

        if task is not None:
            return schedule_for(task)[1]
        return lambda target: schedule_for(target)[0]

    def lock(
        self,
        name: str,
        *,
        ttl: timedelta | float = 60.0,
        wait: timedelta | float | None = None,
        owner: str | None = None,
    ) -> Lock:
        """A distributed lock kept in the job store, usable from any process or machine::

            with app.lock("import:customer-7", ttl=60, wait=10) as lock:
                ...  # lock.token is a fencing token; lock.check() raises LockLost if lost

        Held for ``ttl`` at a time and renewed every third of it while held; released on leaving
        the block (raising :class:`jobq.LockLost` there if the lease was lost meanwhile); taken
        over by another holder only after its lease expired. ``wait``: how long to wait for a
        held lock before :class:`jobq.LockTimeout` (None: as long as it takes; 0: one try).
        """
        return Lock(self.backend, name, ttl, wait=wait, owner=owner)

    @property
    def tasks(self) -> Mapping[str, Task[Any, Any]]:
        """Registered tasks by name."""
        return dict(self._tasks)

    # -- enqueue -----------------------------------------------------------------------------

    def enqueue(
        self,
        task: str,
        *,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        queue: str | None = None,
        priority: int | None = None,
        delay: timedelta | float | None = None,
        run_at: datetime | None = None,
        deadline: datetime | None = None,
        unique_key: str | None = None,
        max_attempts: int | None = None,
        timeout: timedelta | float | None = None,
        tags: Sequence[str] | None = None,
        on_conflict: str | None = None,
        unique_window: timedelta | float | None = None,
        concurrency_key: str | None = None,
        concurrency_limit: int | None = None,
        rate_key: str | None = None,
        rate_limit: RateLimit | str | tuple[int, float] | None = None,
        depends_on: Sequence[Any] | None = None,
        allow_failed: bool | None = None,
        wait_if_full: timedelta | float | None = None,
        connection: Any = None,
    ) -> Job:
        """Enqueue a job by task name, for producers that do not import the task's code.

        The name need not be registered in this process; if it is, that task's defaults apply.
        The options are those of :meth:`jobq.Task.options`. With ``connection`` (a psycopg
        connection, PostgreSQL only) the job is written in that connection's open transaction
        and exists only if it commits.
        """
        registered = self._tasks.get(task) if isinstance(task, str) else None
        defaults = registered.defaults if registered else TaskDefaults()
        options = JobOptions(
            queue=queue,
            priority=priority,
            delay=delay,
            run_at=run_at,
            deadline=deadline,
            unique_key=unique_key,
            max_attempts=max_attempts,
            timeout=timeout,
            tags=tags,
            on_conflict=on_conflict,
            unique_window=unique_window,
            concurrency_key=concurrency_key,
            concurrency_limit=concurrency_limit,
            rate_key=rate_key,
            rate_limit=rate_limit,
            depends_on=depends_on,
            allow_failed=allow_failed,
            wait_if_full=wait_if_full,
        )
        return self._enqueue_calls(task, [(args, kwargs or {})], options, defaults, connection)[0]

    def group(
        self,
        calls: Sequence[Call],
        *,
        on_complete: Call | None = None,
        on_success: Call | None = None,
        connection: Any = None,
    ) -> Group:
        """Enqueue ``calls`` (``task.call(...)`` or ``task.options(...).call(...)``) in one
        transaction, and get one handle to wait on.

        ``on_complete`` runs once every job of the group has finished, however it ended;
        ``on_success`` runs only if every one completed (it is cancelled otherwise). Both are
        jobs that depend on the whole group, enqueued in the same transaction.
        """
        calls = list(calls)
        if not calls:
            raise InvalidJobError("a group needs at least one call (task.call(...))")
        for c in [*calls, on_complete, on_success]:
            if c is not None and not isinstance(c, Call):
                raise InvalidJobError(f"group items must be task.call(...) values, got {c!r}")
        new = [
            build_job(c.task, c.args, c.kwargs, c.options, c.defaults, self.max_payload_bytes)
            for c in calls
        ]
        members = tuple(range(len(new)))
        callbacks: list[str] = []
        for kind, c in (("on_complete", on_complete), ("on_success", on_success)):
            if c is None:
                continue
            nj = build_job(c.task, c.args, c.kwargs, c.options, c.defaults, self.max_payload_bytes)
            new.append(
                dataclasses.replace(
                    nj, depends_on_batch=members, allow_failed=kind == "on_complete"
                )
            )
            callbacks.append(kind)
        records = self._store(new, connection, None)
        jobs = [Job(self, r) for r in records]
        by_kind = dict(zip(callbacks, jobs[len(calls) :], strict=True))
        return Group(
            self, jobs[: len(calls)], by_kind.get("on_complete"), by_kind.get("on_success")
        )

    def _enqueue_calls(
        self,
        task: str,
        calls: Sequence[tuple[Sequence[Any], Mapping[str, Any]]],
        options: JobOptions,
        defaults: TaskDefaults,
        connection: Any = None,
    ) -> list[Job]:
        # Validate every call before writing anything: a bad item refuses the whole batch.
        build = job_builder(task, options, defaults, self.max_payload_bytes)
        new = [build(a, k) for a, k in calls]
        wait = (
            as_duration(options.wait_if_full, "wait_if_full")
            if options.wait_if_full is not None
            else None
        )
        return [Job(self, r) for r in self._store(new, connection, wait)]

    def _store(
        self, new: list[NewJob], connection: Any, wait_if_full: timedelta | None
    ) -> list[JobRecord]:
        if connection is not None:  # counted although the caller's transaction may roll back
            records = self.backend.enqueue_many(new, connection=connection)
            record_enqueued(records)
            return records
        give_up = time.monotonic() + (wait_if_full.total_seconds() if wait_if_full else 0.0)
        pause = 0.01
        while True:
            try:
                records = self.backend.enqueue_many(new)
                break
            except QueueFull:
                if wait_if_full is None or time.monotonic() >= give_up:
                    raise
                time.sleep(min(pause, max(0.0, give_up - time.monotonic())))
                pause = min(pause * 2, 0.5)
        record_enqueued(records)
        if any(r.state is JobState.AVAILABLE for r in records):
            for worker in list(self._workers):
                worker.notify()
        return records

    # -- reading and steering jobs -----------------------------------------------------------

    def get_job(self, job_id: int) -> Job:
        """A handle on job ``job_id``; raises :class:`jobq.JobNotFound`."""
        record = self.backend.get(_job_id(job_id))
        if record is None:
            raise JobNotFound(f"no job with id {job_id} (it may have been pruned)")
        return Job(self, record)

    def retry(self, job_id: int) -> Job:
        """Run a finished (completed, dead, cancelled or expired) job again."""
        job = Job(self, self.backend.retry(_job_id(job_id)))
        for worker in list(self._workers):
            worker.notify()
        return job

    def cancel(self, job_id: int) -> bool:
        """Cancel a job that has not finished; True if this call cancelled it."""
        return self._cancel(_job_id(job_id))[0]

    def _cancel(self, job_id: int) -> tuple[bool, JobRecord]:
        return self.backend.cancel(job_id)

    def delete(self, job_id: int) -> bool:
        """Remove a job that is not running (cancel a running one first); True if it existed.

        Jobs waiting on it are resolved as if it had been cancelled."""
        return self.backend.delete(_job_id(job_id))

    def cancel_many(
        self,
        *,
        queue: str | None = None,
        state: JobState | str | None = None,
        task: str | None = None,
    ) -> int:
        """Cancel every unfinished job matching the filters (running ones too); returns how
        many. With no filter at all it refuses, rather than cancel everything by accident:
        pass ``queue="*"`` to mean every queue."""
        if queue is None and state is None and task is None:
            raise ConfigurationError(
                "cancel_many needs a filter (queue, state or task); pass queue='*' to cancel "
                "every unfinished job of every queue"
            )
        flt = JobFilter(
            queue=None if queue in (None, "*") else validate_queue(queue),
            state=_state(state) if state is not None else None,
            task=task,
        )
        if flt.state is not None and flt.state.is_terminal:
            raise ConfigurationError(
                f"state {flt.state.value!r} is finished already; cancel_many takes scheduled, "
                "blocked, available or running"
            )
        return self.backend.cancel_many(flt)

    def retry_many(
        self,
        *,
        queue: str | None = None,
        state: JobState | str | None = JobState.DEAD,
        task: str | None = None,
    ) -> int:
        """Run again every finished job matching the filters (default: every dead job);
        returns how many were made available."""
        flt = JobFilter(
            queue=validate_queue(queue) if queue is not None else None,
            state=_state(state) if state is not None else None,
            task=task,
        )
        if flt.state is not None and not flt.state.is_terminal:
            raise ConfigurationError(
                f"state {flt.state.value!r} is not finished; retry_many takes completed, dead, "
                "cancelled or expired"
            )
        n = self.backend.retry_many(flt)
        for worker in list(self._workers):
            worker.notify()
        return n

    # -- queues ------------------------------------------------------------------------------

    def pause_queue(self, name: str) -> None:
        """Stop every worker, on every machine, from starting jobs of queue ``name`` (running
        jobs finish; enqueueing still works) until :meth:`resume_queue`."""
        self.backend.set_queue(_queue_name(name), paused=True)

    def resume_queue(self, name: str) -> None:
        self.backend.set_queue(_queue_name(name), paused=False)
        for worker in list(self._workers):
            worker.notify()

    def set_max_depth(self, name: str, max_depth: int | None) -> None:
        """Backpressure: refuse enqueues (:class:`jobq.QueueFull`) that would take queue
        ``name`` past ``max_depth`` waiting jobs; None removes the limit. Store-wide."""
        if max_depth is not None and (
            isinstance(max_depth, bool) or not isinstance(max_depth, int) or max_depth < 1
        ):
            raise ConfigurationError(f"max_depth must be an int >= 1 or None, got {max_depth!r}")
        self.backend.set_queue(_queue_name(name), max_depth=max_depth)

    def queues(self) -> dict[str, QueueSettings]:
        """Store-wide settings (paused, max_depth) of every queue that has any."""
        return self.backend.queue_settings()

    def prune(
        self,
        *,
        states: Sequence[JobState | str] | None = None,
        older_than: timedelta | float = timedelta(0),
        keep: int = 0,
    ) -> int:
        """Delete finished jobs (default: all four finished states) that finished more than
        ``older_than`` ago, sparing the ``keep`` newest of each state; returns how many."""
        chosen = frozenset(_state(s) for s in states) if states is not None else TERMINAL_STATES
        if not chosen <= TERMINAL_STATES:
            raise ConfigurationError(
                "prune deletes finished jobs only; states must be among completed, dead, "
                f"cancelled, expired, got {sorted(s.value for s in chosen)}"
            )
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 0:
            raise ConfigurationError(f"keep must be an int >= 0, got {keep!r}")
        age = _seconds(older_than, "older_than")
        total = 0
        while True:
            n = self.backend.prune(older_than=age, states=chosen, keep=keep)
            total += n
            if n < 10_000:
                return total

    def list_jobs(
        self,
        *,
        queue: str | None = None,
        state: JobState | str | None = None,
        task: str | None = None,
        search: str | None = None,
        limit: int = 50,
        before_id: int | None = None,
    ) -> list[Job]:
        """Jobs newest first, filtered (``search``: text in the arguments); ``limit`` is
        clamped to 1..1000."""
        flt = JobFilter(
            queue=validate_queue(queue) if queue is not None else None,
            state=_state(state) if state is not None else None,
            task=task,
            search=search[:200] if search else None,
        )
        limit = max(1, min(int(limit), 1000))
        records = self.backend.list_jobs(flt, limit=limit, before_id=before_id)
        if flt.search is not None:
            # a search must not reveal secret values: match only what may be shown
            records = [r for r in records if not r.secret or _shown_match(r, flt.search)]
        return [Job(self, r) for r in records]

    def stats(self) -> dict[str, dict[JobState, int]]:
        """Number of jobs per queue and state."""
        return self.backend.stats()

    def workers(self) -> list[WorkerInfo]:
        """Registered worker processes, newest first; ``info.alive(now, app.lease)`` tells
        whether one was seen within a lease."""
        return self.backend.list_workers()

    # -- workers -----------------------------------------------------------------------------

    def worker(
        self,
        queues: Sequence[str] | None = None,
        *,
        threads: int = 8,
        burst: bool = False,
        lease: timedelta | float | None = None,
        grace: timedelta | float = timedelta(seconds=30),
        weights: Mapping[str, int] | None = None,
        poll_interval: timedelta | float = timedelta(seconds=1),
        max_jobs: int | None = None,
        max_memory_mb: int | None = None,
        stuck_grace: timedelta | float | None = None,
        async_limit: int = 100,
        min_threads: int | None = None,
        scale_down_after: timedelta | float = timedelta(seconds=30),
        cancel_grace: timedelta | float = timedelta(seconds=10),
    ) -> Worker:
        """Build a worker for ``queues`` (default: every queue of a registered task)."""
        if queues is None:
            queues = sorted({t.defaults.queue for t in self._tasks.values()}) or ["default"]
        if isinstance(queues, str):
            queues = [q.strip() for q in queues.split(",") if q.strip()]
        config = WorkerConfig(
            queues=tuple(queues),
            threads=threads,
            burst=burst,
            lease=_seconds(lease, "lease") if lease is not None else self.lease,
            grace=_seconds(grace, "grace"),
            weights=weights,
            poll_interval=_seconds(poll_interval, "poll_interval"),
            retention=self.retention,
            retention_by_state=self.retention_by_state,
            retention_count=self.retention_count,
            aging=self.aging,
            max_jobs=max_jobs,
            max_memory_mb=max_memory_mb,
            stuck_grace=_seconds(stuck_grace, "stuck_grace") if stuck_grace is not None else None,
            async_limit=async_limit,
            min_threads=min_threads,
            scale_down_after=_seconds(scale_down_after, "scale_down_after"),
            cancel_grace=_seconds(cancel_grace, "cancel_grace"),
            scheduler=self.scheduler,
        )
        self.open()
        return Worker(self, config)

    def run_worker(
        self,
        queues: Sequence[str] | None = None,
        *,
        threads: int = 8,
        burst: bool = False,
        lease: timedelta | float | None = None,
        grace: timedelta | float = timedelta(seconds=30),
        weights: Mapping[str, int] | None = None,
        poll_interval: timedelta | float = timedelta(seconds=1),
        max_jobs: int | None = None,
        max_memory_mb: int | None = None,
        stuck_grace: timedelta | float | None = None,
        async_limit: int = 100,
        min_threads: int | None = None,
        scale_down_after: timedelta | float = timedelta(seconds=30),
        cancel_grace: timedelta | float = timedelta(seconds=10),
        handle_signals: bool = True,
    ) -> WorkerSummary:
        """Run a worker in this process until SIGTERM/SIGINT (or, with ``burst``, until the
        queues are empty). Blocks; returns a summary of what it did.

        On the first signal it stops claiming, lets running jobs finish for up to ``grace``,
        hands the rest back, and returns; a second signal exits the process at once.
        """
        worker = self.worker(
            queues,
            threads=threads,
            burst=burst,
            lease=lease,
            grace=grace,
            weights=weights,
            poll_interval=poll_interval,
            max_jobs=max_jobs,
            max_memory_mb=max_memory_mb,
            stuck_grace=stuck_grace,
            async_limit=async_limit,
            min_threads=min_threads,
            scale_down_after=scale_down_after,
            cancel_grace=cancel_grace,
        )
        keep_freed_heap()  # this process is the worker's (see jobq.heap)
        if not handle_signals:
            return worker.run()
        with signal_handlers(worker):
            return worker.run()


def _shown_match(record: JobRecord, text: str) -> bool:
    args, kwargs = redact_args(record)
    shown = json.dumps([args, kwargs], ensure_ascii=False).lower()
    return text.lower() in shown


def _secret_positions(fn: Callable[..., Any], secret: tuple[str, ...]) -> tuple[str, ...]:
    """``secret`` plus the positional index of each named parameter that can be passed by
    position, so ``f("ann", "hunter2")`` is redacted like ``f("ann", password="hunter2")``."""
    if not secret:
        return secret
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return secret
    extra = {
        str(i)
        for i, p in enumerate(params)
        if p.name in secret and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    }
    return tuple(sorted(set(secret) | extra))


def _retention(
    value: timedelta | Mapping[JobState | str, timedelta | None] | None,
) -> tuple[timedelta | None, dict[JobState, timedelta | None] | None]:
    """``retention=`` as (default age, per-state ages); refuses anything else by name."""
    if value is None or isinstance(value, timedelta):
        if value is not None and value < timedelta(0):
            raise ConfigurationError(f"retention must not be negative, got {value!r}")
        return value, None
    if not isinstance(value, Mapping):
        raise ConfigurationError(
            "retention must be a timedelta, None, or a mapping of finished state to timedelta "
            f"(e.g. {{'completed': timedelta(days=1), 'dead': timedelta(days=30)}}), got {value!r}"
        )
    per: dict[JobState, timedelta | None] = {}
    for key, age in value.items():
        state = _state(key)
        if not state.is_terminal:
            raise ConfigurationError(
                f"retention state {state.value!r} is not a finished state; use completed, dead, "
                "cancelled or expired"
            )
        if age is not None and (not isinstance(age, timedelta) or age < timedelta(0)):
            raise ConfigurationError(
                f"retention for {state.value} must be a timedelta >= 0 or None, got {age!r}"
            )
        per[state] = age
    # states not named keep the default week
    return timedelta(days=7), per


def _queue_name(name: object) -> str:
    try:
        return validate_queue(name)
    except InvalidJobError as exc:
        raise ConfigurationError(str(exc)) from None


def _job_id(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise JobNotFound(f"job ids are ints, got {value!r}")
    return value


def _state(value: JobState | str) -> JobState:
    try:
        return JobState(value)
    except ValueError:
        raise ConfigurationError(
            f"unknown state {value!r}; use one of {', '.join(s.value for s in JobState)}"
        ) from None


def _seconds(value: timedelta | float, what: str) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigurationError(f"{what} must be a timedelta or seconds >= 0, got {value!r}")
    return timedelta(seconds=value)
