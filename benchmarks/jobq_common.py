"""What jobq's two benchmark systems share: the tasks, the producer and the worker.

:mod:`benchmarks.jobq_sqlite` and :mod:`benchmarks.jobq_postgres` differ only in the store URL
and in how they check its durability; the API is the same ``jobq.App``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version
from itertools import islice, repeat

import jobq
from benchmarks import common
from benchmarks.common import BACKLOG_CHUNK, append_byte, append_latency

QUEUE = "default"


def noop(path: str) -> None:
    append_byte(path)


def latency(path: str, enqueued_at: float) -> None:
    append_latency(path, enqueued_at)


class JobqApp:
    """A ``jobq.App`` on one store, with the two benchmark tasks registered.

    The tasks are this module's functions, so their default names
    (``benchmarks.jobq_common.noop`` / ``.latency``) are the same in producer and worker.
    """

    def __init__(self, url: str) -> None:
        self.app = jobq.App(url)
        self.noop = self.app.task(queue=QUEUE)(noop)
        self.latency = self.app.task(queue=QUEUE)(latency)

    def close(self) -> None:
        self.app.close()


def _chunks(item: tuple[str], n: int, size: int) -> Iterator[list[tuple[str]]]:
    items = repeat(item, n)
    while chunk := list(islice(items, size)):
        yield chunk


class JobqClient:
    """The producer: ``Task.enqueue`` / ``Task.enqueue_many`` / ``App.stats``."""

    def __init__(self, url: str) -> None:
        self.bench = JobqApp(url)
        self.bench.app.open()

    def enqueue_noop(self, out: str) -> None:
        self.bench.noop.enqueue(out)

    def enqueue_noop_many(self, out: str, n: int) -> None:
        self.bench.noop.enqueue_many([(out,)] * n)

    def enqueue_backlog(self, out: str, n: int) -> None:
        for chunk in _chunks((out,), n, BACKLOG_CHUNK):
            self.bench.noop.enqueue_many(chunk)

    def enqueue_latency(self, out: str, enqueued_at: float) -> None:
        self.bench.latency.enqueue(out, enqueued_at)

    def _counts(self) -> dict[jobq.JobState, int]:
        return self.bench.app.stats().get(QUEUE, {})

    def pending(self) -> int:
        return sum(count for state, count in self._counts().items() if not state.is_terminal)

    def completed(self) -> int | None:
        return self._counts().get(jobq.JobState.COMPLETED, 0)

    def close(self) -> None:
        self.bench.close()


def version() -> str:
    try:
        return dist_version("jobq")
    except PackageNotFoundError:
        return str(getattr(jobq, "__version__", "?"))


BACKLOG_API = f"Task.enqueue_many, {BACKLOG_CHUNK:,} jobs per call"


def run_worker(url: str, threads: int) -> None:
    """``app.run_worker(queues=['default'], threads=8)``; SIGTERM stops it gracefully."""
    app = JobqApp(url)
    try:
        app.app.run_worker(queues=[QUEUE], threads=threads, burst=False)
    finally:
        app.close()


def worker_main(prog: str, url_of: Callable[[str], str], argv: Sequence[str] | None) -> int:
    """``python -m <prog> worker --db STORE``: one jobq worker on ``url_of(STORE)``."""
    return common.worker_main(
        prog,
        "one jobq worker",
        lambda db, threads: run_worker(url_of(db), threads),
        argv,
        log_warnings=False,
    )
