"""Where a jobq worker's time goes while it drains no-op jobs: py-spy on the worker process.

    python -m benchmarks.profile [--store sqlite|postgres] [--n 20000] [--rate 250]

Queues ``--n`` no-op jobs (``enqueue_many``), starts the benchmark's jobq worker (1 process x
8 threads, durable defaults), attaches py-spy (from the peers' environment) to it and samples
until the last job ran; then sums the samples by thread role and by what the stack was doing,
and prints the cost per job in microseconds of sampled time (CPU time only: py-spy leaves out
threads that are blocked, unless ``--idle``). ``--gil`` samples only the thread holding the
GIL: on a busy worker that is the real budget, since one job's Python code at a time runs.

The raw collapsed stacks are kept (``--raw PATH``) for a flame graph.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from benchmarks import peers_env
from benchmarks.common import ROOT, subprocess_env

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"

#: (role, category, substrings of a frame that put a stack in it), first match wins, leaf
#: first. Frames look like ``function (path/module.py:line)``.
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("job body (append_byte)", ("append_byte",)),
    ("metrics + job logs (observe)", ("observe.py", "prometheus_client", "metrics.py")),
    ("sqlite3: commit (fsync)", ("_busy_retry (jobq/backends/sqlite.py", "COMMIT")),
    ("decode rows -> JobRecord", ("_row_to_record", "JobRecord.__init__", "attempt_errors")),
    ("psycopg / pool", ("psycopg",)),
    ("backend SQL call", ("record_and_claim", "_record_in", "record_outcomes", "_claim")),
    ("change token poll", ("change_token",)),
    ("task call: prepare/classify/context", ("executor.py",)),
    ("hand-off: queue/locks/events", ("queue.py", "threading.py", "_finished", "_started")),
    ("coordinator bookkeeping", ("_exchange", "_loop", "_check_timeouts", "_next_timeout")),
)


def classify(stack: str) -> tuple[str, str]:
    frames = stack.split(";")
    role = (
        "executor thread"
        if any("_take_jobs" in f for f in frames)
        else "coordinator (main thread)"
        if any("_loop (jobq/worker.py" in f or "_exchange" in f for f in frames)
        else "other threads"
    )
    for name, needles in CATEGORIES:
        for frame in reversed(frames):
            if any(n in frame for n in needles):
                return role, name
    return role, "other: " + frames[-1].split(" (")[0][:40]


def summarise(raw: Path, n: int, rate: int, top: int = 8) -> str:
    totals: dict[tuple[str, str], int] = defaultdict(int)
    leaves: dict[str, int] = defaultdict(int)
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        c = int(count)
        samples += c
        totals[classify(stack)] += c
        leaves[stack.split(";")[-1]] += c
    us = 1e6 / rate / n  # microseconds of sampled time per sample, per job
    lines = [f"{samples} samples at {rate}/s over {n:,} jobs: microseconds per job"]
    by_role: dict[str, int] = defaultdict(int)
    for (role, _), c in totals.items():
        by_role[role] += c
    for role, role_count in sorted(by_role.items(), key=lambda kv: -kv[1]):
        lines.append(f"  {role:<40} {role_count * us:8.1f} us/job")
        for (r, cat), c in sorted(totals.items(), key=lambda kv: -kv[1]):
            if r == role:
                lines.append(f"      {cat:<44} {c * us:8.1f}  ({100 * c / samples:4.1f}%)")
    lines.append("hottest leaf frames:")
    for leaf, c in sorted(leaves.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"  {c * us:8.1f} us/job  {leaf[:100]}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--gil", action="store_true", help="sample the GIL holder only")
    parser.add_argument("--idle", action="store_true", help="include blocked threads")
    parser.add_argument("--raw", type=Path, help="keep the collapsed stacks here")
    args = parser.parse_args()

    import jobq
    from benchmarks.jobq_common import JobqApp

    py_spy = peers_env.ensure(quiet=True).parent / "py-spy"
    with tempfile.TemporaryDirectory(prefix="jobq-profile-") as tmp:
        workdir = Path(tmp)
        out = workdir / "out"
        out.touch()
        schema = f"jobq_profile_{os.getpid()}"
        if args.store == "sqlite":
            db, url = str(workdir / "p.db"), f"sqlite:///{workdir / 'p.db'}"
            module = "benchmarks.jobq_sqlite"
        else:
            db = url = f"{PG_URL}?schema={schema}"
            module = "benchmarks.jobq_postgres"
        bench = JobqApp(url)
        bench.app.open()
        for queued in range(0, args.n, 50_000):
            bench.noop.enqueue_many([(str(out),)] * min(50_000, args.n - queued))
        bench.close()
        worker = subprocess.Popen(
            [sys.executable, "-m", module, "worker", "--db", db],
            cwd=ROOT,
            env=subprocess_env(),
        )
        raw = args.raw or workdir / "raw.txt"
        cmd = [str(py_spy), "record", "--pid", str(worker.pid), "-r", str(args.rate)]
        cmd += ["-f", "raw", "-o", str(raw), "--nonblocking"]
        cmd += ["--gil"] if args.gil else []
        cmd += ["--idle"] if args.idle else []
        spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        start = time.perf_counter()
        first = None
        while out.stat().st_size < args.n:
            if first is None and out.stat().st_size > 0:
                first = time.perf_counter()
            time.sleep(0.005)
        elapsed = time.perf_counter() - (first or start)
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
        spy.wait(60)
        if args.store == "postgres":
            import psycopg

            with psycopg.connect(PG_URL, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        print(
            f"jobq {jobq.__version__} on {args.store}: {args.n:,} jobs drained at "
            f"{(args.n - 1) / elapsed:,.0f}/s under py-spy ({'GIL holder' if args.gil else 'CPU'}"
            f" samples{', idle included' if args.idle else ''})"
        )
        print(summarise(raw, args.n, args.rate))


if __name__ == "__main__":
    main()
