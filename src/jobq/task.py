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
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    def __repr__(self) -> str:
        return f"<Task {self.name} queue={self.defaults.queue}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> Job:
        """Store one job that will call this task with these arguments; returns once committed."""
        return self.app._enqueue_calls(self.name, [(args, kwargs)], JobOptions(), self.defaults)[0]

    def enqueue_many(self, calls: Iterable[Sequence[Any] | Mapping[str, Any]]) -> list[Job]:
        """Store one job per call in one transaction: all are committed, or none.

        Each item is a tuple of positional arguments, or a mapping of keyword arguments.
        """
        return self.options().enqueue_many(calls)

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
    ) -> TaskCall[P, R]:
        """This task with per-call options; ``.enqueue(...)`` on the result stores the job."""
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
        )


class TaskCall(Generic[P, R]):
    """A task with options fixed for the jobs it enqueues."""

    def __init__(self, task: Task[P, R], options: JobOptions) -> None:
        self.task = task
        self.job_options = options

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> Job:
        t = self.task
        return t.app._enqueue_calls(t.name, [(args, kwargs)], self.job_options, t.defaults)[0]

    def enqueue_many(self, calls: Iterable[Sequence[Any] | Mapping[str, Any]]) -> list[Job]:
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
        t = self.task
        return t.app._enqueue_calls(t.name, pairs, self.job_options, t.defaults)
