"""arq as a Redis-backed peer (asyncio).

Producer: ``ArqRedis.enqueue_job("noop", out)`` on one connection pool, driven by a private
event loop; arq has no bulk enqueue API.
Worker: ``python -m benchmarks.arq_redis worker --db URL`` runs ``arq.Worker(max_jobs=8)``
(8 async slots) with arq's defaults otherwise: it polls the queue every ``poll_delay`` = 0.5 s
(arq has no blocking wait), reading up to 100 ready jobs a poll. SIGTERM stops it (arq's own
signal handling).

Durability: whatever the Redis server keeps; a job stays in the queue until it finished (its
result is kept for arq's default ``keep_result`` of 3600 s).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from importlib.metadata import version as dist_version
from typing import Any

from arq import Worker, create_pool
from arq.connections import RedisSettings
from arq.constants import default_queue_name, result_key_prefix
from arq.worker import func

from benchmarks import common
from benchmarks.common import WORKER_THREADS, System, append_byte, append_latency


async def noop(ctx: dict[str, Any], path: str) -> None:
    append_byte(path)


async def latency(ctx: dict[str, Any], path: str, enqueued_at: float) -> None:
    append_latency(path, enqueued_at)


class ArqClient:
    def __init__(self, url: str) -> None:
        self.loop = asyncio.Runner()
        self.pool = self.loop.run(create_pool(RedisSettings.from_dsn(url)))

    def enqueue_noop(self, out: str) -> None:
        self.loop.run(self.pool.enqueue_job("noop", out))

    def enqueue_noop_many(self, out: str, n: int) -> None:
        raise NotImplementedError("arq has no bulk enqueue API")

    def enqueue_backlog(self, out: str, n: int) -> None:
        raise NotImplementedError("workload 4 is not run on Redis")

    def enqueue_latency(self, out: str, enqueued_at: float) -> None:
        self.loop.run(self.pool.enqueue_job("latency", out, enqueued_at))

    def pending(self) -> int:
        return int(self.loop.run(self.pool.zcard(default_queue_name)))

    def completed(self) -> int | None:
        async def count() -> int:
            return sum([1 async for _ in self.pool.scan_iter(f"{result_key_prefix}*", 1000)])

        return self.loop.run(count())

    def close(self) -> None:
        try:
            self.loop.run(self.pool.aclose())
        finally:
            self.loop.close()


SYSTEM = System(
    name="arq",
    version=dist_version("arq"),
    store="redis",
    module="benchmarks.arq_redis",
    durability="(Redis)",
    durability_note="a job stays queued until it finished (results kept keep_result=3600 s)",
    bulk_api=None,
    backlog_api="not run on Redis",
    connect=ArqClient,
    notes=(
        f"worker: arq.Worker(max_jobs={WORKER_THREADS}), its default poll_delay=0.5 s "
        "(arq polls; it has no blocking wait): latency reflects that",
    ),
)


def run_worker(url: str, slots: int) -> None:
    worker = Worker(
        functions=[func(noop, name="noop"), func(latency, name="latency")],
        redis_settings=RedisSettings.from_dsn(url),
        max_jobs=slots,
    )
    worker.run()


def main(argv: Sequence[str] | None = None) -> int:
    return common.worker_main(
        "benchmarks.arq_redis", "one arq worker", run_worker, argv, threads_help="max_jobs"
    )


if __name__ == "__main__":
    from benchmarks.arq_redis import main as _main

    sys.exit(_main())
