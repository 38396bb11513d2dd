"""What only the PostgreSQL backend has: transactional enqueue, concurrent claimers, one
maintenance leader, surviving lost connections, schemas and migrations."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest

import jobq
from jobq.backends.postgres import PostgresBackend
from jobq.backends.postgres_schema import (
    MIGRATIONS,
    SCHEMA_VERSION,
    check_schema_name,
    current_version,
    migrate,
)
from tests.conftest import fresh_schema, new_job, postgres_or_skip

WAIT = 60.0


@pytest.fixture
def url() -> Iterator[str]:
    with fresh_schema() as u:
        yield u


@pytest.fixture
def app(url: str) -> Iterator[jobq.App]:
    a = jobq.App(url)
    yield a
    a.close()


def wait_for(cond: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def schema_of(url: str) -> str:
    return url.rsplit("schema=", 1)[1]


# -- transactional enqueue ---------------------------------------------------------------------


def test_transactional_enqueue_exists_iff_the_transaction_commits(app: jobq.App) -> None:
    @app.task
    def send(order_id: int) -> None: ...

    base = postgres_or_skip()
    with psycopg.connect(base) as conn:
        with conn.transaction():
            conn.execute("CREATE TEMP TABLE orders (id int)")
            conn.execute("INSERT INTO orders VALUES (42)")
            job = send.enqueue(42, connection=conn)  # type: ignore[call-arg]
            jobs = send.enqueue_many([(43,), (44,)], connection=conn)
            # not visible, and not claimable, before the commit
            with pytest.raises(jobq.JobNotFound):
                app.get_job(job.id)
            assert (
                app.backend.claim(["default"], 10, worker_id="w", lease=timedelta(seconds=30)) == []
            )
        assert app.get_job(job.id).state is jobq.JobState.AVAILABLE
        assert {j.id for j in jobs} <= {j.id for j in app.list_jobs()}

        with pytest.raises(RuntimeError, match="rolled back"), conn.transaction():
            doomed = send.options(connection=conn).enqueue(45)
            raise RuntimeError("the order failed, rolled back")
        with pytest.raises(jobq.JobNotFound):
            app.get_job(doomed.id)
    assert sum(app.stats()["default"].values()) == 3


def test_transactional_enqueue_needs_a_psycopg_connection(app: jobq.App) -> None:
    with pytest.raises(jobq.ConfigurationError, match="psycopg"):
        app.enqueue("t", connection=object())
    assert app.stats() == {}


def test_transactional_enqueue_is_refused_on_sqlite_and_memory(tmp_path: Any) -> None:
    for url in ("memory://", f"sqlite:///{tmp_path}/j.db"):
        other = jobq.App(url)
        with pytest.raises(jobq.ConfigurationError, match="needs PostgreSQL"):
            other.enqueue("t", connection=object())
        other.close()


def test_task_with_its_own_connection_parameter_keeps_it(app: jobq.App) -> None:
    @app.task
    def connect(connection: str) -> str:
        return connection

    job = connect.enqueue(connection="db-1")
    assert job.kwargs == {"connection": "db-1"}


# -- concurrency -------------------------------------------------------------------------------


def test_concurrent_claimers_never_take_the_same_job(url: str) -> None:
    handles = [PostgresBackend(url) for _ in range(4)]
    app = jobq.App(url)
    app.enqueue("t")  # opens the store
    app.backend.enqueue_many([new_job() for _ in range(2000)])
    got: list[list[int]] = [[] for _ in handles]

    def claimer(i: int) -> None:
        while batch := handles[i].claim(
            ["default"], 17, worker_id=f"w{i}", lease=timedelta(seconds=60)
        ):
            got[i].extend(r.id for r in batch)

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(len(handles))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    ids = [i for g in got for i in g]
    assert len(ids) == 2001 and len(set(ids)) == 2001
    assert sum(1 for g in got if g) >= 2  # they really competed
    for h in handles:
        h.close()
    app.close()


def test_claim_uses_the_partial_claim_index(app: jobq.App) -> None:
    b = app.backend
    assert isinstance(b, PostgresBackend)
    with psycopg.connect(postgres_or_skip()) as conn:
        conn.execute("SET enable_seqscan = off")
        plan = conn.execute(
            f"EXPLAIN SELECT id FROM {b.schema}.jobq_jobs WHERE state = 'available' "
            "AND queue = 'q' ORDER BY eff_priority DESC, deadline ASC NULLS LAST, run_at, id "
            "LIMIT 10"
        ).fetchall()
    text = "\n".join(r[0] for r in plan)
    assert "jobq_jobs_claim" in text and "Sort" not in text


# -- maintenance leader ------------------------------------------------------------------------


def test_one_leader_and_takeover_when_it_dies(url: str) -> None:
    a, b = PostgresBackend(url), PostgresBackend(url)
    try:
        assert a.try_lead() is True
        assert a.try_lead() is True  # stays leader
        assert b.try_lead() is False
        # the leader's session dies (process killed, network cut): its lock is released
        with psycopg.connect(postgres_or_skip(), autocommit=True) as admin:
            assert a._leader is not None
            admin.execute("SELECT pg_terminate_backend(%s)", (a._leader.info.backend_pid,))
        wait_for(b.try_lead, "another process to take over maintenance", timeout=10)
        assert a.try_lead() is False
    finally:
        a.close()
        b.close()


# -- lost connections --------------------------------------------------------------------------


def test_worker_survives_terminated_connections(app: jobq.App, url: str) -> None:
    done: list[int] = []

    @app.task
    def work(i: int) -> None:
        done.append(i)

    worker = app.worker(threads=4, poll_interval=0.2)
    runner = threading.Thread(target=worker.run, daemon=True)
    runner.start()
    work.enqueue_many([(i,) for i in range(100)])
    wait_for(lambda: len(done) >= 100, "the first batch")
    schema = schema_of(url)
    with psycopg.connect(postgres_or_skip(), autocommit=True) as admin:
        for _ in range(3):
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE pid <> pg_backend_pid() AND datname = current_database()"
            )
            work.enqueue_many([(i,) for i in range(100)])
    wait_for(
        lambda: app.stats().get("default", {}).get(jobq.JobState.COMPLETED, 0) == 400,
        f"all 400 jobs of schema {schema} to complete after the connections were killed",
    )
    worker.stop()
    runner.join(WAIT)
    assert not runner.is_alive()
    assert app.stats() == {"default": {jobq.JobState.COMPLETED: 400}}


def test_connection_refused_is_a_clear_error_with_password_redacted() -> None:
    with pytest.raises(jobq.DatabaseOpenError) as info:
        jobq.App("postgresql://bob:hunter2@127.0.0.1:1/nowhere").open()
    message = str(info.value)
    assert "hunter2" not in message and "bob:***@127.0.0.1:1" in message
    assert "cannot connect to PostgreSQL" in message


@pytest.mark.parametrize(
    "bad", ["postgresql://x@h/db?schema=Bad-Name", "postgresql://x@h/db?pool_size=0"]
)
def test_bad_postgres_options(bad: str) -> None:
    with pytest.raises(jobq.ConfigurationError):
        jobq.App(bad)


# -- schema and migrations ---------------------------------------------------------------------


def _catalog(conn: psycopg.Connection[Any], schema: str) -> dict[str, Any]:
    columns = conn.execute(
        "SELECT table_name, column_name, data_type, is_nullable, column_default "
        "FROM information_schema.columns WHERE table_schema = %s ORDER BY 1, 2",
        (schema,),
    ).fetchall()
    indexes = conn.execute(
        "SELECT indexname, replace(indexdef, %s, 'S') FROM pg_indexes WHERE schemaname = %s "
        "ORDER BY 1",
        (schema, schema),
    ).fetchall()
    checks = conn.execute(
        "SELECT conname, pg_get_constraintdef(c.oid) FROM pg_constraint c "
        "JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname = %s ORDER BY 1",
        (schema,),
    ).fetchall()
    return {"columns": columns, "indexes": indexes, "constraints": checks}


def test_fresh_schema_equals_one_migrated_from_every_earlier_version() -> None:
    base = postgres_or_skip()
    with psycopg.connect(base) as conn:
        fresh = "jobq_t_fresh"
        try:
            migrate(conn, fresh)
            want = _catalog(conn, fresh)
            for start in range(SCHEMA_VERSION):
                old = f"jobq_t_from_{start}"
                try:
                    with conn.transaction():  # build version `start` by hand
                        conn.execute(f"CREATE SCHEMA {old}")
                        conn.execute(
                            f"CREATE TABLE {old}.jobq_meta (key text PRIMARY KEY, "
                            "value text NOT NULL)"
                        )
                        for number in range(start):
                            for statement in MIGRATIONS[number]:
                                conn.execute(statement.replace("{s}", old))
                        conn.execute(
                            f"INSERT INTO {old}.jobq_meta VALUES ('schema_version', %s)",
                            (str(start),),
                        )
                    assert migrate(conn, old) == list(range(start + 1, SCHEMA_VERSION + 1))
                    got = _catalog(conn, old)
                    got["indexes"] = [(n, d.replace(old, "S")) for n, d in got["indexes"]]
                    assert got == want
                finally:
                    conn.execute(f"DROP SCHEMA IF EXISTS {old} CASCADE")
                    conn.commit()
        finally:
            conn.execute(f"DROP SCHEMA IF EXISTS {fresh} CASCADE")
            conn.commit()


def test_migrate_is_idempotent_and_safe_from_many_processes_at_once(url: str) -> None:
    schema = schema_of(url)
    base = postgres_or_skip()
    results: list[list[int]] = []
    errors: list[BaseException] = []

    barrier = threading.Barrier(6)

    def run() -> None:
        try:
            with psycopg.connect(base) as conn:
                # look first, as opening a backend does: every session now caches "no table"
                assert current_version(conn, schema) == 0
                conn.rollback()
                barrier.wait(WAIT)
                results.append(migrate(conn, schema))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert not errors
    assert sorted(results) == [[]] * 5 + [list(range(1, SCHEMA_VERSION + 1))]
    b = PostgresBackend(url)
    assert b.schema_version() == SCHEMA_VERSION
    b.close()


def test_newer_schema_is_refused(url: str) -> None:
    PostgresBackend(url).close()
    with psycopg.connect(postgres_or_skip()) as conn:
        conn.execute(
            f"UPDATE {schema_of(url)}.jobq_meta SET value = %s WHERE key = 'schema_version'",
            (str(SCHEMA_VERSION + 1),),
        )
    with pytest.raises(jobq.SchemaVersionError, match="upgrade jobq"):
        PostgresBackend(url)


def test_schema_names_are_validated() -> None:
    assert check_schema_name("jobq_prod") == "jobq_prod"
    for bad in ["", "Has-Dash", "x; DROP TABLE y", "1abc", "a" * 49]:
        with pytest.raises(jobq.ConfigurationError, match="schema name"):
            check_schema_name(bad)


def test_worker_survives_a_server_restart(app: jobq.App) -> None:
    """A fast restart of the server mid-run: the worker reconnects by itself and every job
    completes. Needs a command that restarts the test server, given by the environment."""
    import os
    import shlex
    import subprocess

    restart = os.environ.get("JOBQ_TEST_PG_RESTART")
    if not restart:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(
                "CI=true but JOBQ_TEST_PG_RESTART (a command restarting the server) is unset"
            )
        pytest.skip("set JOBQ_TEST_PG_RESTART to a command that restarts the test server")
    done: list[int] = []

    @app.task
    def work(i: int) -> None:
        time.sleep(0.005)
        done.append(i)

    worker = app.worker(threads=4, poll_interval=0.2, lease=3)
    runner = threading.Thread(target=worker.run, daemon=True)
    runner.start()
    work.enqueue_many([(i,) for i in range(300)])
    wait_for(lambda: len(done) >= 50, "some jobs to run before the restart")
    subprocess.run(shlex.split(restart), check=True, timeout=120, capture_output=True)

    def all_completed() -> bool:
        try:
            return app.stats() == {"default": {jobq.JobState.COMPLETED: 300}}
        except jobq.BackendError:
            return False  # this test's own connections are reconnecting too

    wait_for(all_completed, "every job to complete after the restart")
    worker.stop()
    runner.join(WAIT)
    assert not runner.is_alive()
    # attempts that the restart cut off were rescued and ran again: nothing lost
    assert set(done) == set(range(300))


def test_producer_rides_through_a_server_restart(url: str) -> None:
    """Regression: a pool that stopped reconnecting after one failed attempt made every enqueue
    during a restart wait its whole pool_timeout and fail, long after the server was back."""
    import os
    import shlex
    import subprocess

    restart = os.environ.get("JOBQ_TEST_PG_RESTART")
    if not restart:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("CI=true but JOBQ_TEST_PG_RESTART is unset")
        pytest.skip("set JOBQ_TEST_PG_RESTART to a command that restarts the test server")
    app = jobq.App(url + "&pool_timeout=20")
    app.enqueue("t")
    restarting = threading.Thread(
        target=lambda: subprocess.run(shlex.split(restart), timeout=120, capture_output=True)
    )
    restarting.start()
    ok = failed = 0
    slowest = 0.0
    while restarting.is_alive() or ok < 50:
        started = time.monotonic()
        try:
            app.enqueue("t")
            ok += 1
        except jobq.BackendError:
            failed += 1  # a statement in flight when the server went down: not retried blindly
        slowest = max(slowest, time.monotonic() - started)
        if time.monotonic() > started + WAIT:
            break
    restarting.join(WAIT)
    app.close()
    assert ok >= 50
    assert failed <= 3
    assert slowest < 15.0  # waited for the server to come back, not for the pool to give up
