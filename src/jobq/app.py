"""The :class:`App`: a job store, a registry of tasks, and the verbs around them."""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, ParamSpec, TypeVar, overload

from jobq.backends import Backend, JobFilter, check_url, open_backend, redact_url
from jobq.backends.base import WorkerInfo
from jobq.exceptions import ConfigurationError, JobNotFound
from jobq.job import Job, JobRecord
from jobq.options import (
    JobOptions,
    TaskDefaults,
    build_job,
    validate_queue,
    validate_task_name,
)
from jobq.payload import DEFAULT_MAX_BYTES
from jobq.retry import DEFAULT_RETRY, RetryPolicy
from jobq.states import JobState
from jobq.task import Task
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
        retention: timedelta | None = timedelta(days=7),
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
        self.retention = retention
        self.aging = aging
        self.max_payload_bytes = max_payload_bytes
        self._tasks: dict[str, Task[Any, Any]] = {}
        self._backend: Backend | None = None
        self._open_lock = threading.Lock()
        self._workers: weakref.WeakSet[Worker] = weakref.WeakSet()

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
    ) -> Any:
        """Register a function as a task: ``@app.task`` or ``@app.task(queue=..., ...)``.

        ``name`` defaults to ``module.qualname``; producers and workers must agree on it.
        ``timeout`` fails an attempt that runs longer; ``run_late`` runs a job even after its
        deadline passed (otherwise it ends ``expired``).
        """
        defaults = TaskDefaults(
            queue=queue,
            priority=priority,
            max_attempts=max_attempts,
            timeout=timeout,
            retry=retry,
            run_late=run_late,
        )

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
            t: Task[Any, Any] = Task(self, f, task_name, defaults)
            self._tasks[task_name] = t
            return t

        if fn is not None:
            return register(fn)
        return register

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
        connection: Any = None,
    ) -> Job:
        """Enqueue a job by task name, for producers that do not import the task's code.

        The name need not be registered in this process; if it is, that task's defaults apply.
        With ``connection`` (a psycopg connection, PostgreSQL only) the job is written in that
        connection's open transaction and exists only if it commits.
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
        )
        return self._enqueue_calls(task, [(args, kwargs or {})], options, defaults, connection)[0]

    def _enqueue_calls(
        self,
        task: str,
        calls: Sequence[tuple[Sequence[Any], Mapping[str, Any]]],
        options: JobOptions,
        defaults: TaskDefaults,
        connection: Any = None,
    ) -> list[Job]:
        # Validate every call before writing anything: a bad item refuses the whole batch.
        new = [build_job(task, a, k, options, defaults, self.max_payload_bytes) for a, k in calls]
        if connection is not None:
            return [Job(self, r) for r in self.backend.enqueue_many(new, connection=connection)]
        records = self.backend.enqueue_many(new)
        if any(r.state is JobState.AVAILABLE for r in records):
            for worker in list(self._workers):
                worker.notify()
        return [Job(self, r) for r in records]

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

    def list_jobs(
        self,
        *,
        queue: str | None = None,
        state: JobState | str | None = None,
        task: str | None = None,
        limit: int = 50,
        before_id: int | None = None,
    ) -> list[Job]:
        """Jobs newest first, filtered; ``limit`` is clamped to 1..1000."""
        flt = JobFilter(
            queue=validate_queue(queue) if queue is not None else None,
            state=_state(state) if state is not None else None,
            task=task,
        )
        limit = max(1, min(int(limit), 1000))
        return [Job(self, r) for r in self.backend.list_jobs(flt, limit=limit, before_id=before_id)]

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
            aging=self.aging,
            max_jobs=max_jobs,
            max_memory_mb=max_memory_mb,
            stuck_grace=_seconds(stuck_grace, "stuck_grace") if stuck_grace is not None else None,
            async_limit=async_limit,
            min_threads=min_threads,
            scale_down_after=_seconds(scale_down_after, "scale_down_after"),
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
        )
        if not handle_signals:
            return worker.run()
        with signal_handlers(worker):
            return worker.run()


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
