"""The four workloads (drain, bulk, latency, backlog), written once against ``SystemInfo``.

Each workload gets a fresh store from ``stores`` (a database file in ``workdir``, a fresh
temporary directory, a fresh PostgreSQL database, or an emptied Redis database), removed or
emptied when the workload ends. The producer and the worker are subprocesses running the
system's own interpreter; timed enqueue loops run inside the producer (see
:mod:`benchmarks.client`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from benchmarks.client import RemoteClient
from benchmarks.common import (
    Store,
    StoreFactory,
    SystemInfo,
    WorkerProcess,
    latency_summary,
    ratio,
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


def _counts(system: SystemInfo, store: Store, workdir: Path) -> tuple[int, int | None]:
    """``(pending, completed)`` as the system itself reports them."""
    with RemoteClient(system, store.locator, workdir, "counts") as client:
        return client.pending(), client.completed()


def quiesce() -> None:
    """Write out the dirty pages of the OS before a timed phase, so that the writeback of what
    ran before (another system's run, the enqueues) does not land inside it."""
    os.sync()


def drain(
    system: SystemInfo, stores: StoreFactory, n: int, workdir: Path, timeout: float
) -> dict[str, Any]:
    """Workload 1: enqueue ``n`` jobs one call at a time, then drain them with one worker."""
    out = workdir / "drain.out"
    out.touch()
    with stores(system, "drain", workdir) as store:
        with RemoteClient(system, store.locator, workdir, "drain") as client:
            enqueue_s = client.enqueue_noop_n(str(out), n)
            queued = client.pending()
        store.analyze()  # PostgreSQL: statistics for the table just filled; others: nothing
        quiesce()

        with WorkerProcess(system, store, workdir, "drain") as worker:
            first, last = wait_for_bytes(out, n, worker, timeout)
            memory = worker.memory_mb()
        # Stopped (SIGTERM) on leaving the block.  Now check that every job ran exactly once.
        ran = out.stat().st_size
        pending_after, completed_after = _counts(system, store, workdir)
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
        **{f"worker_{k}": v for k, v in memory.items()},
        **_worker_report(worker),
    }


def bulk(system: SystemInfo, stores: StoreFactory, n: int, workdir: Path) -> dict[str, Any]:
    """Workload 2: one call that enqueues ``n`` jobs."""
    if system.bulk_api is None:
        return {"n": n, "supported": False}
    out = workdir / "bulk.out"
    with (
        stores(system, "bulk", workdir) as store,
        RemoteClient(system, store.locator, workdir, "bulk") as client,
    ):
        quiesce()
        elapsed = client.enqueue_noop_many(str(out), n)
        queued = client.pending()
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
    system: SystemInfo,
    stores: StoreFactory,
    jobs: int,
    rate: float,
    idle: float,
    workdir: Path,
    timeout: float,
) -> dict[str, Any]:
    """Workload 3: an idle worker; ``jobs`` jobs enqueued at ``rate``/s, each timing its start.

    One warm-up job first proves the worker is up (process start-up is not latency); then the
    worker is left idle for ``idle`` seconds before the paced enqueues begin.
    """
    warmup = workdir / "latency-warmup.out"
    out = workdir / "latency.out"
    warmup.touch()
    out.touch()
    with (
        stores(system, "latency", workdir) as store,
        RemoteClient(system, store.locator, workdir, "latency") as client,
        WorkerProcess(system, store, workdir, "latency") as worker,
    ):
        client.enqueue_noop(str(warmup))
        wait_for_bytes(warmup, 1, worker, timeout)
        quiesce()
        time.sleep(idle)
        paced = client.enqueue_paced(str(out), jobs, rate)
        lines = wait_for_lines(out, jobs, worker, timeout)
    samples = [float(line) for line in lines]
    span = paced["span_s"]
    return {
        "jobs": jobs,
        "rate_per_s": rate,
        "idle_s": idle,
        "achieved_rate_per_s": (jobs - 1) / span if span > 0 else None,
        "max_enqueue_lag_ms": paced["late_s"] * 1000.0,
        **latency_summary(samples),
        "ok": len(samples) == jobs,
        **_worker_report(worker),
    }


def backlog(
    system: SystemInfo,
    stores: StoreFactory,
    small: int,
    big: int,
    workdir: Path,
    timeout: float,
) -> dict[str, Any]:
    """Workload 4: drain/s with ``small`` jobs queued vs with ``big`` jobs queued.

    Both runs time the same number of completions, ``small`` (all of the small backlog, the
    first ``small`` of the big one), from the first to the last, so only the size of the queue
    differs.  ``big_over_small`` near 1 means claiming does not slow down as the queue grows.
    """
    if not 0 < small <= big:
        raise ValueError(f"backlog sizes must satisfy 0 < {small} <= {big}")
    runs = {
        "small": _backlog_run(system, stores, small, small, workdir, timeout),
        "big": _backlog_run(system, stores, big, small, workdir, timeout),
    }
    small_rate, big_rate = runs["small"]["drain_per_s"], runs["big"]["drain_per_s"]
    return {
        "small": small,
        "big": big,
        "timed_completions": small,
        "api": system.backlog_api,
        "small_drain_per_s": small_rate,
        "big_drain_per_s": big_rate,
        "big_over_small": ratio(big_rate, small_rate),
        "ok": runs["small"]["ok"] and runs["big"]["ok"],
        "runs": runs,
        # The worker reports of the big run (the one that can go wrong) surface in the notes.
        **{k: v for k, v in runs["big"].items() if k.startswith("worker_")},
    }


def _backlog_run(
    system: SystemInfo,
    stores: StoreFactory,
    size: int,
    timed: int,
    workdir: Path,
    timeout: float,
) -> dict[str, Any]:
    """Queue ``size`` jobs, settle the store, start a worker and time its first ``timed``."""
    label = f"backlog-{size}"
    out = workdir / f"{label}.out"
    out.touch()
    with stores(system, label, workdir) as store:
        with RemoteClient(system, store.locator, workdir, label) as client:
            insert_s = client.enqueue_backlog(str(out), size)
            queued = client.pending()
        start = time.perf_counter()
        store.settle()
        settle_s = time.perf_counter() - start
        quiesce()  # a million rows just written: their writeback must not land in the timing

        with WorkerProcess(system, store, workdir, label) as worker:
            spawned = time.perf_counter()
            first, last = wait_for_bytes(out, timed, worker, timeout)
            memory = worker.memory_mb()
        ran = out.stat().st_size
        pending_after, completed_after = _counts(system, store, workdir)
    # Stopped mid-backlog: a job either ran (and is recorded as done, where the system keeps
    # such records) or is still queued.  Anything else is lost or ran twice.
    unaccounted = size - ran - pending_after
    return {
        "size": size,
        "insert_s": insert_s,
        "insert_per_s": size / insert_s,
        "settle_s": settle_s,
        "queued": queued,
        "first_completion_after_s": first - spawned,
        "drain_s": last - first,
        "drain_per_s": (timed - 1) / (last - first) if last > first else None,
        "ran": ran,
        "pending_after": pending_after,
        "completed_after": completed_after,
        "unaccounted_after_stop": unaccounted,
        "ok": queued == size and ran >= timed and completed_after in (None, ran),
        **{f"worker_{k}": v for k, v in memory.items()},
        **_worker_report(worker),
    }
