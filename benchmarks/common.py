"""What every system's benchmark shares: the jobs, the worker subprocess, timing and the table.

The job bodies are identical for every system (BENCHMARK.md): ``append_byte`` appends one byte
to a file opened with ``O_APPEND``, ``append_latency`` appends ``start - enqueued_at`` as one
text line.  Completions are detected from outside the worker by watching that file grow, so the
measurement never touches the queue the worker is draining.
"""

from __future__ import annotations

import math
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

#: Root of the repository: the directory that holds the ``benchmarks`` package.
ROOT = Path(__file__).resolve().parent.parent
WORKER_THREADS = 8
_POLL_SECONDS = 0.002
_STOP_TIMEOUT_SECONDS = 30.0
_TROUBLE = re.compile(r"error|exception|traceback|warning|locked|busy", re.IGNORECASE)


# --------------------------------------------------------------------------------------------
# The jobs


def append_byte(path: str) -> None:
    """The no-op job: append one byte to ``path`` (``O_APPEND``, one ``write``)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, b".")
    finally:
        os.close(fd)


def append_latency(path: str, enqueued_at: float) -> None:
    """The latency job: append ``start - enqueued_at`` (seconds) as one line to ``path``."""
    start = time.time()
    line = f"{start - enqueued_at:.6f}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------
# What a system module provides


class Client(Protocol):
    """The producer side of one system, bound to one database file."""

    def enqueue_noop(self, out: str) -> None:
        """Enqueue one ``append_byte(out)`` job; committed on return."""

    def enqueue_noop_many(self, out: str, n: int) -> None:
        """Enqueue ``n`` ``append_byte(out)`` jobs in one call (only if the system has one)."""

    def enqueue_latency(self, out: str, enqueued_at: float) -> None:
        """Enqueue one ``append_latency(out, enqueued_at)`` job; committed on return."""

    def pending(self) -> int:
        """Jobs not yet finished (queued or running)."""

    def completed(self) -> int | None:
        """Jobs recorded as completed, or None when the system keeps no such record."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class System:
    """One system under test, as the runner sees it."""

    name: str
    version: str
    #: Module run as ``python -m <module> worker --db PATH`` to start one worker process.
    module: str
    #: What durability the run uses, in a few words (shown in the table).
    durability: str
    #: The longer story of the durability setting (shown under the table).
    durability_note: str
    #: How bulk enqueue is done, or None when the system has no bulk API.
    bulk_api: str | None
    connect: Callable[[Path], Client]
    notes: tuple[str, ...] = ()


def sqlite_journal_mode(db: Path) -> str:
    """The journal mode stored in the SQLite file ``db`` (WAL is persistent)."""
    conn = sqlite3.connect(db)
    try:
        mode: str = conn.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        conn.close()
    return mode.lower()


# --------------------------------------------------------------------------------------------
# The worker subprocess


class WorkerDied(RuntimeError):
    pass


class WorkerProcess:
    """``python -m <module> worker --db PATH`` in its own process, stopped with SIGTERM."""

    def __init__(self, system: System, db: Path, workdir: Path) -> None:
        self.argv = [
            sys.executable,
            "-m",
            system.module,
            "worker",
            "--db",
            str(db),
            "--threads",
            str(WORKER_THREADS),
        ]
        self.log_path = workdir / f"worker-{db.stem}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.stopped_cleanly: bool | None = None

    def __enter__(self) -> WorkerProcess:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def check_alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise WorkerDied(f"worker exited with {self.proc.returncode}:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is None or self.stopped_cleanly is not None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=_STOP_TIMEOUT_SECONDS)
            self.stopped_cleanly = self.proc.returncode == 0
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self.stopped_cleanly = False

    def log_lines(self) -> list[str]:
        try:
            return self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []

    def log_problems(self) -> list[str]:
        """Logged lines that look like trouble (errors, warnings, tracebacks, lock timeouts)."""
        return [line for line in self.log_lines() if _TROUBLE.search(line)]

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_lines()[-lines:])


# --------------------------------------------------------------------------------------------
# Watching the output file


def wait_for_bytes(
    path: Path, target: int, worker: WorkerProcess, timeout: float
) -> tuple[float, float]:
    """Poll the size of ``path`` until it reaches ``target`` bytes.

    Returns the ``perf_counter`` times at which the first byte and the ``target``-th byte were
    first seen (resolution: the poll interval, a few ms).
    """
    deadline = time.perf_counter() + timeout
    first: float | None = None
    while True:
        size = os.stat(path).st_size
        now = time.perf_counter()
        if first is None and size >= 1:
            first = now
        if size >= target:
            assert first is not None
            return first, now
        worker.check_alive()
        if now > deadline:
            raise TimeoutError(f"{path.name}: {size} of {target} jobs done after {timeout:.0f}s")
        time.sleep(_POLL_SECONDS)


def wait_for_lines(path: Path, target: int, worker: WorkerProcess, timeout: float) -> list[str]:
    """Poll ``path`` until it holds ``target`` complete lines; return them."""
    deadline = time.perf_counter() + timeout
    while True:
        data = path.read_bytes()
        done = data.count(b"\n")
        if done >= target:
            return data.decode().splitlines()
        worker.check_alive()
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{path.name}: {done} of {target} jobs done after {timeout:.0f}s")
        time.sleep(0.01)


# --------------------------------------------------------------------------------------------
# Statistics


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of already sorted values, linear interpolation."""
    if not sorted_values:
        raise ValueError("no values")
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    ms = sorted(s * 1000.0 for s in seconds)
    return {
        "p50_ms": percentile(ms, 50),
        "p90_ms": percentile(ms, 90),
        "p99_ms": percentile(ms, 99),
        "max_ms": ms[-1],
        "min_ms": ms[0],
    }


# --------------------------------------------------------------------------------------------
# The table


@dataclass(frozen=True)
class Metric:
    """One row of the table: where to find the value in a system's results."""

    label: str
    workload: str
    key: str
    higher_is_better: bool
    fmt: str


METRICS: tuple[Metric, ...] = (
    Metric("1 drain: enqueue/s (1 job per call)", "drain", "enqueue_per_s", True, "{:,.0f}"),
    Metric("1 drain: drain/s (1 proc x 8 threads)", "drain", "drain_per_s", True, "{:,.0f}"),
    Metric("2 bulk: jobs/s (1 call)", "bulk", "jobs_per_s", True, "{:,.0f}"),
    Metric("3 latency: p50 ms", "latency", "p50_ms", False, "{:,.1f}"),
    Metric("3 latency: p90 ms", "latency", "p90_ms", False, "{:,.1f}"),
    Metric("3 latency: p99 ms", "latency", "p99_ms", False, "{:,.1f}"),
    Metric("3 latency: max ms", "latency", "max_ms", False, "{:,.1f}"),
)


def metric_value(results: dict[str, Any], metric: Metric) -> float | None:
    value = results.get(metric.workload, {}).get(metric.key)
    return float(value) if isinstance(value, int | float) else None


def _cell(results: dict[str, Any], metric: Metric) -> str:
    value = metric_value(results, metric)
    if value is not None:
        return metric.fmt.format(value)
    workload = results.get(metric.workload, {})
    if "error" in results:
        return "unavailable"
    if "error" in workload:
        return "error"
    if workload.get("supported") is False:
        return "n/a (no bulk API)"
    return "-"


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def format_table(systems: Sequence[str], results: dict[str, dict[str, Any]], title: str) -> str:
    """The result table; with two systems, a ``first/second`` ratio column."""
    header = ["metric", *systems]
    pair = len(systems) == 2
    if pair:
        header += [f"{systems[0]}/{systems[1]}", "better"]
    rows: list[list[str]] = [["durability", *(results[s].get("durability", "-") for s in systems)]]
    if pair:
        rows[0] += ["", ""]
    for metric in METRICS:
        row = [metric.label, *(_cell(results[s], metric) for s in systems)]
        if pair:
            r = ratio(
                metric_value(results[systems[0]], metric), metric_value(results[systems[1]], metric)
            )
            row += [
                "-" if r is None else f"{r:.2f}x",
                "higher" if metric.higher_is_better else "lower",
            ]
        rows.append(row)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest]).rstrip()

    rule = "-" * len(line(header))
    return "\n".join([title, rule, line(header), rule, *(line(r) for r in rows), rule])
