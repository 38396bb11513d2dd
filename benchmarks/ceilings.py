"""What the store, and jobq's own round trip to it, allow on this machine: the ceilings that
bound the speed targets, measured in the same run as the workloads.

    python -m benchmarks.ceilings sqlite PATH.db [--quick]
    python -m benchmarks.ceilings postgres URL [--quick]      # an empty database of its own

Prints one JSON object. Every figure is one thread, no job run and no worker around it:

- ``durable_commit_per_s``: one-row inserts, each its own durable transaction, on one
  connection: the most single enqueues per second any queue that commits each call can do.
  ``commit_ms_p50`` is the median time of one.
- ``store_claim_complete_per_s``: the store alone, on a minimal queue table: claim 64 jobs and
  complete them, in two transactions, again and again: the most any queue on this store
  drains when it batches 64 jobs a round trip and runs nothing.
- ``exchange_per_s``: jobq's backend, ``record_and_claim`` back to back on queued no-op jobs,
  24 at a time (the most one exchange of a worker with 8 threads may claim: its threads plus
  twice as many waiting), each call recording the outcomes of the jobs the previous one
  claimed: the drain rate of a worker whose jobs took no time at all. ``exchange_64_per_s``:
  the same, 64 at a time (the store-alone batch): what the batch size costs.
- ``build_jobs_per_s``: Python building and validating jobs (``NewJob``) for a bulk enqueue.
- ``store_jobs_per_s``: jobq's backend storing prebuilt jobs (``enqueue_many`` in one call;
  ``COPY`` on PostgreSQL).
- ``round_trip_ms_p50`` (PostgreSQL): one ``SELECT 1``.
- ``paced_commit_ms_p50`` / ``paced_commit_ms_p99``: the same one-row durable commit, one at a
  time at the latency workload's pace (``pace_per_s``, 200/s by default), with the connection
  and the store idle in between, as the latency workload's enqueues are: that costs more than
  back to back (the process and the server wake up for each). ``paced_round_trip_ms_p50``
  (PostgreSQL): one ``SELECT 1`` at that pace.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from os.path import exists
from typing import TYPE_CHECKING, Any

from benchmarks.common import ROOT, WORKER_THREADS, percentile, subprocess_env

#: the latency workload's default pace (``python -m benchmarks --rate``)
DEFAULT_PACE = 200.0

if TYPE_CHECKING:
    from jobq.backends.base import NewJob

# jobq itself is imported only where a figure is measured (in the subprocess): the runner,
# which uses run() and describe(), imports no system.

#: jobs per claim in ``store_claim_complete_per_s``, and the bigger exchange batch
STORE_BATCH = 64
#: jobs per exchange: a default worker's most, its threads plus twice as many waiting
#: (jobq.worker.PREFETCH_PER_THREAD = 2; a test keeps the two in step)
EXCHANGE_BATCH = WORKER_THREADS * 3
TASK = "benchmarks.ceilings.noop"
#: one-row commits before the timed ones on SQLite: past the first checkpoint (1000 pages), the
#: WAL is reused instead of grown, as in a store that has been in use for a while
WAL_WARMUP = 2_500


def sizes(quick: bool) -> dict[str, int]:
    if quick:
        return {
            "commits": 200,
            "paced": 40,
            "store_jobs": 6_400,
            "exchange_jobs": 2_400,
            "bulk": 5_000,
        }
    return {
        "commits": 2_000,
        "paced": 400,
        "store_jobs": 64_000,
        "exchange_jobs": 24_000,
        "bulk": 100_000,
    }


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def median_ms(samples: Sequence[float]) -> float:
    return statistics.median(samples) * 1000


def paced(op: Callable[[], object], pace: float, count: int) -> list[float]:
    """How long each of ``count`` calls of ``op`` took, started ``pace`` times a second (the
    process sleeping in between, as the latency workload's producer does)."""
    times = []
    start = time.monotonic()
    for i in range(count):
        while (wait := start + i / pace - time.monotonic()) > 0:
            time.sleep(wait)
        started = time.perf_counter()
        op()
        times.append(time.perf_counter() - started)
    return times


def _paced_figures(commits: list[float], pace: float) -> dict[str, float]:
    return {
        "pace_per_s": pace,
        "paced_commit_ms_p50": median_ms(commits),
        # the same percentile as the latency workload's (benchmarks.common.latency_summary)
        "paced_commit_ms_p99": percentile(sorted(commits), 99) * 1000,
    }


def build_jobs(n: int) -> tuple[list[NewJob], float]:
    """``n`` no-op jobs as ``Task.enqueue_many`` builds them; and the rate it built them at."""
    from jobq.options import JobOptions, TaskDefaults, job_builder

    build = job_builder(TASK, JobOptions(), TaskDefaults(), None)
    started = time.perf_counter()
    jobs = [build(("/dev/null",), None) for _ in range(n)]
    return jobs, rate(n, time.perf_counter() - started)


def exchange_rate(backend: Any, total: int, batch: int) -> float:
    """``record_and_claim`` back to back over ``total`` queued jobs, ``batch`` a call."""
    from jobq.backends.base import Lease, Outcome, OutcomeKind

    held: list[Any] = []
    done = 0
    started = time.perf_counter()
    while True:
        outcomes = [Outcome(Lease(r.id, str(r.lease_token)), OutcomeKind.COMPLETED) for r in held]
        _, held = backend.record_and_claim(
            outcomes,
            ["default"],
            batch,
            worker_id="ceilings",
            lease=timedelta(minutes=5),
        )
        done += len(outcomes)
        if not held:
            break
    seconds = time.perf_counter() - started
    if done != total:
        raise RuntimeError(f"the exchange loop completed {done} jobs of {total}")
    return rate(done, seconds)


def jobq_ceilings(bulk_url: str, exchange_url: str, n: dict[str, int]) -> dict[str, float]:
    """The figures that go through jobq's backend; each URL names an empty store."""
    import jobq

    jobs, built = build_jobs(n["bulk"])
    app = jobq.App(bulk_url)
    try:
        started = time.perf_counter()
        app.backend.enqueue_many(jobs)
        stored = rate(len(jobs), time.perf_counter() - started)
    finally:
        app.close()
    figures = {"build_jobs_per_s": built, "store_jobs_per_s": stored}
    app = jobq.App(exchange_url)
    try:
        for name, batch in (("exchange_per_s", EXCHANGE_BATCH), ("exchange_64_per_s", STORE_BATCH)):
            app.backend.enqueue_many(jobs[: n["exchange_jobs"]])
            figures[name] = exchange_rate(app.backend, n["exchange_jobs"], batch)
    finally:
        app.close()
    return figures


# -- SQLite ----------------------------------------------------------------------------------


def _sqlite_connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    return conn


def sqlite_store(path: str, n: dict[str, int], pace: float) -> dict[str, float]:
    """The store alone: durable commits and batched claim + complete (WAL, synchronous=FULL)."""
    conn = _sqlite_connect(path)
    try:
        conn.execute("CREATE TABLE commits (id INTEGER PRIMARY KEY, data TEXT NOT NULL)")
        for _ in range(WAL_WARMUP):  # grow the WAL first: a store in use has one
            conn.execute("INSERT INTO commits (data) VALUES ('{}')")
        times = []
        for _ in range(n["commits"]):
            started = time.perf_counter()
            conn.execute("INSERT INTO commits (data) VALUES ('{}')")
            times.append(time.perf_counter() - started)
        commits_paced = paced(
            lambda: conn.execute("INSERT INTO commits (data) VALUES ('{}')"), pace, n["paced"]
        )
        conn.execute(
            "CREATE TABLE q (id INTEGER PRIMARY KEY, state INTEGER NOT NULL, data TEXT NOT NULL)"
        )
        conn.execute("CREATE INDEX q_ready ON q (id) WHERE state = 0")
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO q (state, data) VALUES (0, '{}')", [()] * n["store_jobs"])
        conn.execute("COMMIT")
        done, started = 0, time.perf_counter()
        while True:
            conn.execute("BEGIN IMMEDIATE")
            ids = conn.execute(
                "UPDATE q SET state = 1 WHERE id IN "
                f"(SELECT id FROM q WHERE state = 0 ORDER BY id LIMIT {STORE_BATCH}) RETURNING id"
            ).fetchall()
            conn.execute("COMMIT")
            if not ids:
                break
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("UPDATE q SET state = 2 WHERE id = ?", ids)
            conn.execute("COMMIT")
            done += len(ids)
        store = rate(done, time.perf_counter() - started)
    finally:
        conn.close()
    return {
        "durable_commit_per_s": rate(len(times), sum(times)),
        "commit_ms_p50": median_ms(times),
        "store_claim_complete_per_s": store,
        **_paced_figures(commits_paced, pace),
    }


# -- PostgreSQL ------------------------------------------------------------------------------


def postgres_store(url: str, n: dict[str, int], pace: float) -> dict[str, float]:
    """The server alone: round trips, durable commits, batched claim + complete."""
    import psycopg  # the SQLite run needs no PostgreSQL driver

    with psycopg.connect(url, autocommit=True) as conn:
        trips = []
        for _ in range(n["commits"]):
            started = time.perf_counter()
            conn.execute("SELECT 1", prepare=True)
            trips.append(time.perf_counter() - started)
        conn.execute("CREATE TABLE ceiling_commits (id bigserial PRIMARY KEY, data text)")
        times = []
        for _ in range(n["commits"]):
            started = time.perf_counter()
            conn.execute("INSERT INTO ceiling_commits (data) VALUES ('{}')", prepare=True)
            times.append(time.perf_counter() - started)
        trips_paced = paced(lambda: conn.execute("SELECT 1", prepare=True), pace, n["paced"])
        commits_paced = paced(
            lambda: conn.execute("INSERT INTO ceiling_commits (data) VALUES ('{}')", prepare=True),
            pace,
            n["paced"],
        )
        conn.execute(
            "CREATE TABLE ceiling_q (id bigserial PRIMARY KEY, state int NOT NULL, data text)"
        )
        conn.execute("CREATE INDEX ceiling_q_ready ON ceiling_q (id) WHERE state = 0")
        conn.execute(
            "INSERT INTO ceiling_q (state, data) SELECT 0, '{}' FROM generate_series(1, %s)",
            (n["store_jobs"],),
        )
        conn.execute("VACUUM ANALYZE ceiling_q")
        claim = (
            "UPDATE ceiling_q SET state = 1 WHERE id IN (SELECT id FROM ceiling_q WHERE state = 0 "
            f"ORDER BY id LIMIT {STORE_BATCH} FOR UPDATE SKIP LOCKED) RETURNING id"
        )
        complete = "UPDATE ceiling_q SET state = 2 WHERE id = ANY(%s)"
        done, started = 0, time.perf_counter()
        while ids := [row[0] for row in conn.execute(claim, prepare=True)]:
            conn.execute(complete, (ids,), prepare=True)
            done += len(ids)
        store = rate(done, time.perf_counter() - started)
        conn.execute("DROP TABLE ceiling_commits, ceiling_q")
    return {
        "round_trip_ms_p50": median_ms(trips),
        "durable_commit_per_s": rate(len(times), sum(times)),
        "commit_ms_p50": median_ms(times),
        "store_claim_complete_per_s": store,
        "paced_round_trip_ms_p50": median_ms(trips_paced),
        **_paced_figures(commits_paced, pace),
    }


def _with_schema(url: str, schema: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}schema={schema}"


def measure(store: str, locator: str, quick: bool, pace: float = DEFAULT_PACE) -> dict[str, float]:
    """Every ceiling of ``store``: ``locator`` is a SQLite path that does not exist yet (files
    beside it are made too), or the URL of an empty PostgreSQL database. ``pace``: the
    latency workload's enqueues per second."""
    if not pace > 0:
        raise ValueError(f"pace must be a positive number of commits per second, not {pace!r}")
    n = sizes(quick)
    if store == "sqlite":
        taken = [p for p in (f"{locator}.{s}" for s in ("raw", "bulk", "exchange")) if exists(p)]
        if taken:
            raise FileExistsError(
                f"{taken[0]} exists: give benchmarks.ceilings a path nothing is at yet (it makes "
                f"{locator}.raw, .bulk and .exchange)"
            )
        figures = sqlite_store(f"{locator}.raw", n, pace)
        urls = (f"sqlite:///{locator}.bulk", f"sqlite:///{locator}.exchange")
    else:
        figures = postgres_store(locator, n, pace)
        urls = (_with_schema(locator, "ceiling_bulk"), _with_schema(locator, "ceiling_exchange"))
    figures.update(jobq_ceilings(*urls, n))
    return figures


STORES = ("sqlite", "postgres")


def run(store: str, locator: str, quick: bool, pace: float = DEFAULT_PACE) -> dict[str, float]:
    """:func:`measure` in a subprocess of this interpreter (the runner imports no system)."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.ceilings",
            store,
            locator,
            f"--pace={pace:g}",
            *(["--quick"] * quick),
        ],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError((done.stderr.strip().splitlines() or ["no output"])[-1])
    figures: dict[str, float] = json.loads(done.stdout)
    return figures


def describe(figures: dict[str, float]) -> list[str]:
    """The ceilings as lines for the suite's footer."""
    lines = [
        "what the store allows here (one thread, no job run; python -m benchmarks.ceilings):",
        f"  durable commit of a one-row insert: {figures['durable_commit_per_s']:,.0f}/s "
        f"(p50 {figures['commit_ms_p50']:.2f} ms)"
        + (
            f"; round trip (SELECT 1) p50 {figures['round_trip_ms_p50']:.2f} ms"
            if "round_trip_ms_p50" in figures
            else ""
        ),
        f"  the store alone, claim {STORE_BATCH} + complete them in two transactions: "
        f"{figures['store_claim_complete_per_s']:,.0f} jobs/s",
        f"  jobq's exchange (record_and_claim) back to back, {EXCHANGE_BATCH} a batch (a "
        f"worker's most with 8 threads): {figures['exchange_per_s']:,.0f} jobs/s; "
        f"{STORE_BATCH} a batch: {figures['exchange_64_per_s']:,.0f} jobs/s",
        f"  bulk: building jobs in Python {figures['build_jobs_per_s']:,.0f}/s, the backend "
        f"storing them prebuilt {figures['store_jobs_per_s']:,.0f}/s",
    ]
    if "paced_commit_ms_p50" in figures:
        lines.append(
            f"  at the latency workload's pace ({figures['pace_per_s']:g}/s, idle in between): "
            f"the durable commit p50 {figures['paced_commit_ms_p50']:.2f} ms, p99 "
            f"{figures['paced_commit_ms_p99']:.2f} ms"
            + (
                f"; round trip p50 {figures['paced_round_trip_ms_p50']:.2f} ms"
                if "paced_round_trip_ms_p50" in figures
                else ""
            )
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ceilings", description=__doc__)
    parser.add_argument("store", choices=sorted(STORES))
    parser.add_argument("locator", help="a new SQLite file's path, or an empty database's URL")
    parser.add_argument("--quick", action="store_true", help="small counts (a smoke run)")
    parser.add_argument(
        "--pace",
        type=float,
        default=DEFAULT_PACE,
        help="the latency workload's enqueues per second, for the paced commits (default 200)",
    )
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.store, args.locator, args.quick, args.pace)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
