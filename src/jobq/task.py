"""Tasks: registered functions whose calls can be enqueued as jobs.

``Task.enqueue`` is typed with the function's own signature (``ParamSpec``), so a type checker
catches a wrong argument at the call site, not in a worker hours later.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from jobq.exceptions import InvalidJobError
from jobq.options import JobOptions, TaskDefaults

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
        connection: Any = None,
    ) -> TaskCall[P, R]:
        """This task with per-call options; ``.enqueue(...)`` on the result stores the job.

        ``connection``: enqueue in that psycopg connection's open transaction (PostgreSQL).
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
            ),
            connection,
        )


class TaskCall(Generic[P, R]):
    """A task with options fixed for the jobs it enqueues."""

    def __init__(self, task: Task[P, R], options: JobOptions, connection: Any = None) -> None:
        self.task = task
        self.job_options = options
        self.connection = connection

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> Job:
        return self._enqueue([(args, kwargs)], self.connection)[0]

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
