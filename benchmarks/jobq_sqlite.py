"""jobq on SQLite with its default (durable) profile: WAL, ``synchronous=FULL``.

Worker: ``python -m benchmarks.jobq_sqlite worker --db PATH`` runs
``app.run_worker(queues=["default"], threads=8)``; SIGTERM stops it gracefully.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from benchmarks import jobq_common
from benchmarks.common import System, sqlite_journal_mode


def url_of(db: str) -> str:
    """The runner names a SQLite store by its file path."""
    return f"sqlite:///{Path(db).resolve()}"


class JobqSqliteClient(jobq_common.JobqClient):
    def __init__(self, db: str) -> None:
        super().__init__(url_of(db))
        synchronous = getattr(self.bench.app.backend, "synchronous", "?")
        journal = sqlite_journal_mode(Path(db))
        if (journal, synchronous) != ("wal", "FULL"):
            raise RuntimeError(f"jobq runs journal_mode={journal}, synchronous={synchronous}")


SYSTEM = System(
    name="jobq",
    version=jobq_common.version(),
    store="sqlite",
    module="benchmarks.jobq_sqlite",
    durability="WAL, sync=FULL",
    durability_note=(
        "jobq.App('sqlite:///...') default profile: WAL, synchronous=FULL "
        "(checked on the backend and the file)"
    ),
    bulk_api="Task.enqueue_many (one transaction)",
    backlog_api=jobq_common.BACKLOG_API,
    connect=JobqSqliteClient,
)


def main(argv: Sequence[str] | None = None) -> int:
    return jobq_common.worker_main("benchmarks.jobq_sqlite", url_of, argv)


if __name__ == "__main__":
    sys.exit(main())
