"""jobq on PostgreSQL: ``jobq.App("postgresql://...")``, the same API as on SQLite.

The schema is created when the store is first opened (by the producer, before any worker).
Durability: the server default, ``synchronous_commit=on``, checked on the benchmark database,
with its tables, before every workload. jobq waits for it on every enqueue and every outcome;
only a claim that records no outcomes commits without waiting for the WAL flush (a claim lost
in a crash of the server makes the job run again, which at-least-once allows).

Worker: ``python -m benchmarks.jobq_postgres worker --db URL`` runs
``app.run_worker(queues=["default"], threads=8)``; SIGTERM stops it gracefully.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from benchmarks import jobq_common, pg
from benchmarks.common import System


def url_of(url: str) -> str:
    """The runner names a PostgreSQL store by its URL already."""
    return url


class JobqPostgresClient(jobq_common.JobqClient):
    def __init__(self, url: str) -> None:
        super().__init__(url)  # opening it creates the schema
        pg.require_durable(url, "jobq")


SYSTEM = System(
    name="jobq",
    version=jobq_common.version(),
    store="postgres",
    module="benchmarks.jobq_postgres",
    durability="sync_commit=on",
    durability_note=(
        "jobq.App('postgresql://...'): server default synchronous_commit=on, logged tables "
        "(checked on the database); enqueues and outcomes wait for it, claims that record no "
        "outcomes do not"
    ),
    bulk_api="Task.enqueue_many (one transaction)",
    backlog_api=jobq_common.BACKLOG_API,
    connect=JobqPostgresClient,
)


def main(argv: Sequence[str] | None = None) -> int:
    return jobq_common.worker_main("benchmarks.jobq_postgres", url_of, argv)


if __name__ == "__main__":
    sys.exit(main())
