"""Workload 5, scale: jobs that sleep 10 ms, on 1, 2 and 4 worker processes x 16 threads.

    python -m benchmarks.scale [--jobs 6000] [--processes 1,2,4] [--threads 16] [--store sqlite]

Each run starts ``jobq worker --processes P --threads T --burst`` (the supervisor and its
worker processes, as an operator would) on a fresh store holding ``--jobs`` jobs, and times
from the first job's start to the last job's end (from the jobs' own timestamps). The ideal
rate is P x T / 10 ms; the table gives the measured rate and its share of the ideal. Only the
ratios mean anything: the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import jobq
from jobq.backends import NewJob

PG = "postgresql://postgres@127.0.0.1:5432/test"

APP = textwrap.dedent(
    """
    import os, time
    import jobq

    app = jobq.App(os.environ["JOBQ_URL"])
    LOG = os.environ["SCALE_LOG"]

    @app.task(name="sleep10")
    def sleep10():
        start = time.time()
        time.sleep(0.010)
        fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(fd, f"{start:.6f} {time.time():.6f}\\n".encode())
        os.close(fd)
    """
)


def run_once(store: str, tmp: Path, jobs: int, processes: int, threads: int) -> float:
    if store == "sqlite":
        url = f"sqlite:///{tmp}/scale-{processes}.db"
    else:
        url = f"{PG}?schema=jobq_bench_scale_{uuid.uuid4().hex[:8]}"
    log = tmp / f"scale-{processes}.log"
    app = jobq.App(url)
    for start in range(0, jobs, 1000):
        app.backend.enqueue_many(
            [NewJob("default", "sleep10", "[]", "{}", 0, 3) for _ in range(min(1000, jobs - start))]
        )
    app.close()
    env = dict(os.environ, JOBQ_URL=url, SCALE_LOG=str(log), PYTHONPATH=str(tmp))
    cmd = [sys.executable, "-m", "jobq.cli", "worker", "scaleapp:app", "--burst"]
    cmd += ["--processes", str(processes), "--threads", str(threads), "--log-level", "warning"]
    subprocess.run(cmd, env=env, cwd=tmp, check=True, timeout=600)
    spans = [tuple(map(float, line.split())) for line in log.read_text().splitlines()]
    assert len(spans) == jobs, (len(spans), jobs)
    elapsed = max(end for _, end in spans) - min(start for start, _ in spans)
    if store == "postgres":
        import psycopg

        with psycopg.connect(PG, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {url.rsplit('=', 1)[1]} CASCADE")
    return jobs / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=6000)
    parser.add_argument("--processes", default="1,2,4")
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        (tmp / "scaleapp.py").write_text(APP)
        print(
            f"workload 5: {args.jobs} jobs of 10 ms, {args.threads} threads per process, "
            f"{args.store} (durable defaults), {os.cpu_count()} CPUs"
        )
        print(f"{'processes':>9} {'slots':>6} {'ideal/s':>8} {'jobs/s':>8} {'of ideal':>9}")
        for p in (int(x) for x in args.processes.split(",")):
            started = time.perf_counter()
            rate = run_once(args.store, tmp, args.jobs, p, args.threads)
            ideal = p * args.threads / 0.010
            print(
                f"{p:9d} {p * args.threads:6d} {ideal:8.0f} {rate:8.0f} {rate / ideal:8.0%}"
                f"   ({time.perf_counter() - started:.1f}s)"
            )


if __name__ == "__main__":
    main()
