"""What every system's benchmark shares: the jobs, the worker subprocess, timing and the table.

The job bodies are identical for every system: ``append_byte`` appends one byte
to a file opened with ``O_APPEND``, ``append_latency`` appends ``start - enqueued_at`` as one
text line.  Completions are detected from outside the worker by watching that file grow, so the
measurement never touches the queue the worker is draining.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Protocol

#: Root of the repository: the directory that holds the ``benchmarks`` package.
ROOT = Path(__file__).resolve().parent.parent
WORKER_THREADS = 8


def worker_main(
    prog: str,
    what: str,
    run_worker: Callable[[str, int], None],
    argv: Sequence[str] | None,
    threads_help: str | None = None,
    log_warnings: bool = True,
) -> int:
    """``python -m <prog> worker --db STORE [--threads N]``: one worker of a system, as every
    benchmark module starts it (``what`` names it in --help; ``log_warnings``: the system's
    own warnings and errors to stderr, which the runner keeps)."""
    parser = argparse.ArgumentParser(prog=f"python -m {prog}")
    sub = parser.add_subparsers(dest="command", required=True)
    worker = sub.add_parser("worker", help=f"run {what} on --db")
    worker.add_argument("--db", required=True, help="the store, as the runner names it")
    worker.add_argument("--threads", type=int, default=WORKER_THREADS, help=threads_help)
    args: Any = parser.parse_args(argv)
    if log_warnings:
        logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s %(message)s")
    run_worker(args.db, args.threads)
    return 0


#: Workload 4 inserts its backlog in calls of at most this many jobs.
BACKLOG_CHUNK = 100_000
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
    """The producer side of one system, bound to one store (a database file or database)."""

    def enqueue_noop(self, out: str) -> None:
        """Enqueue one ``append_byte(out)`` job; committed on return."""

    def enqueue_noop_many(self, out: str, n: int) -> None:
        """Enqueue ``n`` ``append_byte(out)`` jobs in one call (only if the system has one)."""

    def enqueue_backlog(self, out: str, n: int) -> None:
        """Queue ``n`` ``append_byte(out)`` jobs the fastest way the system allows.

        The rows must be exactly what the system's own enqueue would write; how it is done is
        :attr:`System.backlog_api`.
        """

    def enqueue_latency(self, out: str, enqueued_at: float) -> None:
        """Enqueue one ``append_latency(out, enqueued_at)`` job; committed on return."""

    def pending(self) -> int:
        """Jobs not yet finished (queued or running)."""

    def completed(self) -> int | None:
        """Jobs recorded as completed, or None when the system keeps no such record."""

    def close(self) -> None: ...


StoreKind = Literal["sqlite", "postgres", "redis"]


@dataclass(frozen=True)
class System:
    """One system under test, as its own module defines it (``SYSTEM``).

    The runner never imports a system's module: it reads these fields through
    ``python -m benchmarks.client describe MODULE`` (see :class:`SystemInfo`), and drives the
    producer (:attr:`connect`) and the worker in subprocesses of the system's interpreter.
    """

    name: str
    version: str
    #: Which store it runs on: a SQLite file, a PostgreSQL database, or a Redis database.
    store: StoreKind
    #: Module run as ``python -m <module> worker --db STORE`` to start one worker process.
    module: str
    #: What durability the run uses, in a few words (shown in the table).
    durability: str
    #: The longer story of the durability setting (shown under the table).
    durability_note: str
    #: How bulk enqueue is done, or None when the system has no bulk API.
    bulk_api: str | None
    #: How workload 4 puts its backlog in (see :meth:`Client.enqueue_backlog`).
    backlog_api: str
    #: Opens a producer on a store (:attr:`Store.locator`).
    connect: Callable[[str], Client]
    notes: tuple[str, ...] = ()

    def describe(self) -> dict[str, Any]:
        """The fields the runner needs, as JSON-able data (everything but :attr:`connect`)."""
        return {
            "name": self.name,
            "version": self.version,
            "store": self.store,
            "module": self.module,
            "durability": self.durability,
            "durability_note": self.durability_note,
            "bulk_api": self.bulk_api,
            "backlog_api": self.backlog_api,
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class SystemInfo:
    """A system as the runner sees it: :meth:`System.describe` plus the interpreter to run it
    with (the project's for jobq, the peers' environment for the peers)."""

    name: str
    version: str
    store: StoreKind
    module: str
    durability: str
    durability_note: str
    bulk_api: str | None
    backlog_api: str
    notes: tuple[str, ...]
    python: str

    @classmethod
    def from_description(cls, data: dict[str, Any], python: str) -> SystemInfo:
        return cls(**{**data, "notes": tuple(data.get("notes", ())), "python": python})


# --------------------------------------------------------------------------------------------
# Stores


@dataclass(frozen=True)
class Store:
    """One fresh store for one workload of one system."""

    #: What the system is given: a file path (SQLite) or a connection URL (PostgreSQL).
    locator: str
    #: Brings the store to a steady state after a large insert (workload 4), before timing.
    settle: Callable[[], None]
    #: Brings planner statistics up to date after the enqueues of workload 1, before timing.
    analyze: Callable[[], None]


#: Opens a fresh store: ``(system, label, workdir)``; removed on leaving the block.
StoreFactory = Callable[[SystemInfo, str, Path], AbstractContextManager[Store]]


@contextmanager
def sqlite_store(label: str, workdir: Path) -> Iterator[Store]:
    """A database file in ``workdir`` (a fresh temporary directory, removed by the runner)."""
    db = workdir / f"{label}.db"
    yield Store(locator=str(db), settle=lambda: sqlite_checkpoint(db), analyze=_nothing)


def _nothing() -> None:
    """SQLite's workload 1 runs as it always has: no ``ANALYZE`` between enqueue and drain."""


def sqlite_checkpoint(db: Path) -> None:
    """Move the WAL into the database file and truncate it (``wal_checkpoint(TRUNCATE)``)."""
    conn = sqlite3.connect(db)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    finally:
        conn.close()


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


def subprocess_env() -> dict[str, str]:
    """The environment of a system's subprocesses: this one, with the repository importable
    (so ``python -m benchmarks.<module>`` works from any interpreter)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


class WorkerDied(RuntimeError):
    pass


class WorkerProcess:
    """``python -m <module> worker --db STORE`` in its own process, stopped with SIGTERM."""

    def __init__(self, system: SystemInfo, store: Store, workdir: Path, label: str) -> None:
        self.argv = [
            system.python,
            "-m",
            system.module,
            "worker",
            "--db",
            store.locator,
            "--threads",
            str(WORKER_THREADS),
        ]
        self.log_path = workdir / f"worker-{system.name}-{label}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.stopped_cleanly: bool | None = None

    def __enter__(self) -> WorkerProcess:
        env = subprocess_env()
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

    def memory_mb(self) -> dict[str, float]:
        """The worker process's resident memory now and at its peak (Linux ``/proc``), MiB."""
        assert self.proc is not None
        found: dict[str, float] = {}
        try:
            with open(f"/proc/{self.proc.pid}/status") as status:
                for line in status:
                    key, _, value = line.partition(":")
                    if key in ("VmRSS", "VmHWM"):
                        found["rss_mb" if key == "VmRSS" else "peak_rss_mb"] = (
                            int(value.split()[0]) / 1024
                        )
        except (OSError, ValueError):
            pass
        return found

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


def _count(n: int) -> str:
    """10000 -> ``10k``, 1000000 -> ``1M``: short enough for a row label."""
    for size, suffix in ((1_000_000, "M"), (1_000, "k")):
        if n >= size and n % size == 0:
            return f"{n // size}{suffix}"
    return f"{n:,}"


def metrics(backlog_small: int, backlog_big: int) -> tuple[Metric, ...]:
    """The rows of the table, in order."""
    small, big = _count(backlog_small), _count(backlog_big)
    return (
        Metric("1 drain: enqueue/s (1 job per call)", "drain", "enqueue_per_s", True, "{:,.0f}"),
        Metric(
            f"1 drain: drain/s (1 proc x {WORKER_THREADS} threads/slots)",
            "drain",
            "drain_per_s",
            True,
            "{:,.0f}",
        ),
        Metric("2 bulk: jobs/s (1 call)", "bulk", "jobs_per_s", True, "{:,.0f}"),
        Metric("3 latency: p50 ms", "latency", "p50_ms", False, "{:,.1f}"),
        Metric("3 latency: p90 ms", "latency", "p90_ms", False, "{:,.1f}"),
        Metric("3 latency: p99 ms", "latency", "p99_ms", False, "{:,.1f}"),
        Metric("3 latency: max ms", "latency", "max_ms", False, "{:,.1f}"),
        Metric(
            f"4 backlog: drain/s, {small} queued", "backlog", "small_drain_per_s", True, "{:,.0f}"
        ),
        Metric(f"4 backlog: drain/s, {big} queued", "backlog", "big_drain_per_s", True, "{:,.0f}"),
        Metric(
            f"4 backlog: {big}/{small} drain ratio", "backlog", "big_over_small", True, "{:.2f}"
        ),
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


def format_table(
    systems: Sequence[str],
    results: dict[str, dict[str, Any]],
    title: str,
    rows_of: Sequence[Metric],
) -> str:
    """The result table; with two or more systems, a ``first/other`` ratio column per peer."""
    first, peers = systems[0], list(systems[1:])
    header = ["metric", *systems, *(f"{first}/{peer}" for peer in peers)]
    if peers:
        header.append("better")
    rows: list[list[str]] = [
        [
            "durability",
            *(results[s].get("durability", "-") for s in systems),
            *([""] * (len(peers) + bool(peers))),
        ]
    ]
    for metric in rows_of:
        row = [metric.label, *(_cell(results[s], metric) for s in systems)]
        for peer in peers:
            r = ratio(metric_value(results[first], metric), metric_value(results[peer], metric))
            row.append("-" if r is None else f"{r:.2f}x")
        if peers:
            row.append("higher" if metric.higher_is_better else "lower")
        rows.append(row)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        label = cells[0].ljust(widths[0])
        rest = (c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([label, *rest]).rstrip()

    rule = "-" * len(line(header))
    return "\n".join([title, rule, line(header), rule, *(line(r) for r in rows), rule])
