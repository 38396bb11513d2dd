"""Claim speed with a long history of finished jobs (bloat check), on PostgreSQL and SQLite.

    python -m benchmarks.history [--history 1000000] [--jobs 10000] [--batch 16]

For each backend: time claim + complete of ``--jobs`` available jobs in batches of ``--batch``
(one transaction per batch, as a worker does) on a fresh store, then again after
``--history`` completed jobs were added. The hot-path indexes are partial (available,
scheduled, running only), so the history should not slow claims down: the ratio should be
close to 1. Only the ratio means anything; both runs share one machine and one disk.
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
import uuid
from datetime import timedelta

import psycopg

import jobq
from jobq.backends import Backend, Lease, NewJob, Outcome, OutcomeKind

PG = "postgresql://postgres@127.0.0.1:5432/test"


def drain_rate(backend: Backend, jobs: int, batch: int) -> float:
    backend.enqueue_many([NewJob("default", "noop", "[]", "{}", 0, 3) for _ in range(jobs)])
    done = 0
    acks: list[Outcome] = []
    start = time.perf_counter()
    while True:
        _, claimed = backend.record_and_claim(
            acks, ["default"], batch, worker_id="bench", lease=timedelta(seconds=60)
        )
        done += len(acks)
        acks = [
            Outcome(Lease(r.id, r.lease_token or ""), OutcomeKind.COMPLETED, result_json="null")
            for r in claimed
        ]
        if not claimed:
            break
    elapsed = time.perf_counter() - start
    assert done == jobs, (done, jobs)
    return jobs / elapsed


def add_history_pg(schema: str, n: int) -> None:
    with psycopg.connect(PG) as conn:
        conn.execute(
            f"INSERT INTO {schema}.jobq_jobs (queue, task, args, kwargs, priority, eff_priority,"
            " run_at, attempt, max_attempts, state, result, created_at, started_at, finished_at)"
            " SELECT 'default', 'noop', '[]', '{}', 0, 0, now(), 1, 3, 'completed', 'null',"
            " now(), now(), now() FROM generate_series(1, %s)",
            (n,),
        )
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f"VACUUM ANALYZE {schema}.jobq_jobs")


def add_history_sqlite(path: str, n: int) -> None:
    conn = sqlite3.connect(path)
    conn.execute(
        "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < ?) "
        "INSERT INTO jobq_jobs (queue, task, args, kwargs, priority, eff_priority, deadline_key,"
        " run_at, attempt, max_attempts, state, result, created_at, started_at, finished_at)"
        " SELECT 'default', 'noop', '[]', '{}', 0, 0, 4611686018427387904, 0, 1, 3,"
        " 'completed', 'null', 0, 0, 0 FROM s",
        (n,),
    )
    conn.commit()
    conn.execute("ANALYZE")
    conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--history", type=int, default=1_000_000)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    rows = []
    schema = f"jobq_bench_hist_{uuid.uuid4().hex[:8]}"
    try:
        app = jobq.App(f"{PG}?schema={schema}")
        empty = drain_rate(app.backend, args.jobs, args.batch)
        add_history_pg(schema, args.history)
        full = drain_rate(app.backend, args.jobs, args.batch)
        app.close()
        rows.append(("postgresql (synchronous_commit=on)", empty, full))
    finally:
        with psycopg.connect(PG, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/history.db"
        app = jobq.App(f"sqlite:///{path}")
        empty = drain_rate(app.backend, args.jobs, args.batch)
        add_history_sqlite(path, args.history)
        full = drain_rate(app.backend, args.jobs, args.batch)
        app.close()
        rows.append(("sqlite (WAL, synchronous=FULL)", empty, full))
    print(
        f"claim+complete of {args.jobs:,} jobs in batches of {args.batch}, "
        f"without and with {args.history:,} completed jobs in the table"
    )
    print(f"{'backend':38} {'empty jobs/s':>13} {'history jobs/s':>15} {'ratio':>6}")
    for name, empty, full in rows:
        print(f"{name:38} {empty:13,.0f} {full:15,.0f} {full / empty:6.2f}")


if __name__ == "__main__":
    main()
