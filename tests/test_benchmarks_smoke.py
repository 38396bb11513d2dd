"""The benchmark runner works: a tiny run end to end, checked for valid output, never for speed.

jobq alone on SQLite always runs. The second test adds one cheap peer (huey on SQLite) and the
chart, which need the peers' environment (``benchmarks/.peers-venv``, made from
``benchmarks/requirements-peers.txt`` on first use, about half a minute here); it is skipped,
saying why, when that environment cannot be made (no package index reachable).
"""

from __future__ import annotations

import json
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
TINY = [
    "--suite",
    "sqlite",
    "--n",
    "200",
    "--bulk-n",
    "1000",
    "--latency-jobs",
    "20",
    "--idle",
    "0.1",
    "--backlog-small",
    "200",
    "--backlog",
    "1000",
    "--retries",
    "0",
    "--timeout",
    "120",
    "--ceilings",
    "quick",
]

pytestmark = pytest.mark.slow


def run_bench(tmp_path: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], Any]:
    out = tmp_path / "latest.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", *TINY, "--json", str(out), *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done, json.loads(out.read_text())


def check_system(report: Any, suite: str, name: str) -> None:
    system = report["suites"][suite]["systems"][name]
    assert "error" not in system, system
    for workload in ("drain", "latency", "backlog"):
        assert system[workload].get("ok") is True, (name, workload, system[workload])
    assert system["drain"]["drain_per_s"] > 0
    assert system["latency"]["p50_ms"] >= 0


def test_runner_jobq_only(tmp_path: Path) -> None:
    done, report = run_bench(tmp_path, "--only", "jobq", "--no-chart")
    assert list(report["suites"]) == ["sqlite"]
    check_system(report, "sqlite", "jobq")
    assert report["suites"]["sqlite"]["systems"]["jobq"]["bulk"]["ok"] is True
    assert report["summary"]["rows"] == []  # no peer, no ratios
    assert "1 drain: drain/s" in done.stdout
    ceilings = report["suites"]["sqlite"]["ceilings"]
    assert set(ceilings) == {
        "durable_commit_per_s",
        "commit_ms_p50",
        "store_claim_complete_per_s",
        "exchange_per_s",
        "exchange_64_per_s",
        "build_jobs_per_s",
        "store_jobs_per_s",
        "pace_per_s",
        "paced_commit_ms_p50",
        "paced_commit_ms_p99",
    }
    assert all(value > 0 for value in ceilings.values()), ceilings
    assert ceilings["pace_per_s"] == 200
    assert "what the store allows here" in done.stdout
    assert "at the latency workload's pace (200/s" in done.stdout


def test_ceilings_measure_postgres_in_the_database_they_are_given(tmp_path: Path) -> None:
    """``python -m benchmarks.ceilings postgres URL`` fills schemas and tables of its own in
    the database it is given and drops its raw tables; the runner drops the database."""
    psycopg = pytest.importorskip("psycopg")
    from benchmarks import pg

    admin = "postgresql://postgres@127.0.0.1:5432/test"
    with ExitStack() as stack:
        try:
            store = stack.enter_context(pg.fresh_database(admin, "ceilings_test"))
        except psycopg.OperationalError as exc:
            pytest.skip(f"no PostgreSQL server here: {exc}")
        from benchmarks import ceilings

        figures = ceilings.run("postgres", store.locator, quick=True)
        assert figures["round_trip_ms_p50"] > 0
        assert figures["exchange_per_s"] > 0 and figures["store_jobs_per_s"] > 0
        assert figures["paced_round_trip_ms_p50"] > 0 and figures["paced_commit_ms_p99"] > 0
        with psycopg.connect(store.locator) as conn:
            left = conn.execute(
                "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'ceiling_%'"
            ).fetchone()
            assert left == (0,)


def test_ceilings_report_the_failure_of_a_store_they_cannot_use(tmp_path: Path) -> None:
    from benchmarks import ceilings

    with pytest.raises(RuntimeError, match="ceilings_missing"):
        ceilings.run("postgres", "postgresql://postgres@127.0.0.1:5432/ceilings_missing", True)
    (tmp_path / "c.db.bulk").write_text("someone's data")
    with pytest.raises(RuntimeError, match=r"c\.db\.bulk exists: give benchmarks.ceilings a path"):
        ceilings.run("sqlite", str(tmp_path / "c.db"), True)
    assert (tmp_path / "c.db.bulk").read_text() == "someone's data"
    assert not (tmp_path / "c.db.raw").exists()


def test_runner_with_one_peer_and_chart(tmp_path: Path) -> None:
    try:
        from benchmarks import peers_env

        peers_env.ensure(quiet=True)
    except Exception as exc:  # no index reachable: the runner itself is covered above
        pytest.skip(f"the peers' environment cannot be made here: {exc}")
    chart = tmp_path / "latest.png"
    done, report = run_bench(tmp_path, "--only", "jobq", "--only", "huey", "--chart", str(chart))
    check_system(report, "sqlite", "jobq")
    check_system(report, "sqlite", "huey")
    (row,) = report["summary"]["rows"]
    assert row["peer"] == "huey" and row["advantage"]["drain"] is not None
    assert "jobq/huey" in done.stdout
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missed_targets_name_what_bounds_them_from_the_same_runs_ceilings() -> None:
    from benchmarks import summary

    ceilings = {
        "durable_commit_per_s": 10_000.0,
        "commit_ms_p50": 0.1,
        "store_claim_complete_per_s": 200_000.0,
        "exchange_per_s": 40_000.0,
        "exchange_64_per_s": 50_000.0,
        "build_jobs_per_s": 300_000.0,
        "store_jobs_per_s": 100_000.0,
    }
    reports = {
        "sqlite": {
            "ceilings": ceilings,
            "systems": {
                "jobq": {
                    "drain": {"drain_per_s": 20_000.0, "enqueue_per_s": 6_000.0},
                    "bulk": {"jobs_per_s": 60_000.0},
                },
                "huey": {"drain": {"drain_per_s": 4_000.0, "enqueue_per_s": 8_000.0}},
            },
        }
    }
    targets = {t["target"]: t for t in summary.check_targets(reports, 100_000)}
    drain = targets["drain sqlite: jobq/huey"]
    assert drain["met"] is False and drain["value"] == 5.0
    assert "needs 60,000 jobs/s" in drain["bound"] and "40,000/s" in drain["bound"]
    enqueue = targets["single enqueue sqlite: jobq/huey"]
    assert "needs 12,000 enqueues/s" in enqueue["bound"] and "10,000/s" in enqueue["bound"]
    bulk = targets["bulk 100,000 sqlite: jobq jobs/s"]
    assert "the two in a row: 75,000/s" in bulk["bound"]
    text = summary.format_targets(list(targets.values()))
    assert text.count("bound:") == 3
    # no ceilings measured (--ceilings off): no bound, and nothing breaks
    del reports["sqlite"]["ceilings"]
    assert all(t["bound"] is None for t in summary.check_targets(reports, 100_000))


def test_the_latency_bound_counts_the_commits_each_store_waits_for() -> None:
    """SQLite's claim commits durably; PostgreSQL's claim without outcomes does not wait for
    its flush, so its bound names only the enqueue's commit."""
    from benchmarks import summary

    ceilings = {"commit_ms_p50": 0.2, "round_trip_ms_p50": 0.05}
    latency = {"latency": {"p50_ms": 3.0, "p99_ms": 4.0}}
    reports = {
        suite: {"ceilings": ceilings, "systems": {"jobq": latency}}
        for suite in ("sqlite", "postgres")
    }
    targets = {t["target"]: t for t in summary.check_targets(reports, 100_000)}
    sqlite = targets["latency sqlite: jobq p50"]["bound"]
    postgres = targets["latency postgres: jobq p50"]["bound"]
    assert "two durable commits" in sqlite and "0.40 ms back to back" in sqlite
    assert "the enqueue's durable commit: 0.20 ms" in postgres and "0.05 ms" in postgres
    # measured at the latency workload's pace (idle in between), those are the figures named
    paced = {"pace_per_s": 200.0, "paced_commit_ms_p50": 0.35, "paced_commit_ms_p99": 0.6}
    for suite in reports:
        reports[suite]["ceilings"] = {**ceilings, **paced, "paced_round_trip_ms_p50": 0.07}
    targets = {t["target"]: t for t in summary.check_targets(reports, 100_000)}
    sqlite = targets["latency sqlite: jobq p50"]["bound"]
    postgres = targets["latency postgres: jobq p50"]["bound"]
    assert "0.70 ms at 200/s" in sqlite
    assert "commit: 0.35 ms at 200/s" in postgres and "round trips of 0.07 ms" in postgres


def test_a_missed_latency_against_a_peer_names_the_floor_of_jobqs_own_store() -> None:
    """The Redis suite's peers meet jobq on PostgreSQL: a missed "best peer's latency / jobq's"
    there names the peer, its durability, and the PostgreSQL ceilings (the durable commit at
    the workload's pace, and the claim's round trip); p99 against the commit's p99."""
    from benchmarks import summary

    def latency(p50: float, p99: float) -> dict[str, Any]:
        return {"latency": {"p50_ms": p50, "p99_ms": p99}}

    reports: dict[str, Any] = {
        "postgres": {
            "ceilings": {
                "commit_ms_p50": 0.15,
                "round_trip_ms_p50": 0.03,
                "pace_per_s": 200.0,
                "paced_commit_ms_p50": 0.37,
                "paced_commit_ms_p99": 0.52,
                "paced_round_trip_ms_p50": 0.06,
            },
            "systems": {"jobq": {"store": "postgres", **latency(0.9, 2.0)}},
        },
        "redis": {
            "systems": {
                "jobq": {"store": "postgres", **latency(0.9, 2.0)},
                "huey-redis": {"durability": "nothing on disk", **latency(0.3, 0.8)},
                "rq": {"durability": "nothing on disk", **latency(1.2, 2.5)},
            }
        },
    }
    targets = {t["target"]: t for t in summary.check_targets(reports, 100_000)}
    p50 = targets["latency redis: best peer's p50 / jobq's"]
    p99 = targets["latency redis: best peer's p99 / jobq's"]
    assert p50["met"] is False and p99["met"] is False
    assert p50["bound"] == (
        "huey-redis (nothing on disk): p50 0.30 ms in all; jobq's path holds a durable "
        "one-row commit alone, at 200/s: 0.37 ms, plus the claim's round trip 0.06 ms: 0.43 ms"
    )
    assert "p99 0.80 ms in all" in p99["bound"] and "at 200/s: 0.52 ms" in p99["bound"]
    # without the PostgreSQL suite's ceilings (a Redis-only run) there is no bound to name
    del reports["postgres"]
    targets = {t["target"]: t for t in summary.check_targets(reports, 100_000)}
    assert targets["latency redis: best peer's p50 / jobq's"]["bound"] is None


def test_the_ceilings_exchange_batch_is_a_default_workers_most() -> None:
    from benchmarks import ceilings
    from benchmarks.common import WORKER_THREADS

    from jobq.worker import PREFETCH_PER_THREAD

    assert ceilings.EXCHANGE_BATCH == WORKER_THREADS * (1 + PREFETCH_PER_THREAD)


def test_the_runner_imports_no_system() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, benchmarks.__main__; "
            "print(sorted(m for m in sys.modules if m == 'jobq' or m.startswith('jobq.')))",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "[]", done.stdout


def test_a_pace_that_is_not_positive_is_refused_naming_the_value(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from benchmarks import ceilings
    from benchmarks.__main__ import parse_args

    for bad in ("0", "-5", "nan"):
        with pytest.raises(SystemExit) as info:
            parse_args(["--rate", bad])
        assert info.value.code == 2
        assert "--rate must be a positive number of enqueues per second" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"pace must be a positive number .* not 0\.0"):
        ceilings.measure("sqlite", str(tmp_path / "c.db"), quick=True, pace=0.0)
    assert list(tmp_path.iterdir()) == []  # nothing was written
