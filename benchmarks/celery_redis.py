"""Celery on its Redis transport as a Redis-backed peer.

Producer: ``task.delay(out)``; bulk: ``group(task.s(out) for ...).apply_async()`` (one call,
which publishes the messages one by one on one connection). No result backend
(``task_ignore_result``): nothing waits for results here.
Worker: ``python -m benchmarks.celery_redis worker --db URL`` runs ``celery worker
--pool=threads --concurrency=8`` (``app.worker_main``) with Celery's defaults otherwise
(``worker_prefetch_multiplier=4``, ``acks_late=False``), and without gossip, mingle and
heartbeats (one worker, nothing to talk to). SIGTERM is Celery's warm shutdown.

Durability: whatever the Redis server keeps, and Celery's default early acknowledgement: a
message is acknowledged when the worker receives it, before the task runs, so a worker that
dies loses the tasks it had prefetched or was running.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence
from importlib.metadata import version as dist_version

from celery import Celery, group
from celery.exceptions import SecurityWarning
from redis import Redis

from benchmarks import common
from benchmarks.common import WORKER_THREADS, System, append_byte, append_latency

#: Celery's default queue, a Redis list of that name.
QUEUE = "celery"


def noop(path: str) -> None:
    append_byte(path)


def latency(path: str, enqueued_at: float) -> None:
    append_latency(path, enqueued_at)


class CeleryApp:
    def __init__(self, url: str) -> None:
        self.app = Celery("bench", broker=url, set_as_current=True)
        self.app.conf.update(
            task_ignore_result=True,
            broker_connection_retry_on_startup=True,
            worker_hijack_root_logger=False,
        )
        self.noop = self.app.task(name="noop")(noop)
        self.latency = self.app.task(name="latency")(latency)


class CeleryClient:
    def __init__(self, url: str) -> None:
        self.bench = CeleryApp(url)
        self.redis = Redis.from_url(url)

    def enqueue_noop(self, out: str) -> None:
        self.bench.noop.delay(out)

    def enqueue_noop_many(self, out: str, n: int) -> None:
        group(self.bench.noop.s(out) for _ in range(n)).apply_async()

    def enqueue_backlog(self, out: str, n: int) -> None:
        raise NotImplementedError("workload 4 is not run on Redis")

    def enqueue_latency(self, out: str, enqueued_at: float) -> None:
        self.bench.latency.delay(out, enqueued_at)

    def pending(self) -> int:
        # queued messages, plus the ones a worker took and has not acknowledged
        return int(self.redis.llen(QUEUE)) + int(self.redis.hlen("unacked"))

    def completed(self) -> int | None:
        return None  # no result backend

    def close(self) -> None:
        self.redis.close()
        self.bench.app.close()


SYSTEM = System(
    name="celery",
    version=dist_version("celery"),
    store="redis",
    module="benchmarks.celery_redis",
    durability="(Redis)",
    durability_note=(
        "Redis transport, default early ack (acks_late=False): acknowledged on receipt, "
        "before the task runs; no result backend"
    ),
    bulk_api="group(...).apply_async() (one call, one publish per task)",
    backlog_api="not run on Redis",
    connect=CeleryClient,
    notes=(
        f"worker: celery worker --pool=threads --concurrency={WORKER_THREADS}, default "
        "prefetch multiplier 4, without gossip/mingle/heartbeat",
    ),
)


def run_worker(url: str, threads: int) -> None:
    # The benchmark runs as whoever runs it (root on CI machines): not worth a warning line.
    warnings.filterwarnings("ignore", category=SecurityWarning)
    CeleryApp(url).app.worker_main(
        [
            "worker",
            "--pool=threads",
            f"--concurrency={threads}",
            "--loglevel=WARNING",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    return common.worker_main(
        "benchmarks.celery_redis", "one celery worker", run_worker, argv, log_warnings=False
    )


if __name__ == "__main__":
    from benchmarks.celery_redis import main as _main

    sys.exit(_main())
