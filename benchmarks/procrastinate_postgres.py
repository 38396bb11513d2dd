"""procrastinate as a PostgreSQL peer: ``App(connector=PsycopgConnector(...))``.

Producer: ``task.defer(out=...)`` (sync; procrastinate's psycopg connector opens a sync pool for
it); bulk: ``task.batch_defer(...)`` (one ``procrastinate_defer_jobs_v1`` call).  The schema is
applied with ``app.schema_manager.apply_schema()`` when the producer first connects to the fresh
database.

Worker: ``python -m benchmarks.procrastinate_postgres worker --db URL`` runs
``app.run_worker(queues=["default"], concurrency=8)`` (LISTEN/NOTIFY on, procrastinate's
defaults otherwise: finished jobs are kept, ``delete_jobs="never"``); SIGTERM stops it
gracefully.  Its connection pool is sized ``concurrency + 2`` (psycopg_pool's default of 4 would
leave 8 slots waiting for connections).  The tasks are ``async def`` (procrastinate runs sync
tasks in threads, and ``concurrency`` is meant for async ones) and do the job's one ``write``
inline.

Durability: logged tables and the server's ``synchronous_commit=on``; checked on the database.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib.metadata import version as dist_version
from typing import Any

from procrastinate import App, PsycopgConnector
from procrastinate.types import JSONDict

from benchmarks import common, pg
from benchmarks.common import BACKLOG_CHUNK, WORKER_THREADS, System, append_byte, append_latency

QUEUE = "default"


class ProcrastinateApp:
    """A procrastinate ``App`` on one database with the two benchmark tasks registered."""

    def __init__(self, url: str, pool_size: int | None = None) -> None:
        pool: dict[str, Any] = {} if pool_size is None else {"min_size": pool_size}
        if pool_size is not None:
            pool["max_size"] = pool_size
        self.app = App(connector=PsycopgConnector(conninfo=url, **pool))

        @self.app.task(name="noop", queue=QUEUE)
        async def noop(out: str) -> None:
            append_byte(out)

        @self.app.task(name="latency", queue=QUEUE)
        async def latency(out: str, enqueued_at: float) -> None:
            append_latency(out, enqueued_at)

        self.noop = noop
        self.latency = latency


class ProcrastinateClient:
    def __init__(self, url: str) -> None:
        self.bench = ProcrastinateApp(url)
        self.app = self.bench.app
        self.app.open()
        if not self._installed():
            self.app.schema_manager.apply_schema()
        pg.require_durable(url, "procrastinate")

    def _installed(self) -> bool:
        rows = self.app.connector.get_sync_connector().execute_query_all(
            query="SELECT to_regclass('procrastinate_jobs') IS NOT NULL AS installed"
        )
        return bool(rows[0]["installed"])

    def enqueue_noop(self, out: str) -> None:
        self.bench.noop.defer(out=out)

    def enqueue_noop_many(self, out: str, n: int) -> None:
        job: JSONDict = {"out": out}
        self.bench.noop.batch_defer(*([job] * n))

    def enqueue_backlog(self, out: str, n: int) -> None:
        for done in range(0, n, BACKLOG_CHUNK):
            self.enqueue_noop_many(out, min(BACKLOG_CHUNK, n - done))

    def enqueue_latency(self, out: str, enqueued_at: float) -> None:
        self.bench.latency.defer(out=out, enqueued_at=enqueued_at)

    def _stats(self) -> dict[str, Any]:
        queues = self.app.job_manager.list_queues(queue=QUEUE)
        return next(iter(queues), {})

    def pending(self) -> int:
        stats = self._stats()
        return int(stats.get("todo", 0)) + int(stats.get("doing", 0))

    def completed(self) -> int | None:
        return int(self._stats().get("succeeded", 0))

    def close(self) -> None:
        self.app.close()


SYSTEM = System(
    name="procrastinate",
    version=dist_version("procrastinate"),
    store="postgres",
    module="benchmarks.procrastinate_postgres",
    durability="sync_commit=on",
    durability_note=(
        "logged tables, server default synchronous_commit=on (checked on the database); "
        "finished jobs are kept (delete_jobs='never', the default)"
    ),
    bulk_api="Task.batch_defer (one statement)",
    backlog_api=f"Task.batch_defer, {BACKLOG_CHUNK:,} jobs per call",
    connect=ProcrastinateClient,
    notes=(
        f"worker: app.run_worker(concurrency={WORKER_THREADS}), listen_notify on, pool of "
        f"{WORKER_THREADS + 2} connections; async tasks",
    ),
)


def run_worker(url: str, concurrency: int) -> None:
    bench = ProcrastinateApp(url, pool_size=concurrency + 2)
    bench.app.run_worker(queues=[QUEUE], concurrency=concurrency, wait=True)


def main(argv: Sequence[str] | None = None) -> int:
    return common.worker_main(
        "benchmarks.procrastinate_postgres",
        "one procrastinate worker",
        run_worker,
        argv,
        threads_help="concurrency",
    )


if __name__ == "__main__":
    # Build the App in the importable module, not in __main__ (procrastinate warns about that).
    from benchmarks.procrastinate_postgres import main as _main

    sys.exit(_main())
