"""rq as a Redis-backed peer.

Producer: ``Queue.enqueue(noop, out)``; bulk: ``Queue.enqueue_many`` (one Redis pipeline).
Worker: ``python -m benchmarks.rq_redis worker --db URL`` runs rq's ``WorkerPool`` with 8
``SimpleWorker`` processes (what ``rq worker-pool -n 8 -w rq.worker.SimpleWorker`` runs): rq
has no threads, so its 8 slots are 8 processes, each running jobs in-process (no fork per job)
and waiting on the queue with a blocking ``BLPOP``. SIGTERM stops the pool and its workers.

Durability: whatever the Redis server keeps; a job's hash stays in Redis while it runs and
after (finished jobs are kept for rq's default ``result_ttl`` of 500 s).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib.metadata import version as dist_version

from redis import Redis
from rq import Queue
from rq.registry import FinishedJobRegistry, StartedJobRegistry
from rq.worker import SimpleWorker
from rq.worker_pool import WorkerPool

from benchmarks import common
from benchmarks.common import WORKER_THREADS, System, append_byte, append_latency

QUEUE = "default"


def noop(path: str) -> None:
    append_byte(path)


def latency(path: str, enqueued_at: float) -> None:
    append_latency(path, enqueued_at)


class RqClient:
    def __init__(self, url: str) -> None:
        self.conn = Redis.from_url(url)
        self.queue = Queue(QUEUE, connection=self.conn)

    def enqueue_noop(self, out: str) -> None:
        self.queue.enqueue(noop, out)

    def enqueue_noop_many(self, out: str, n: int) -> None:
        self.queue.enqueue_many([Queue.prepare_data(noop, (out,)) for _ in range(n)])

    def enqueue_backlog(self, out: str, n: int) -> None:
        raise NotImplementedError("workload 4 is not run on Redis")

    def enqueue_latency(self, out: str, enqueued_at: float) -> None:
        self.queue.enqueue(latency, out, enqueued_at)

    def pending(self) -> int:
        return len(self.queue) + StartedJobRegistry(queue=self.queue).count

    def completed(self) -> int | None:
        return FinishedJobRegistry(queue=self.queue).count

    def close(self) -> None:
        self.conn.close()


SYSTEM = System(
    name="rq",
    version=dist_version("rq"),
    store="redis",
    module="benchmarks.rq_redis",
    durability="(Redis)",
    durability_note="a job stays in Redis until it finished (kept result_ttl=500 s after)",
    bulk_api="Queue.enqueue_many (one pipeline)",
    backlog_api="not run on Redis",
    connect=RqClient,
    notes=(
        f"worker: WorkerPool(num_workers={WORKER_THREADS}, worker_class=SimpleWorker): "
        f"{WORKER_THREADS} processes, not threads (rq has none)",
    ),
)


def run_worker(url: str, workers: int) -> None:
    pool = WorkerPool(
        [QUEUE], connection=Redis.from_url(url), num_workers=workers, worker_class=SimpleWorker
    )
    pool.start(logging_level="WARNING")


def main(argv: Sequence[str] | None = None) -> int:
    return common.worker_main(
        "benchmarks.rq_redis",
        "one rq worker pool",
        run_worker,
        argv,
        threads_help="worker processes",
    )


if __name__ == "__main__":
    from benchmarks.rq_redis import main as _main

    sys.exit(_main())
