"""BENCHMARK.md workloads 1-3, written once against :class:`benchmarks.common.System`.

Each workload gets a fresh database file in ``workdir`` (a fresh temporary directory).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    System,
    WorkerProcess,
    latency_summary,
    wait_for_bytes,
    wait_for_lines,
)


def _worker_report(worker: WorkerProcess) -> dict[str, Any]:
    """What the worker process left behind: exit status and anything it logged."""
    lines = worker.log_lines()
    problems = worker.log_problems()
    report: dict[str, Any] = {"worker_stopped_cleanly": worker.stopped_cleanly}
    if lines:
        report["worker_log_tail"] = lines[-10:]
    if problems:
        report["worker_log_problems"] = len(problems)
        report["worker_log_first_problem"] = problems[0]
    return report


def drain(system: System, n: int, workdir: Path, timeout: float) -> dict[str, Any]:
    """Workload 1: enqueue ``n`` jobs one call at a time, then drain them with one worker."""
    db = workdir / "drain.db"
    out = workdir / "drain.out"
    out.touch()
    client = system.connect(db)
    try:
        start = time.perf_counter()
        for _ in range(n):
            client.enqueue_noop(str(out))
        enqueue_s = time.perf_counter() - start
        queued = client.pending()
    finally:
        client.close()

    with WorkerProcess(system, db, workdir) as worker:
        first, last = wait_for_bytes(out, n, worker, timeout)
    # Stopped (SIGTERM) on leaving the block.  Now check that every job ran exactly once.
    ran = out.stat().st_size
    client = system.connect(db)
    try:
        pending_after, completed_after = client.pending(), client.completed()
    finally:
        client.close()
    return {
        "n": n,
        "enqueue_s": enqueue_s,
        "enqueue_per_s": n / enqueue_s,
        "queued_before_drain": queued,
        # From the first completion to the n-th: n - 1 intervals.
        "drain_s": last - first,
        "drain_per_s": (n - 1) / (last - first) if last > first else None,
        "ran": ran,
        "pending_after": pending_after,
        "completed_after": completed_after,
        "ok": queued == n and ran == n and pending_after == 0 and completed_after in (None, n),
        **_worker_report(worker),
    }


def bulk(system: System, n: int, workdir: Path) -> dict[str, Any]:
    """Workload 2: one call that enqueues ``n`` jobs."""
    if system.bulk_api is None:
        return {"n": n, "supported": False}
    db = workdir / "bulk.db"
    out = workdir / "bulk.out"
    client = system.connect(db)
    try:
        start = time.perf_counter()
        client.enqueue_noop_many(str(out), n)
        elapsed = time.perf_counter() - start
        queued = client.pending()
    finally:
        client.close()
    return {
        "n": n,
        "supported": True,
        "api": system.bulk_api,
        "seconds": elapsed,
        "jobs_per_s": n / elapsed,
        "queued": queued,
        "ok": queued == n,
    }


def latency(
    system: System, jobs: int, rate: float, idle: float, workdir: Path, timeout: float
) -> dict[str, Any]:
    """Workload 3: an idle worker; ``jobs`` jobs enqueued at ``rate``/s, each timing its start.

    One warm-up job first proves the worker is up (process start-up is not latency); then the
    worker is left idle for ``idle`` seconds before the paced enqueues begin.
    """
    db = workdir / "latency.db"
    warmup = workdir / "latency-warmup.out"
    out = workdir / "latency.out"
    warmup.touch()
    out.touch()
    client = system.connect(db)
    try:
        with WorkerProcess(system, db, workdir) as worker:
            client.enqueue_noop(str(warmup))
            wait_for_bytes(warmup, 1, worker, timeout)
            time.sleep(idle)
            start = time.perf_counter()
            late = 0.0
            for i in range(jobs):
                delay = start + i / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                else:
                    late = max(late, -delay)
                client.enqueue_latency(str(out), time.time())
            enqueue_span = time.perf_counter() - start
            lines = wait_for_lines(out, jobs, worker, timeout)
    finally:
        client.close()
    samples = [float(line) for line in lines]
    return {
        "jobs": jobs,
        "rate_per_s": rate,
        "idle_s": idle,
        "achieved_rate_per_s": (jobs - 1) / enqueue_span if enqueue_span > 0 else None,
        "max_enqueue_lag_ms": late * 1000.0,
        **latency_summary(samples),
        "ok": len(samples) == jobs,
        **_worker_report(worker),
    }
