"""dramatiq on its ``RedisBroker`` as a Redis-backed peer.

Producer: ``actor.send(out)`` (one Lua call on Redis); dramatiq has no bulk enqueue API
(``group`` sends its messages one by one).
Worker: ``python -m benchmarks.dramatiq_redis worker --db URL`` runs ``dramatiq.Worker(broker,
worker_threads=8)`` in one process (what ``dramatiq --processes 1 --threads 8`` runs, without
the CLI's process supervisor), with dramatiq's default middleware and prefetch
(2 x threads); SIGTERM stops it.

Durability: whatever the Redis server keeps; a message stays in Redis until it is acknowledged
after its actor ran (a worker that dies leaves it to be requeued).
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Sequence
from importlib.metadata import version as dist_version

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from benchmarks import common
from benchmarks.common import WORKER_THREADS, System, append_byte, append_latency

QUEUE = "default"
NAMESPACE = "dramatiq"


def noop(path: str) -> None:
    append_byte(path)


def latency(path: str, enqueued_at: float) -> None:
    append_latency(path, enqueued_at)


class DramatiqApp:
    """A ``RedisBroker`` on one Redis database, with the two actors declared on it."""

    def __init__(self, url: str) -> None:
        self.broker = RedisBroker(url=url, namespace=NAMESPACE)
        self.noop = dramatiq.actor(noop, broker=self.broker, actor_name="noop", queue_name=QUEUE)
        self.latency = dramatiq.actor(
            latency, broker=self.broker, actor_name="latency", queue_name=QUEUE
        )


class DramatiqClient:
    def __init__(self, url: str) -> None:
        self.bench = DramatiqApp(url)

    def enqueue_noop(self, out: str) -> None:
        self.bench.noop.send(out)

    def enqueue_noop_many(self, out: str, n: int) -> None:
        raise NotImplementedError("dramatiq has no bulk enqueue API")

    def enqueue_backlog(self, out: str, n: int) -> None:
        raise NotImplementedError("workload 4 is not run on Redis")

    def enqueue_latency(self, out: str, enqueued_at: float) -> None:
        self.bench.latency.send(out, enqueued_at)

    def pending(self) -> int:
        # every message not yet acknowledged (queued or running) is in the queue's hash
        return int(self.bench.broker.client.hlen(f"{NAMESPACE}:{QUEUE}.msgs"))

    def completed(self) -> int | None:
        return None  # no result backend: nothing records a finished message

    def close(self) -> None:
        self.bench.broker.close()


SYSTEM = System(
    name="dramatiq",
    version=dist_version("dramatiq"),
    store="redis",
    module="benchmarks.dramatiq_redis",
    durability="(Redis)",
    durability_note="RedisBroker: a message is acknowledged (deleted) after its actor ran",
    bulk_api=None,
    backlog_api="not run on Redis",
    connect=DramatiqClient,
    notes=(
        f"worker: dramatiq.Worker(worker_threads={WORKER_THREADS}) in one process, default "
        "middleware and prefetch",
        "an idle consumer backs off between fetches (dramatiq's RedisBroker polls; up to "
        "worker_timeout=1 s by default): latency reflects that",
    ),
)


def run_worker(url: str, threads: int) -> None:
    bench = DramatiqApp(url)
    worker = dramatiq.Worker(bench.broker, worker_threads=threads)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    worker.start()
    stop.wait()
    worker.stop()
    bench.broker.close()


def main(argv: Sequence[str] | None = None) -> int:
    return common.worker_main("benchmarks.dramatiq_redis", "one dramatiq worker", run_worker, argv)


if __name__ == "__main__":
    from benchmarks.dramatiq_redis import main as _main

    sys.exit(_main())
