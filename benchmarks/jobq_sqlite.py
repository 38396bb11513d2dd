"""jobq on SQLite with its default (durable) profile: WAL, ``synchronous=FULL``.

Worker: ``python -m benchmarks.jobq_sqlite worker --db PATH`` runs
``app.run_worker(queues=["default"], threads=8)``; SIGTERM stops it gracefully.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

import jobq
from benchmarks.common import (
    WORKER_THREADS,
    System,
    append_byte,
    append_latency,
    sqlite_journal_mode,
)

QUEUE = "default"


def noop(path: str) -> None:
    append_byte(path)


def latency(path: str, enqueued_at: float) -> None:
    append_latency(path, enqueued_at)


class JobqApp:
    """A ``jobq.App`` on one file, with the two benchmark tasks registered.

    The tasks are this module's functions, so their default names
    (``benchmarks.jobq_sqlite.noop`` / ``.latency``) are the same in producer and worker.
    """

    def __init__(self, db: Path) -> None:
        self.app = jobq.App(f"sqlite:///{db.resolve()}")
        self.noop = self.app.task(queue=QUEUE)(noop)
        self.latency = self.app.task(queue=QUEUE)(latency)

    def close(self) -> None:
        self.app.close()


class JobqClient:
    def __init__(self, db: Path) -> None:
        self.bench = JobqApp(db)
        self.bench.app.open()
        synchronous = getattr(self.bench.app.backend, "synchronous", "?")
        journal = sqlite_journal_mode(db)
        if (journal, synchronous) != ("wal", "FULL"):
            raise RuntimeError(f"jobq runs journal_mode={journal}, synchronous={synchronous}")

    def enqueue_noop(self, out: str) -> None:
        self.bench.noop.enqueue(out)

    def enqueue_noop_many(self, out: str, n: int) -> None:
        self.bench.noop.enqueue_many([(out,)] * n)

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


def _version() -> str:
    try:
        return dist_version("jobq")
    except PackageNotFoundError:
        return str(getattr(jobq, "__version__", "?"))


SYSTEM = System(
    name="jobq",
    version=_version(),
    module="benchmarks.jobq_sqlite",
    durability="WAL, sync=FULL",
    durability_note=(
        "jobq.App('sqlite:///...') default profile: WAL, synchronous=FULL "
        "(checked on the backend and the file)"
    ),
    bulk_api="Task.enqueue_many (one transaction)",
    connect=JobqClient,
)


def run_worker(db: Path, threads: int) -> None:
    app = JobqApp(db)
    try:
        app.app.run_worker(queues=[QUEUE], threads=threads, burst=False)
    finally:
        app.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.jobq_sqlite")
    sub = parser.add_subparsers(dest="command", required=True)
    worker = sub.add_parser("worker", help="run one jobq worker on --db")
    worker.add_argument("--db", type=Path, required=True)
    worker.add_argument("--threads", type=int, default=WORKER_THREADS)
    args: Any = parser.parse_args(argv)
    run_worker(args.db, args.threads)
    return 0


if __name__ == "__main__":
    # Run from the importable module, not from __main__, so task names match the producer's.
    from benchmarks.jobq_sqlite import main as _main

    sys.exit(_main())
