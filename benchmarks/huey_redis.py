"""huey's ``RedisHuey`` as a Redis-backed peer.

Producer: ``task(out)`` (``Huey.enqueue``: one ``LPUSH``); huey has no bulk enqueue API.
Worker: ``python -m benchmarks.huey_redis worker --db URL`` runs ``huey.consumer.Consumer`` with
``workers=8, worker_type='thread'``; ``RedisHuey`` dequeues with a blocking ``BRPOP`` (its
default ``blocking=True``), so an idle worker wakes as soon as a task arrives.

Durability: whatever the Redis server keeps (the runner reads its persistence settings); huey
takes a task off the queue when a worker starts it, so a task running when the worker dies is
lost.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import huey
from huey import RedisHuey
from huey.consumer import Consumer

from benchmarks import common
from benchmarks.common import WORKER_THREADS, System, append_byte, append_latency


def noop(path: str) -> None:
    append_byte(path)


def latency(path: str, enqueued_at: float) -> None:
    append_latency(path, enqueued_at)


class HueyApp:
    """A ``RedisHuey`` on one Redis database, with the two benchmark tasks registered (named
    ``benchmarks.huey_redis.noop`` / ``.latency`` in producer and worker alike)."""

    def __init__(self, url: str) -> None:
        self.huey = RedisHuey(name="bench", url=url)
        self.noop = self.huey.task()(noop)
        self.latency = self.huey.task()(latency)


class HueyRedisClient:
    def __init__(self, url: str) -> None:
        self.bench = HueyApp(url)

    def enqueue_noop(self, out: str) -> None:
        self.bench.noop(out)

    def enqueue_noop_many(self, out: str, n: int) -> None:
        raise NotImplementedError("huey has no bulk enqueue API")

    def enqueue_backlog(self, out: str, n: int) -> None:
        raise NotImplementedError("workload 4 is not run on Redis")

    def enqueue_latency(self, out: str, enqueued_at: float) -> None:
        self.bench.latency(out, enqueued_at)

    def pending(self) -> int:
        count: int = self.bench.huey.pending_count()  # queued; huey drops a task as it starts
        return count

    def completed(self) -> int | None:
        return None  # huey keeps no record of finished tasks that return None

    def close(self) -> None:
        self.bench.huey.storage.conn.close()


SYSTEM = System(
    name="huey-redis",
    version=huey.__version__,
    store="redis",
    module="benchmarks.huey_redis",
    durability="(Redis)",
    durability_note="RedisHuey: a task is removed from Redis when a worker takes it",
    bulk_api=None,
    backlog_api="not run on Redis",
    connect=HueyRedisClient,
    notes=(f"worker: Consumer(workers={WORKER_THREADS}, worker_type='thread'), blocking BRPOP",),
)


def run_worker(url: str, threads: int) -> None:
    Consumer(HueyApp(url).huey, workers=threads, worker_type="thread").run()


def main(argv: Sequence[str] | None = None) -> int:
    return common.worker_main("benchmarks.huey_redis", "one huey consumer", run_worker, argv)


if __name__ == "__main__":
    # Run from the importable module, not from __main__, so task names match the producer's.
    from benchmarks.huey_redis import main as _main

    sys.exit(_main())
