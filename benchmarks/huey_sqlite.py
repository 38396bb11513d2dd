"""huey's ``SqliteHuey`` (WAL) as a benchmark peer.

Durability: ``SqliteHuey`` runs ``pragma synchronous=0`` (OFF) unless it is given
``fsync=True``, which makes it ``synchronous=2`` (FULL).  jobq's default is WAL + FULL, so huey
runs with ``fsync=True`` here: like with like.

Worker: ``python -m benchmarks.huey_sqlite worker --db PATH`` runs ``huey.consumer.Consumer``
with ``workers=8, worker_type='thread'`` and huey's default polling (an idle worker thread
sleeps 0.1 s, backing off by x1.15 up to 10 s).
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Sequence

import huey
from huey import SqliteHuey
from huey.consumer import Consumer

from benchmarks import common
from benchmarks.common import BACKLOG_CHUNK, System, append_byte, append_latency

FSYNC = True  # synchronous=FULL, matching jobq's default


def noop(path: str) -> None:
    append_byte(path)


def latency(path: str, enqueued_at: float) -> None:
    append_latency(path, enqueued_at)


class HueyApp:
    """A ``SqliteHuey`` on one file, with the two benchmark tasks registered.

    The tasks are this module's functions, so huey names them
    ``benchmarks.huey_sqlite.noop`` / ``.latency`` in the producer and in the worker alike.
    """

    def __init__(self, db: str) -> None:
        self.huey = SqliteHuey(name="bench", filename=db, fsync=FSYNC, journal_mode="wal")
        self.noop = self.huey.task()(noop)
        self.latency = self.huey.task()(latency)


class HueyClient:
    def __init__(self, db: str) -> None:
        self.bench = HueyApp(db)
        conn = self.bench.huey.storage.conn
        journal = conn.execute("pragma journal_mode").fetchone()[0]
        synchronous = conn.execute("pragma synchronous").fetchone()[0]
        if (journal, synchronous) != ("wal", 2):
            raise RuntimeError(f"huey runs journal_mode={journal}, synchronous={synchronous}")

    def enqueue_noop(self, out: str) -> None:
        self.bench.noop(out)

    def enqueue_noop_many(self, out: str, n: int) -> None:
        raise NotImplementedError("huey has no bulk enqueue API")

    def enqueue_backlog(self, out: str, n: int) -> None:
        """The rows ``Huey.enqueue`` writes, inserted ``BACKLOG_CHUNK`` per transaction.

        ``Huey.enqueue(task)`` is ``storage.enqueue(huey.serialize_task(task), task.priority)``,
        one committed insert of ``(queue, data, priority or 0)``; this builds the same row for
        every task (each has its own id) and inserts them with ``executemany``.
        """
        app, storage = self.bench.huey, self.bench.huey.storage
        sql = "insert into task (queue, data, priority) values (?, ?, ?)"
        done = 0
        while done < n:
            count = min(BACKLOG_CHUNK, n - done)
            rows = []
            for _ in range(count):
                task = self.bench.noop.s(out)
                rows.append(
                    (storage.name, sqlite3.Binary(app.serialize_task(task)), task.priority or 0)
                )
            with storage.db(commit=True) as cursor:
                cursor.executemany(sql, rows)
            done += count

    def enqueue_latency(self, out: str, enqueued_at: float) -> None:
        self.bench.latency(out, enqueued_at)

    def pending(self) -> int:
        # huey deletes a task row when a worker takes it: this counts queued, not running.
        count: int = self.bench.huey.pending_count()
        return count

    def completed(self) -> int | None:
        return None  # huey keeps no record of finished tasks that return None

    def close(self) -> None:
        self.bench.huey.storage.close()


SYSTEM = System(
    name="huey",
    version=huey.__version__,
    store="sqlite",
    module="benchmarks.huey_sqlite",
    durability="WAL, sync=FULL",
    durability_note=(
        "SqliteHuey(fsync=True): WAL, synchronous=FULL (checked on the connection); "
        "huey's default fsync=False means synchronous=OFF"
    ),
    bulk_api=None,
    backlog_api=(
        f"direct SQL: the rows Huey.enqueue writes, executemany, {BACKLOG_CHUNK:,} per transaction"
    ),
    connect=HueyClient,
    notes=(
        "no bulk enqueue: Huey.enqueue() commits each task in its own 'begin exclusive' "
        "transaction and there is no public way to group them",
        "idle worker threads poll with backoff (0.1 s x1.15 up to 10 s): latency depends on "
        "how long the worker has been idle",
    ),
)


def run_worker(db: str, threads: int) -> None:
    app = HueyApp(db)
    consumer = Consumer(app.huey, workers=threads, worker_type="thread")
    consumer.run()  # SIGTERM: stop, then return


def main(argv: Sequence[str] | None = None) -> int:
    return common.worker_main("benchmarks.huey_sqlite", "one huey consumer", run_worker, argv)


if __name__ == "__main__":
    # Run from the importable module, not from __main__, so task names match the producer's.
    from benchmarks.huey_sqlite import main as _main

    sys.exit(_main())
