"""Tasks: registered functions whose calls can be enqueued as jobs.

``Task.enqueue`` is typed with the function's own signature (``ParamSpec``), so a type checker
catches a wrong argument at the call site, not in a worker hours later.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from jobq.exceptions import InvalidJobError
from jobq.options import JobOptions, RateLimit, TaskDefaults

if TYPE_CHECKING:
    from jobq.app import App
    from jobq.job import Job

P = ParamSpec("P")
R = TypeVar("R")


class Task(Generic[P, R]):
    """A function registered with an :class:`jobq.App` under ``name``.

    Calling the task runs the function directly, in this thread; ``enqueue`` stores a job.
    """

    def __init__(self, app: App, fn: Callable[P, R], name: str, defaults: TaskDefaults) -> None:
        self.app = app
        self.fn = fn
        self.name = name
        self.defaults = defaults
        self.is_async = inspect.iscoroutinefunction(fn)
        try:
            self._own_connection_param = "connection" in inspect.signature(fn).parameters
        except (TypeError, ValueError):  # builtins without a signature
            self._own_connection_param = False
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    def __repr__(self) -> str:
        return f"<Task {self.name} queue={self.defaults.queue}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> Job:
        """Store one job that will call this task with these arguments; returns once committed.

        ``connection=conn`` (a psycopg connection; PostgreSQL only) writes the job in that
        connection's open transaction instead, so it exists only if the transaction commits.
        A task that has a parameter of its own named ``connection`` receives it as an argument;
        use ``.options(connection=conn)`` there (type checkers also see only that form).
        """
        connection = None
        if "connection" in kwargs and not self._own_connection_param:
            connection = kwargs.pop("connection")
        return TaskCall(self, JobOptions(), connection).enqueue(*args, **kwargs)

    def enqueue_many(
        self, calls: Iterable[Sequence[Any] | Mapping[str, Any]], *, connection: Any = None
    ) -> list[Job]:
        """Store one job per call in one transaction: all are committed, or none.

        Each item is a tuple of positional arguments, or a mapping of keyword arguments.
        ``connection``: use that psycopg connection's open transaction (PostgreSQL).
        """
        return self.options().enqueue_many(calls, connection=connection)

    def options(
        self,
        *,
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
    ) -> TaskCall[P, R]:
        """This task with per-call options; ``.enqueue(...)`` on the result stores the job.

        ``unique_key``/``on_conflict`` ("skip", "replace", "raise")/``unique_window``: at most
        one active job per key (see README, Unique jobs). ``depends_on``: jobs or ids that must
        complete first (``allow_failed``: run even if one fails). ``concurrency_key``/
        ``concurrency_limit`` and ``rate_key``/``rate_limit`` ("10/s"): limits across all
        workers. ``wait_if_full``: wait that long for room in a full queue instead of raising
        :class:`jobq.QueueFull`. ``connection``: enqueue in that psycopg connection's open
        transaction (PostgreSQL).
        """
        return TaskCall(
            self,
            JobOptions(
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
            ),
            connection,
        )

    def call(self, *args: P.args, **kwargs: P.kwargs) -> Call:
        """A call of this task not yet enqueued, for :meth:`jobq.App.group`."""
        return Call(self.name, args, kwargs, JobOptions(), self.defaults)


@dataclass(frozen=True, slots=True)
class Call:
    """One task call with its options, not yet enqueued (``task.call(...)``)."""

    task: str
    args: Sequence[Any]
    kwargs: Mapping[str, Any]
    options: JobOptions
    defaults: TaskDefaults


class TaskCall(Generic[P, R]):
    """A task with options fixed for the jobs it enqueues."""

    def __init__(self, task: Task[P, R], options: JobOptions, connection: Any = None) -> None:
        self.task = task
        self.job_options = options
        self.connection = connection

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> Job:
        return self._enqueue([(args, kwargs)], self.connection)[0]

    def call(self, *args: P.args, **kwargs: P.kwargs) -> Call:
        """A call with these options, not yet enqueued, for :meth:`jobq.App.group`."""
        return Call(self.task.name, args, kwargs, self.job_options, self.task.defaults)

    def enqueue_many(
        self, calls: Iterable[Sequence[Any] | Mapping[str, Any]], *, connection: Any = None
    ) -> list[Job]:
        """One job per call, in one transaction (``connection``'s, if given)."""
        pairs: list[tuple[Sequence[Any], Mapping[str, Any]]] = []
        for i, call in enumerate(calls):
            if isinstance(call, Mapping):
                pairs.append(((), call))
            elif isinstance(call, tuple | list):
                pairs.append((call, {}))
            else:
                raise InvalidJobError(
                    f"enqueue_many item {i} is {call!r}; give a tuple of positional arguments "
                    "or a dict of keyword arguments"
                )
        return self._enqueue(pairs, connection if connection is not None else self.connection)

    def _enqueue(
        self, calls: Sequence[tuple[Sequence[Any], Mapping[str, Any]]], connection: Any
    ) -> list[Job]:
        t = self.task
        return t.app._enqueue_calls(t.name, calls, self.job_options, t.defaults, connection)
