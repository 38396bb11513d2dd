"""pgqueuer as a PostgreSQL peer, through its async API on asyncpg, the driver its README uses.

Producer: ``Queries(AsyncpgDriver(conn)).enqueue(entrypoint, payload)`` on one connection;
bulk: the same call with lists (one ``INSERT ... SELECT FROM UNNEST(...)``).  The schema is
installed with ``Queries.install()`` (what ``pgq install`` runs) when the producer first
connects to the fresh database.

pgqueuer's psycopg driver is not used: it shares its one connection between queries and a
LISTEN watcher that holds the connection for up to 1 s while no notification comes, which
stalled this benchmark's drains for about a second (see the README).

Worker: ``python -m benchmarks.pgqueuer_postgres worker --db URL`` runs
``pgqueuer.run(factory, batch_size=10, max_concurrent_tasks=20)`` (what ``pgq run`` runs:
uvloop, SIGTERM stops it gracefully).  10 is pgqueuer's default batch size, and
``max_concurrent_tasks`` (its per-worker concurrency cap) must be at least twice the batch size,
so 20 is the smallest cap that keeps the default batch.  A cap of 8, like the 8 threads of the
others, would force ``batch_size=4``, which cut pgqueuer's drain rate to 40% on this workload
(see the README); the no-op jobs finish as soon as they are dispatched anyway.  The entrypoints are
``async def`` (pgqueuer runs nothing else) and do the job's one ``write`` inline.

Durability: ``Durability.durable`` (pgqueuer's default: every table logged) and the server's
``synchronous_commit=on``; checked on the database after the install.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from importlib.metadata import version as dist_version
from typing import Any

import asyncpg
import pgqueuer
import uvloop
from pgqueuer import AsyncpgDriver, PgQueuer, Queries
from pgqueuer.models import Job

from benchmarks import common, pg
from benchmarks.common import BACKLOG_CHUNK, WORKER_THREADS, System, append_byte, append_latency

NOOP = "noop"
LATENCY = "latency"
#: pgqueuer's default dequeue batch (``pgq run --batch-size``).
BATCH_SIZE = 10
#: pgqueuer requires max_concurrent_tasks >= 2 * batch_size.
MAX_CONCURRENT_TASKS = max(WORKER_THREADS, 2 * BATCH_SIZE)


def _latency_payload(out: str, enqueued_at: float) -> bytes:
    return json.dumps({"out": out, "enqueued_at": enqueued_at}).encode()


class PgqueuerClient:
    """The producer: one asyncpg connection driven by a private event loop."""

    def __init__(self, url: str) -> None:
        self.loop = asyncio.Runner()
        self.conn = self.loop.run(asyncpg.connect(url))
        self.queries = Queries(AsyncpgDriver(self.conn))
        if not self.loop.run(self.queries.schema_is_installed()):
            self.loop.run(self.queries.install())
        pg.require_durable(url, "pgqueuer")

    def enqueue_noop(self, out: str) -> None:
        self.loop.run(self.queries.enqueue(NOOP, out.encode()))

    def enqueue_noop_many(self, out: str, n: int) -> None:
        self.loop.run(self.queries.enqueue([NOOP] * n, [out.encode()] * n, [0] * n))

    def enqueue_backlog(self, out: str, n: int) -> None:
        for done in range(0, n, BACKLOG_CHUNK):
            self.enqueue_noop_many(out, min(BACKLOG_CHUNK, n - done))

    def enqueue_latency(self, out: str, enqueued_at: float) -> None:
        self.loop.run(self.queries.enqueue(LATENCY, _latency_payload(out, enqueued_at)))

    def pending(self) -> int:
        sizes = self.loop.run(self.queries.queue_size())
        return sum(s.count for s in sizes if s.status in ("queued", "picked"))

    def completed(self) -> int | None:
        # Folds pgqueuer's job log into its statistics table first, then sums it.
        stats = self.loop.run(self.queries.throughput_summary())
        return sum(s.total_count for s in stats if s.status == "successful")

    def close(self) -> None:
        try:
            self.loop.run(self.conn.close())
        finally:
            self.loop.close()


SYSTEM = System(
    name="pgqueuer",
    version=dist_version("pgqueuer"),
    store="postgres",
    module="benchmarks.pgqueuer_postgres",
    durability="sync_commit=on",
    durability_note=(
        "default Durability.durable (all tables logged), server default synchronous_commit=on "
        "(checked on the database)"
    ),
    bulk_api="Queries.enqueue with lists (one INSERT ... UNNEST)",
    backlog_api=f"Queries.enqueue with lists, {BACKLOG_CHUNK:,} jobs per call",
    connect=PgqueuerClient,
    notes=(
        f"worker: pgqueuer.run(batch_size={BATCH_SIZE} (its default), "
        f"max_concurrent_tasks={MAX_CONCURRENT_TASKS} (the least it allows with that batch)) "
        "on uvloop, one asyncpg connection; async entrypoints",
    ),
)


def _factory(url: str) -> Any:
    """What ``pgq run`` is given: an async context manager yielding the PgQueuer."""

    @asynccontextmanager
    async def factory() -> AsyncIterator[PgQueuer]:
        conn = await asyncpg.connect(url)
        try:
            pgq = PgQueuer(AsyncpgDriver(conn))

            @pgq.entrypoint(NOOP)
            async def noop(job: Job) -> None:
                assert job.payload is not None
                append_byte(job.payload.decode())

            @pgq.entrypoint(LATENCY)
            async def latency(job: Job) -> None:
                assert job.payload is not None
                args = json.loads(job.payload)
                append_latency(args["out"], args["enqueued_at"])

            yield pgq
        finally:
            await conn.close()

    return factory


def run_worker(url: str, slots: int) -> None:
    uvloop.run(
        pgqueuer.run(
            _factory(url),
            batch_size=BATCH_SIZE,
            max_concurrent_tasks=max(slots, 2 * BATCH_SIZE),
        )
    )


def main(argv: Sequence[str] | None = None) -> int:
    return common.worker_main(
        "benchmarks.pgqueuer_postgres",
        "one pgqueuer worker",
        run_worker,
        argv,
        threads_help="max_concurrent_tasks, raised to twice the batch size if lower",
    )


if __name__ == "__main__":
    sys.exit(main())
