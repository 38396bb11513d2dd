"""What only the SQLite backend has: durability settings, open errors, schema, query plans."""

from __future__ import annotations

import multiprocessing
import os
import random
import sqlite3
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import jobq
from jobq.backends import JobFilter, Lease, Outcome, OutcomeKind
from jobq.backends.base import select_limited
from jobq.backends.sqlite import SQLiteBackend
from jobq.backends.sqlite_schema import SCHEMA_VERSION
from jobq.clock import NO_DEADLINE_US, to_us
from jobq.states import JobState
from tests.conftest import T0, new_job

LEASE = timedelta(seconds=30)


def test_durable_defaults(tmp_path: Path) -> None:
    b = SQLiteBackend(f"sqlite:///{tmp_path}/j.db")
    conn = b._conn()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert b.schema_version() == SCHEMA_VERSION
    b.close()
    fast = SQLiteBackend(f"sqlite:///{tmp_path}/j.db?synchronous=normal")
    assert fast._conn().execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    fast.close()


def test_relative_and_absolute_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    rel = SQLiteBackend("sqlite:///rel.db")
    assert (tmp_path / "rel.db").exists()
    rel.close()
    abs_ = SQLiteBackend(f"sqlite:///{tmp_path}/abs.db")
    assert abs_.path == f"{tmp_path}/abs.db"
    abs_.close()


def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(jobq.DatabaseOpenError, match="does not exist"):
        jobq.App(f"sqlite:///{tmp_path}/no/such/dir/j.db").open()


def test_path_under_a_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    with pytest.raises(jobq.DatabaseOpenError):
        jobq.App(f"sqlite:///{tmp_path}/afile/j.db").open()


def test_file_that_is_not_a_database(tmp_path: Path) -> None:
    (tmp_path / "garbage.db").write_bytes(b"this is not a sqlite file" * 100)
    with pytest.raises(jobq.DatabaseOpenError, match=r"garbage\.db"):
        jobq.App(f"sqlite:///{tmp_path}/garbage.db").open()


def test_filesystem_without_wal_fails_loudly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(SQLiteBackend, "_enable_wal", lambda self, conn: "delete")
    with pytest.raises(jobq.DatabaseOpenError, match="cannot use WAL"):
        jobq.App(f"sqlite:///{tmp_path}/j.db").open()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    SQLiteBackend(f"sqlite:///{path}").close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(jobq.SchemaVersionError, match="upgrade jobq"):
        SQLiteBackend(f"sqlite:///{path}")


def test_reopening_does_not_migrate_again(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/j.db"
    app = jobq.App(url)
    job = app.enqueue("t", args=[1])
    app.close()
    again = jobq.App(url)
    assert again.get_job(job.id).args == [1]
    assert again.backend.schema_version() == SCHEMA_VERSION  # type: ignore[attr-defined]
    again.close()


def test_claim_walks_the_claim_index(tmp_path: Path) -> None:
    b = SQLiteBackend(f"sqlite:///{tmp_path}/j.db")
    plan = (
        b._conn()
        .execute(
            "EXPLAIN QUERY PLAN SELECT id FROM jobq_jobs WHERE state = 'available' "
            "AND limited = 0 AND queue = 'q' "
            "ORDER BY eff_priority DESC, deadline_key, run_at, id LIMIT 10"
        )
        .fetchall()
    )
    text = " ".join(str(row[-1]) for row in plan)
    assert "jobq_jobs_claim" in text and "TEMP B-TREE" not in text
    b.close()


def test_undecodable_stored_errors_do_not_break_reading(tmp_path: Path) -> None:
    app = jobq.App(f"sqlite:///{tmp_path}/j.db")
    job = app.enqueue("t")
    conn = sqlite3.connect(tmp_path / "j.db")
    conn.execute("UPDATE jobq_jobs SET errors = 'not json' WHERE id = ?", (job.id,))
    conn.commit()
    conn.close()
    assert app.get_job(job.id).errors[0].type == "CorruptErrors"
    app.close()


def _sqlite_schema(path: Path) -> list[tuple[str, str, str]]:
    conn = sqlite3.connect(path)
    rows = conn.execute(
        "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY 2"
    ).fetchall()
    conn.close()
    return [(t, n, " ".join((s or "").split())) for t, n, s in rows]


def test_fresh_schema_equals_one_migrated_from_every_earlier_version(tmp_path: Path) -> None:
    from jobq.backends.sqlite_schema import MIGRATIONS

    fresh = tmp_path / "fresh.db"
    SQLiteBackend(f"sqlite:///{fresh}").close()
    want = _sqlite_schema(fresh)
    for start in range(1, SCHEMA_VERSION):
        old = tmp_path / f"from_{start}.db"
        conn = sqlite3.connect(old)
        for number in range(start):
            for statement in MIGRATIONS[number]:
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {start}")
        conn.commit()
        conn.close()
        migrated = SQLiteBackend(f"sqlite:///{old}")
        assert migrated.schema_version() == SCHEMA_VERSION
        migrated.close()
        assert _sqlite_schema(old) == want


# -- flow control: what only SQLite has (schema, query plans, the lean hot path) ---------------


def _plan(b: SQLiteBackend, sql: str, params: Any = ()) -> str:
    rows = b._conn().execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()
    return " | ".join(str(r[-1]) for r in rows)


def _v2_database(path: Path) -> None:
    """A database as jobq wrote it before flow control: migrations 1-2 only, with jobs in it."""
    from jobq.backends.sqlite_schema import MIGRATIONS

    conn = sqlite3.connect(path)
    for number in range(2):
        for statement in MIGRATIONS[number]:
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 2")
    cols = (
        "queue, task, args, kwargs, priority, eff_priority, deadline_key, run_at, max_attempts, "
        "unique_key, state, created_at, finished_at"
    )
    t0, later = to_us(T0), to_us(T0) + 10**9
    no = NO_DEADLINE_US
    rows = [
        ("default", "a", "[1]", "{}", 0, 0, no, t0, 3, None, "available", t0, None),
        ("default", "b", "[2]", "{}", 5, 5, no, t0, 3, "k", "available", t0, None),
        ("default", "c", "[3]", "{}", 0, 0, no, later, 3, None, "scheduled", t0, None),
        ("default", "d", "[4]", "{}", 0, 0, no, t0, 3, None, "completed", t0, t0),
    ]
    conn.executemany(f"INSERT INTO jobq_jobs ({cols}) VALUES ({', '.join('?' * 13)})", rows)
    conn.commit()
    conn.close()


def test_a_v2_database_migrates_and_keeps_its_jobs(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    _v2_database(path)
    b = SQLiteBackend(f"sqlite:///{path}")
    assert b.schema_version() == SCHEMA_VERSION
    jobs = b.list_jobs(JobFilter(), limit=10)
    assert [(r.task, r.state.value) for r in reversed(jobs)] == [
        ("a", "available"),
        ("b", "available"),
        ("c", "scheduled"),
        ("d", "completed"),
    ]
    a = jobs[-1]
    assert (a.args, a.concurrency_key, a.rate_key, a.depends_on) == ([1], None, None, ())
    assert (a.allow_failed, a.progress, a.progress_message, a.secret) == (False, None, None, ())
    # the rebuilt claim index serves the old rows, in claim order
    got = b.claim(["default"], 10, worker_id="w", lease=LEASE, now=T0)
    assert [r.task for r in got] == ["b", "a"]
    # the unique index still holds across the migration, and new features work on old rows
    (again,) = b.enqueue_many([new_job(unique_key="k")], now=T0)
    assert again.id == got[0].id
    (dep,) = b.enqueue_many([new_job("e", depends_on=(got[1].id,))], now=T0)
    assert dep.state is JobState.BLOCKED
    b.record_outcomes(
        [Outcome(Lease(got[1].id, got[1].lease_token or ""), OutcomeKind.COMPLETED)], now=T0
    )
    assert b.get(dep.id).state is JobState.AVAILABLE  # type: ignore[union-attr]
    (new,) = b.enqueue_many([new_job("f")], now=T0)
    assert new.id > jobs[0].id  # ids continue after the old ones
    b.close()


def test_query_plans_of_the_flow_control_paths(tmp_path: Path) -> None:
    from jobq.backends import sqlite as S

    b = SQLiteBackend(f"sqlite:///{tmp_path}/j.db")
    params = {
        "q0": "a",
        "q1": "b",
        "limit": 5,
        "now": 0,
        "until": 1,
        "worker": "w",
        "chosen": "[]",
        "running": "{}",
        "started": "{}",
    }
    claim_plan = _plan(b, S._claim_sql(2, False), params)
    assert claim_plan.count("USING INDEX jobq_jobs_claim (queue=?)") == 2
    limited_plan = _plan(b, S._limited_sql(2, False), params)
    assert limited_plan.count("USING INDEX jobq_jobs_claim_limited (queue=?)") == 2
    probe = _plan(b, S._probe_sql(2), params)
    assert "jobq_jobs_claim_limited" in probe and "jobq_queues" in probe
    assert "SCAN jobq_jobs" not in probe
    holder = _plan(b, f"SELECT id FROM jobq_jobs WHERE unique_key = 'k' AND {S._ACTIVE_INDEXED}")
    assert "USING INDEX jobq_jobs_unique (unique_key=?)" in holder
    window = _plan(
        b,
        "SELECT id FROM jobq_jobs WHERE unique_key = 'k' AND created_at > 0 "
        "ORDER BY created_at DESC, id DESC LIMIT 1",
    )
    assert "jobq_jobs_unique_recent" in window and "TEMP B-TREE" not in window
    prune = _plan(
        b,
        f"SELECT id FROM jobq_jobs WHERE {S._FINISHED_INDEXED} AND state = 'dead' "
        "AND finished_at < 5 AND (finished_at, id) < (5, 5) LIMIT 9",
    )
    assert "jobq_jobs_finished" in prune
    depth = _plan(
        b,
        "SELECT (SELECT count(*) FROM jobq_jobs WHERE state = 'available' AND limited = 0 "
        "AND queue = :q) + (SELECT count(*) FROM jobq_jobs WHERE state = 'available' "
        "AND limited = 1 AND queue = :q) + (SELECT count(*) FROM jobq_jobs "
        "WHERE state IN ('scheduled', 'blocked') AND queue = :q)",
        {"q": "a"},
    )
    assert "SCAN jobq_jobs" not in depth
    assert "jobq_jobs_waiting" in depth
    running = _plan(
        b,
        "SELECT count(*) FROM jobq_jobs WHERE state = 'running' AND concurrency_key = 'k'",
    )
    assert "jobq_jobs_running_key" in running
    b.close()


def test_limited_jobs_stay_out_of_the_regular_claim_index(tmp_path: Path) -> None:
    b = SQLiteBackend(f"sqlite:///{tmp_path}/j.db")
    b.enqueue_many(
        [
            new_job("plain"),
            new_job("c", concurrency_key="k", concurrency_limit=1),
            new_job("r", rate_key="r", rate_limit=1, rate_period=timedelta(minutes=1)),
        ],
        now=T0,
    )
    conn = b._conn()
    regular = conn.execute(
        "SELECT task FROM jobq_jobs INDEXED BY jobq_jobs_claim "
        "WHERE state = 'available' AND limited = 0 AND queue = 'default'"
    ).fetchall()
    assert regular == [("plain",)]
    limited = conn.execute(
        "SELECT task FROM jobq_jobs INDEXED BY jobq_jobs_claim_limited "
        "WHERE state = 'available' AND limited = 1 AND queue = 'default' ORDER BY id"
    ).fetchall()
    assert limited == [("c",), ("r",)]
    b.close()


def test_the_hot_path_does_no_flow_control_work_when_none_is_needed(tmp_path: Path) -> None:
    """With no limited job, no paused queue and no dependents, a record_and_claim runs the
    statements it always ran plus one probe: no dependency lookup, no limited-candidate walk."""
    b = SQLiteBackend(f"sqlite:///{tmp_path}/j.db")
    b.enqueue_many([new_job() for _ in range(8)], now=T0)
    (first,) = b.claim(["default"], 1, worker_id="w", lease=LEASE, now=T0)
    statements: list[str] = []
    b._conn().set_trace_callback(statements.append)
    done, got = b.record_and_claim(
        [Outcome(Lease(first.id, first.lease_token or ""), OutcomeKind.COMPLETED)],
        ["default"],
        4,
        worker_id="w",
        lease=LEASE,
        now=T0,
    )
    b._conn().set_trace_callback(None)
    assert done == {first.id} and len(got) == 4
    body = [s for s in statements if s not in ("BEGIN IMMEDIATE", "COMMIT")]
    assert len(body) == 3, body  # the outcome, the probe, the claim
    assert not any("jobq_deps" in s or "jobq_rate_starts" in s for s in body)
    b.close()


def test_has_dependents_marks_only_jobs_that_have_them(tmp_path: Path) -> None:
    b = SQLiteBackend(f"sqlite:///{tmp_path}/j.db")
    a, lone, c = b.enqueue_many(
        [new_job("a"), new_job("lone"), new_job("c", depends_on_batch=(0,))], now=T0
    )
    flags = dict(b._conn().execute("SELECT id, has_dependents FROM jobq_jobs").fetchall())
    assert flags == {a.id: 1, lone.id: 0, c.id: 0}
    assert b._conn().execute("SELECT dep_id, job_id FROM jobq_deps").fetchall() == [(a.id, c.id)]
    got = b.claim(["default"], 2, worker_id="w", lease=LEASE, now=T0)
    b.record_outcomes(
        [Outcome(Lease(r.id, r.lease_token or ""), OutcomeKind.COMPLETED) for r in got], now=T0
    )
    # resolved edges are gone: a manual retry and second completion of `a` cannot count twice
    assert b._conn().execute("SELECT count(*) FROM jobq_deps").fetchone()[0] == 0
    assert b.get(c.id).state is JobState.AVAILABLE  # type: ignore[union-attr]
    b.close()


def test_a_completed_dependency_retried_and_completed_again_does_not_count_twice(
    tmp_path: Path,
) -> None:
    b = SQLiteBackend(f"sqlite:///{tmp_path}/j.db")
    a1, _a2, dep = b.enqueue_many(
        [new_job("a1"), new_job("a2", queue="slow"), new_job("d", depends_on_batch=(0, 1))],
        now=T0,
    )
    for _ in range(2):
        (r,) = b.claim(["default"], 1, worker_id="w", lease=LEASE, now=T0)
        assert r.id == a1.id
        b.record_outcomes(
            [Outcome(Lease(r.id, r.lease_token or ""), OutcomeKind.COMPLETED)], now=T0
        )
        assert b.get(dep.id).state is JobState.BLOCKED  # type: ignore[union-attr]
        if _ == 0:
            b.retry(a1.id, now=T0)
    (r2,) = b.claim(["slow"], 1, worker_id="w", lease=LEASE, now=T0)
    b.record_outcomes([Outcome(Lease(r2.id, r2.lease_token or ""), OutcomeKind.COMPLETED)], now=T0)
    assert b.get(dep.id).state is JobState.AVAILABLE  # type: ignore[union-attr]
    b.close()


def test_limited_claim_pages_past_keys_at_their_limit(tmp_path: Path) -> None:
    """A long run of candidates whose key is at its limit does not hide the ones behind it."""
    b = SQLiteBackend(f"sqlite:///{tmp_path}/j.db")
    jobs = [
        new_job(f"a{i}", priority=9, concurrency_key="a", concurrency_limit=1) for i in range(50)
    ]
    jobs += [
        new_job(f"b{i}", priority=5, concurrency_key="b", concurrency_limit=2) for i in range(5)
    ]
    jobs += [
        new_job(f"c{i}", rate_key="c", rate_limit=1, rate_period=timedelta(hours=1))
        for i in range(30)
    ]
    jobs += [new_job("d", concurrency_key="d", concurrency_limit=1)]
    b.enqueue_many(jobs, now=T0)
    got = b.claim(["default"], 10, worker_id="w", lease=LEASE, now=T0)
    assert sorted(r.task for r in got) == ["a0", "b0", "b1", "c0", "d"]
    assert b.claim(["default"], 10, worker_id="w", lease=LEASE, now=T0) == []
    b.close()


def test_limited_claims_match_select_limited_over_every_candidate(tmp_path: Path) -> None:
    """Random limited backlogs: what a claim takes is exactly what ``select_limited`` picks from
    the whole ordered candidate list (the paging is an optimisation, not a second rule)."""
    rnd = random.Random(11)
    for round_ in range(6):
        b = SQLiteBackend(f"sqlite:///{tmp_path}/r{round_}.db")
        jobs = []
        for i in range(rnd.randint(20, 80)):
            kw: dict[str, Any] = {"priority": rnd.randint(0, 3)}
            if rnd.random() < 0.7:
                kw.update(
                    concurrency_key=f"c{rnd.randint(0, 4)}", concurrency_limit=rnd.randint(1, 3)
                )
            if rnd.random() < 0.5 or "concurrency_key" not in kw:
                kw.update(
                    rate_key=f"r{rnd.randint(0, 3)}",
                    rate_limit=rnd.randint(1, 4),
                    rate_period=timedelta(minutes=1),
                )
            jobs.append(new_job(f"j{i}", **kw))
        b.enqueue_many(jobs, now=T0)
        now = T0
        running: list[Any] = []
        for _step in range(8):
            conn = b._conn()
            cands = conn.execute(
                "SELECT id, concurrency_key, concurrency_limit, rate_key, rate_limit "
                "FROM jobq_jobs WHERE state = 'available' "
                "ORDER BY eff_priority DESC, deadline_key, run_at, id"
            ).fetchall()
            run_counts = dict(
                conn.execute(
                    "SELECT concurrency_key, count(*) FROM jobq_jobs WHERE state = 'running' "
                    "GROUP BY concurrency_key"
                ).fetchall()
            )
            starts = dict(
                conn.execute(
                    "SELECT rate_key, count(*) FROM jobq_rate_starts WHERE until > ? "
                    "GROUP BY rate_key",
                    (to_us(now),),
                ).fetchall()
            )
            n = rnd.randint(1, 6)
            want = select_limited([tuple(c) for c in cands], run_counts, starts, n)
            got = b.claim(["default"], n, worker_id="w", lease=LEASE, now=now)
            assert sorted(r.id for r in got) == sorted(want), f"round {round_}"
            running += got
            done = [running.pop(rnd.randrange(len(running))) for _ in range(min(2, len(running)))]
            b.record_outcomes(
                [Outcome(Lease(r.id, r.lease_token or ""), OutcomeKind.COMPLETED) for r in done],
                now=now,
            )
            now += timedelta(seconds=rnd.choice([0, 10, 40]))
        b.close()


def test_rate_starts_past_their_window_are_swept(tmp_path: Path) -> None:
    b = SQLiteBackend(f"sqlite:///{tmp_path}/j.db")
    b.enqueue_many(
        [new_job(rate_key="r", rate_limit=5, rate_period=timedelta(seconds=10)) for _ in range(8)],
        now=T0,
    )
    assert len(b.claim(["default"], 10, worker_id="w", lease=LEASE, now=T0)) == 5
    count = "SELECT count(*) FROM jobq_rate_starts"
    assert b._conn().execute(count).fetchone()[0] == 5
    later = T0 + timedelta(seconds=10)
    assert len(b.claim(["default"], 10, worker_id="w", lease=LEASE, now=later)) == 3
    assert b._conn().execute(count).fetchone()[0] == 3
    b.close()


def test_a_pause_takes_effect_on_the_next_claim_of_another_process_handle(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/j.db"
    worker, operator = SQLiteBackend(url), SQLiteBackend(url)
    worker.enqueue_many([new_job() for _ in range(3)], now=T0)
    assert len(worker.claim(["default"], 1, worker_id="w", lease=LEASE, now=T0)) == 1
    operator.set_queue("default", paused=True)
    assert worker.claim(["default"], 5, worker_id="w", lease=LEASE, now=T0) == []
    operator.set_queue("default", paused=False)
    assert len(worker.claim(["default"], 5, worker_id="w", lease=LEASE, now=T0)) == 2
    worker.close()
    operator.close()


def test_search_ignores_case_beyond_ascii(tmp_path: Path) -> None:
    b = SQLiteBackend(f"sqlite:///{tmp_path}/j.db")
    (a,) = b.enqueue_many([new_job(args_json='["ÉCOLE Straße"]')], now=T0)
    assert [r.id for r in b.list_jobs(JobFilter(search="école"))] == [a.id]
    assert [r.id for r in b.list_jobs(JobFilter(search="STRASSE"))] == []
    assert [r.id for r in b.list_jobs(JobFilter(search="straße"))] == [a.id]
    b.close()


def test_enqueue_tick_rolls_back_with_a_unique_raise(tmp_path: Path) -> None:
    b = SQLiteBackend(f"sqlite:///{tmp_path}/j.db")
    b.enqueue_many([new_job(unique_key="report")], now=T0)
    with pytest.raises(jobq.UniqueConflict):
        b.enqueue_tick("r", T0, new_job(unique_key="report", on_conflict="raise"), now=T0)
    assert b.cron_ticks() == {}
    b.close()


# -- the concurrency limit under several processes -------------------------------------------

_LIMIT = 3


def _limited_worker(url: str, seconds: float) -> int:
    """Claim and finish limited jobs as fast as possible until none are left (or time is up)."""
    b = SQLiteBackend(url)
    ran = 0
    outcomes: list[Outcome] = []
    give_up = time.monotonic() + seconds
    try:
        while time.monotonic() < give_up:
            _, got = b.record_and_claim(
                outcomes, ["default"], 2, worker_id=f"w{os.getpid()}", lease=timedelta(minutes=5)
            )
            outcomes = [
                Outcome(Lease(r.id, r.lease_token or ""), OutcomeKind.COMPLETED) for r in got
            ]
            ran += len(got)
            if not got:
                left = b._read(
                    "SELECT count(*) FROM jobq_jobs WHERE state IN ('available', 'running')"
                )[0][0]
                if left == 0:
                    break
                time.sleep(0.005)
    finally:
        if outcomes:
            b.record_outcomes(outcomes)
        b.close()
    return ran


@pytest.mark.slow
def test_concurrency_limit_holds_across_processes(tmp_path: Path) -> None:
    """Four processes claim and finish limited jobs of two keys on one file; a trigger records
    (inside each claim's transaction) any moment a key had more than its limit running."""
    url = f"sqlite:///{tmp_path}/j.db"
    b = SQLiteBackend(url)
    b.enqueue_many(
        [new_job(f"a{i}", concurrency_key="a", concurrency_limit=_LIMIT) for i in range(150)]
        + [new_job(f"b{i}", concurrency_key="b", concurrency_limit=1) for i in range(50)]
        + [new_job(f"u{i}") for i in range(50)]
    )
    conn = b._conn()
    conn.execute("CREATE TABLE over_limit (key TEXT, running INTEGER)")
    conn.execute(
        "CREATE TRIGGER watch AFTER UPDATE OF state ON jobq_jobs "
        "WHEN NEW.state = 'running' AND NEW.concurrency_key IS NOT NULL BEGIN "
        "INSERT INTO over_limit SELECT NEW.concurrency_key, n FROM (SELECT count(*) AS n "
        "FROM jobq_jobs WHERE state = 'running' AND concurrency_key = NEW.concurrency_key) "
        "WHERE n > (CASE NEW.concurrency_key WHEN 'a' THEN 3 ELSE 1 END); END"
    )
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        ran = pool.starmap(_limited_worker, [(url, 240.0)] * 4)
    assert sum(ran) == 250
    assert conn.execute("SELECT * FROM over_limit").fetchall() == []
    assert b.stats() == {"default": {JobState.COMPLETED: 250}}
    b.close()
