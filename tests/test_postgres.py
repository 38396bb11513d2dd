"""What only the PostgreSQL backend has: transactional enqueue, concurrent claimers, one
maintenance leader, surviving lost connections, schemas and migrations."""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

import jobq
from jobq.backends import Lease, Outcome, OutcomeKind
from jobq.backends.postgres import PostgresBackend, _check_alive, _lend, _readable
from jobq.backends.postgres_schema import (
    MIGRATIONS,
    SCHEMA_VERSION,
    check_schema_name,
    current_version,
    migrate,
)
from jobq.job import JobRecord
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


def _plan(schema: str, where: str) -> str:
    with psycopg.connect(postgres_or_skip()) as conn:
        conn.execute("SET enable_seqscan = off")
        plan = conn.execute(
            f"EXPLAIN SELECT id FROM {schema}.jobq_jobs WHERE state = 'available' "
            f"AND queue = 'q' AND {where} "
            "ORDER BY eff_priority DESC, deadline ASC NULLS LAST, run_at, id LIMIT 10"
        ).fetchall()
    return "\n".join(r[0] for r in plan)


def test_claim_uses_the_partial_claim_index(app: jobq.App) -> None:
    b = app.backend
    assert isinstance(b, PostgresBackend)
    # the regular claim index holds only unlimited jobs; limited ones have their own
    text = _plan(b.schema, "limit_group IS NULL")
    assert "jobq_jobs_claim " in text and "Sort" not in text
    text = _plan(b.schema, "limit_group IS NOT NULL")
    assert "jobq_jobs_claim_limited" in text and "Sort" not in text


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


def test_worker_survives_terminated_connections(url: str) -> None:
    # its own application_name: only this app's sessions are cut, not those of another test
    # run sharing the database
    tag = f"jobq_cut_{schema_of(url)}"
    app = jobq.App(f"{url}&application_name={tag}")
    try:
        _survives_terminated_connections(app, url, tag)
    finally:
        app.close()


def _survives_terminated_connections(app: jobq.App, url: str, tag: str) -> None:
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
            # waits for each session to end: a connection the server ended while it was idle
            # is replaced before it is lent (one ended while in use fails that use)
            cut = admin.execute(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 10000)) "
                "FROM pg_stat_activity "
                "WHERE pid <> pg_backend_pid() AND application_name = %s",
                (tag,),
            ).fetchone()
            assert cut is not None and cut[0] >= 1, "no session of the app was cut"
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


# -- flow control: what the PostgreSQL backend has to prove beyond the conformance suite -----


def _counting(b: PostgresBackend, monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count the backend's transactions, single statements and limited claims."""
    calls = {"tx": 0, "statement": 0, "limited": 0}

    def wrap(name: str, key: str) -> None:
        original = getattr(b, name)

        def counted(*a: Any, **kw: Any) -> Any:
            calls[key] += 1
            return original(*a, **kw)

        monkeypatch.setattr(b, name, counted)

    wrap("_tx", "tx")
    wrap("_one_round_trip", "statement")
    wrap("_claim_limited", "limited")
    return calls


def _complete(records: list[JobRecord]) -> list[Outcome]:
    return [Outcome(Lease(r.id, r.lease_token or ""), OutcomeKind.COMPLETED) for r in records]


def test_hot_path_stays_one_statement_per_call(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Flow control costs the regular path no round trip: with limited jobs only in queues a
    worker does not serve, a paused queue, and dependents elsewhere, enqueue, claim and
    outcome+claim stay one statement each."""
    b = PostgresBackend(url)
    try:
        b.set_queue("paused", paused=True)
        b.enqueue_many([new_job(queue="paused"), *[new_job(queue="other") for _ in range(2)]])
        (dep,) = b.enqueue_many([new_job(queue="other")])
        b.enqueue_many([new_job(queue="other", depends_on=(dep.id,))])
        b.enqueue_many([new_job(queue="other", concurrency_key="k", concurrency_limit=1)])
        calls = _counting(b, monkeypatch)
        b.enqueue_many([new_job() for _ in range(20)])
        got = b.claim(["default", "paused"], 5, worker_id="w", lease=timedelta(seconds=60))
        assert len(got) == 5
        for _ in range(3):
            done, got = b.record_and_claim(
                _complete(got), ["default"], 5, worker_id="w", lease=timedelta(seconds=60)
            )
            assert len(done) == 5 and len(got) == 5
        assert calls == {"tx": 0, "statement": 5, "limited": 0}
    finally:
        b.close()


def test_backlog_at_its_limit_costs_one_statement_per_claim(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Limited jobs waiting at their limit: after the first claim notices them, claims and
    outcome+claim are one statement each again (no locked transaction), taking unlimited jobs."""
    b = PostgresBackend(url)
    lease = timedelta(seconds=60)
    try:
        b.enqueue_many([new_job("k", concurrency_key="k", concurrency_limit=1) for _ in range(50)])
        assert [r.task for r in b.claim(["default"], 1, worker_id="w", lease=lease)] == ["k"]
        b.enqueue_many([new_job("u") for _ in range(20)])
        calls = _counting(b, monkeypatch)
        got = b.claim(["default"], 5, worker_id="w", lease=lease)
        for _ in range(3):
            done, got = b.record_and_claim(
                _complete(got), ["default"], 5, worker_id="w", lease=lease
            )
            assert len(done) == 5 and [r.task for r in got] == ["u"] * 5
        assert calls == {"tx": 0, "statement": 4, "limited": 0}
    finally:
        b.close()


def test_limited_claim_transaction_only_when_a_limited_job_can_be_taken(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    b = PostgresBackend(url)
    try:
        b.enqueue_many([new_job("k", concurrency_key="k", concurrency_limit=1) for _ in range(3)])
        b.enqueue_many([new_job("u") for _ in range(6)])
        calls = _counting(b, monkeypatch)
        lease = timedelta(seconds=60)
        first = b.claim(["default"], 2, worker_id="w", lease=lease)
        assert [r.task for r in first] == ["k", "u"]  # limited first, then unlimited
        assert calls["limited"] == 1
        second = b.claim(["default"], 2, worker_id="w", lease=lease)  # "k" is at its limit
        assert [r.task for r in second] == ["u", "u"] and calls["limited"] == 1
        # finishing the running "k" frees its slot in the statement that also claims
        done, third = b.record_and_claim(
            _complete(first[:1]), ["default"], 2, worker_id="w", lease=lease
        )
        assert done == {first[0].id} and [r.task for r in third] == ["k", "u"]
        assert calls["limited"] == 2
    finally:
        b.close()


def test_open_limit_group_behind_a_long_blocked_backlog_is_found(url: str) -> None:
    """A key at its limit with a long backlog ahead in claim order does not hide a key that has
    room, however far behind it waits."""
    b = PostgresBackend(url)
    try:
        lease = timedelta(seconds=60)
        b.enqueue_many(
            [new_job("big", concurrency_key="big", concurrency_limit=1, priority=5)] * 500
        )
        b.enqueue_many([new_job("small", concurrency_key="small", concurrency_limit=2)] * 3)
        b.enqueue_many(
            [new_job("rated", rate_key="api", rate_limit=1, rate_period=timedelta(hours=1))] * 2
        )
        first = b.claim(["default"], 1, worker_id="w", lease=lease)
        assert [r.task for r in first] == ["big"]
        got = b.claim(["default"], 10, worker_id="w", lease=lease)
        assert sorted(r.task for r in got) == ["rated", "small", "small"]
        assert b.claim(["default"], 10, worker_id="w", lease=lease) == []
    finally:
        b.close()


def _dependency_race(producer: PostgresBackend, worker: PostgresBackend, queue: str) -> int:
    """Add a dependent of a running job while the worker completes it; the dependent's id."""
    lease = timedelta(seconds=60)
    (a,) = worker.enqueue_many([new_job("a", queue=queue)])
    (r,) = worker.claim([queue], 1, worker_id="w", lease=lease)
    barrier = threading.Barrier(2)
    made: list[JobRecord] = []

    def produce() -> None:
        barrier.wait(WAIT)
        made.extend(producer.enqueue_many([new_job("b", queue="b", depends_on=(a.id,))]))

    def complete() -> None:
        barrier.wait(WAIT)
        worker.record_and_claim(_complete([r]), ["none"], 1, worker_id="w", lease=lease)

    threads = [threading.Thread(target=produce), threading.Thread(target=complete)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    return made[0].id


def test_dependency_enqueued_while_it_completes_is_never_stranded(url: str) -> None:
    """A producer adding a dependent of a running job races the worker completing it (through
    the one-statement outcome+claim): whichever commits first, the dependent ends up available,
    never blocked on a dependency that already completed."""
    producer, worker = PostgresBackend(url), PostgresBackend(url)
    try:
        for round_ in range(25):
            got = producer.get(_dependency_race(producer, worker, f"a{round_}"))
            assert got is not None and got.state is jobq.JobState.AVAILABLE, f"round {round_}"
    finally:
        producer.close()
        worker.close()


def test_transactional_enqueue_with_dependencies_and_unique_keys(url: str) -> None:
    b = PostgresBackend(url)
    base = postgres_or_skip()
    try:
        (a,) = b.enqueue_many([new_job("a")])
        with psycopg.connect(base) as conn:  # not autocommit, and no transaction begun yet
            (d,) = b.enqueue_many(
                [new_job("d", depends_on=(a.id,), unique_key="u", on_conflict="raise")],
                connection=conn,
            )
            assert d.state is jobq.JobState.BLOCKED and b.get(d.id) is None  # not committed
            # a refused call leaves the caller's transaction usable and adds nothing to it
            with pytest.raises(jobq.UniqueConflict):
                b.enqueue_many(
                    [new_job("x"), new_job(unique_key="u", on_conflict="raise")], connection=conn
                )
            with pytest.raises(jobq.DependencyError):
                b.enqueue_many([new_job("x"), new_job(depends_on=(10**9,))], connection=conn)
            assert conn.execute(f"SELECT count(*) FROM {b.schema}.jobq_jobs").fetchone() == (2,)
            conn.rollback()
        assert b.get(d.id) is None and b.stats() == {"default": {jobq.JobState.AVAILABLE: 1}}
        with psycopg.connect(base, row_factory=dict_row) as conn, conn.transaction():
            (d,) = b.enqueue_many(
                [new_job("d", depends_on=(a.id,), unique_key="u", unique_window=timedelta(1))],
                connection=conn,
            )
            (d2,) = b.enqueue_many([new_job("d", unique_key="u")], connection=conn)
            assert d2.id == d.id
        got = b.get(d.id)
        assert got is not None and got.state is jobq.JobState.BLOCKED and got.depends_on == (a.id,)
        (r,) = b.claim(["default"], 1, worker_id="w", lease=timedelta(seconds=60))
        b.record_outcomes(_complete([r]))
        got = b.get(d.id)
        assert got is not None and got.state is jobq.JobState.AVAILABLE
    finally:
        b.close()


def test_queue_full_inside_the_callers_transaction(url: str) -> None:
    b = PostgresBackend(url)
    try:
        b.set_queue("q", max_depth=1)
        with psycopg.connect(postgres_or_skip()) as conn:
            b.enqueue_many([new_job(queue="q")], connection=conn)
            with pytest.raises(jobq.QueueFull, match="'q'"):
                b.enqueue_many([new_job(queue="q")], connection=conn)
            conn.commit()
        assert b.stats() == {"q": {jobq.JobState.AVAILABLE: 1}}
    finally:
        b.close()


def test_v2_jobs_survive_the_migration_to_v3() -> None:
    base = postgres_or_skip()
    schema = "jobq_t_v2_upgrade"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"CREATE TABLE {schema}.jobq_meta (key text PRIMARY KEY, value text NOT NULL)")
        for number in range(2):
            for statement in MIGRATIONS[number]:
                conn.execute(statement.replace("{s}", schema))
        conn.execute(f"INSERT INTO {schema}.jobq_meta VALUES ('schema_version', '2')")
        conn.execute(
            f"INSERT INTO {schema}.jobq_jobs (queue, task, args, kwargs, priority, eff_priority, "
            "run_at, max_attempts, state, created_at) "
            "VALUES ('default', 'old', '[1]', '{}', 0, 0, now(), 3, 'available', now())"
        )
    try:
        b = PostgresBackend(f"{base}?schema={schema}")
        assert b.schema_version() == SCHEMA_VERSION  # v3, then every later migration
        (r,) = b.claim(["default"], 5, worker_id="w", lease=timedelta(seconds=60))
        assert r.lost == 0  # migration 4's column, on a row older than it
        assert (r.task, r.args, r.depends_on, r.concurrency_key, r.secret) == (
            "old",
            [1],
            (),
            None,
            (),
        )
        assert b.record_outcomes(_complete([r])) == {r.id}
        b.close()
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


# -- races between processes (each with its own backend, as on separate machines) -------------


def _racer(url: str, what: str, n: int, barrier: Any, results: Any, log_path: str) -> None:
    """One process of a race (spawned: module level, arguments picklable)."""
    b = PostgresBackend(url)
    try:
        if what == "unique":
            for i in range(n):
                barrier.wait(WAIT)
                window = b.enqueue_many(
                    [new_job(unique_key=f"w{i}", unique_window=timedelta(hours=1))]
                )[0].id
                barrier.wait(WAIT)
                try:
                    b.enqueue_many([new_job(unique_key=f"r{i}", on_conflict="raise")])
                    raised = "created"
                except jobq.UniqueConflict:
                    raised = "refused"
                results.put((i, window, raised))
        elif what == "tick":
            start = datetime(2030, 1, 1, tzinfo=UTC)
            for i in range(n):
                barrier.wait(WAIT)
                got = b.enqueue_tick("every-minute", start + timedelta(minutes=i), new_job("cron"))
                results.put((i, got.id if got else None))
        else:  # a worker loop on limited and unlimited jobs, logging every start and end
            lease = timedelta(seconds=120)
            barrier.wait(WAIT)
            held: list[JobRecord] = []
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                fd = os.open(log_path, os.O_WRONLY | os.O_APPEND)
                try:
                    for r in held:
                        os.write(fd, f"end {r.id} {r.concurrency_key}\n".encode())
                    _, held = b.record_and_claim(
                        _complete(held), ["default"], 1 + len(held) % 3, worker_id="w", lease=lease
                    )
                    for r in held:
                        os.write(fd, f"start {r.id} {r.concurrency_key}\n".encode())
                finally:
                    os.close(fd)
                if not held:
                    if b.stats().get("default", {}).get(jobq.JobState.COMPLETED, 0) >= n:
                        break
                    time.sleep(0.005)  # the rest runs elsewhere: back off, not a sync point
            results.put(("done", os.getpid()))
    finally:
        b.close()


def _race_processes(url: str, what: str, n: int, procs: int, log_path: str = "") -> list[Any]:
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(procs)
    results = ctx.Queue()
    ps = [
        ctx.Process(target=_racer, args=(url, what, n, barrier, results, log_path))
        for _ in range(procs)
    ]
    for p in ps:
        p.start()
    out = []
    try:
        expected = procs if what == "limits" else procs * n
        for _ in range(expected):
            out.append(results.get(timeout=180))
    finally:
        for p in ps:
            p.join(60)
            if p.is_alive():  # pragma: no cover - reported by the assertion below
                p.kill()
    assert all(p.exitcode == 0 for p in ps)
    return out


@pytest.mark.slow
def test_processes_racing_on_unique_keys_create_one_job_each(url: str) -> None:
    PostgresBackend(url).close()  # migrate once, before the race
    rounds = 8
    got = _race_processes(url, "unique", rounds, procs=3)
    for i in range(rounds):
        mine = [g for g in got if g[0] == i]
        assert len({g[1] for g in mine}) == 1, f"round {i}: several jobs for one key {mine}"
        assert sorted(g[2] for g in mine) == ["created", "refused", "refused"]
    b = PostgresBackend(url)
    assert b.stats() == {"default": {jobq.JobState.AVAILABLE: 2 * rounds}}
    b.close()


@pytest.mark.slow
def test_processes_racing_on_ticks_enqueue_each_once(url: str) -> None:
    PostgresBackend(url).close()
    ticks = 10
    got = _race_processes(url, "tick", ticks, procs=3)
    for i in range(ticks):
        assert sum(1 for g in got if g[0] == i and g[1] is not None) == 1, f"tick {i}"
    b = PostgresBackend(url)
    assert b.stats() == {"default": {jobq.JobState.AVAILABLE: ticks}}
    assert b.cron_ticks() == {"every-minute": datetime(2030, 1, 1, 0, 9, tzinfo=UTC)}
    b.close()


@pytest.mark.slow
def test_concurrency_limit_holds_across_processes(url: str, tmp_path: Any) -> None:
    """Four processes work off jobs of one key limited to K=2 mixed with other jobs; the
    execution log (start written after the claim, end before the outcome) never shows more
    than K of the key at once, and every job ran exactly once."""
    b = PostgresBackend(url)
    limited = [new_job("k", concurrency_key="K", concurrency_limit=2) for _ in range(60)]
    other = [new_job("o", concurrency_key="L", concurrency_limit=1) for _ in range(10)]
    b.enqueue_many([x for pair in zip(limited, [new_job("u")] * 60, strict=True) for x in pair])
    b.enqueue_many(other)
    b.close()
    log_path = tmp_path / "exec.log"
    log_path.write_text("")
    _race_processes(url, "limits", 130, procs=4, log_path=str(log_path))
    running: dict[str, set[int]] = {"K": set(), "L": set()}
    starts: Counter[int] = Counter()
    most = {"K": 0, "L": 0}
    for line in log_path.read_text().splitlines():
        event, job_id, key = line.split()
        if key == "None":
            if event == "start":
                starts[int(job_id)] += 1
            continue
        if event == "start":
            starts[int(job_id)] += 1
            running[key].add(int(job_id))
            most[key] = max(most[key], len(running[key]))
        else:
            running[key].discard(int(job_id))
    assert most["K"] <= 2 and most["L"] <= 1
    assert most["K"] == 2  # the limit was reached, not merely respected by running one at a time
    assert len(starts) == 130 and set(starts.values()) == {1}


# -- plan reuse ----------------------------------------------------------------------------------


def _plans(b: PostgresBackend, start: str) -> tuple[int, int]:
    """(generic, custom) plan counts of the prepared statement that starts with ``start`` on
    the only claim connection."""
    with b._claims().connection() as conn:
        row = conn.execute(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements "
            "WHERE statement LIKE %s",
            (start + "%",),
        ).fetchone()
    assert row is not None, f"no statement starting {start!r} was prepared"
    return row[0], row[1]


def test_claim_plans_are_reused_and_stay_on_indexes_as_the_table_grows(url: str) -> None:
    """The hot claim statements are planned once per connection, not on every call (PostgreSQL
    reuses the plan it caches for a prepared statement once it costs no more than a fresh one;
    see postgres_sql, "Plan reuse"). The plan is made on an almost empty table and kept while
    the table grows 10,000-fold without an ANALYZE: it must still find jobs through the
    indexes, never by reading the whole table."""
    b = PostgresBackend(url + "&pool_size=1")
    lease = timedelta(seconds=60)
    try:
        b.enqueue_many([new_job() for _ in range(22)])
        for _ in range(20):  # claims alone (a worker with nothing to report)
            assert len(b.claim(["default"], 1, worker_id="w", lease=lease)) == 1
        generic, custom = _plans(b, "WITH served AS")
        assert generic >= 8 and custom <= 5, (generic, custom)
        got = b.claim(["default"], 2, worker_id="w", lease=lease)
        for _ in range(20):  # psycopg prepares on the 6th call; PostgreSQL plans 5 afresh
            b.enqueue_many([new_job() for _ in range(2)])
            done, got = b.record_and_claim(
                _complete(got), ["default"], 2, worker_id="w", lease=lease
            )
            assert len(done) == 2 and len(got) == 2
        generic, custom = _plans(b, "WITH done AS")
        assert generic >= 8 and custom <= 5, (generic, custom)

        b.enqueue_many([new_job() for _ in range(20_000)])  # COPY; no ANALYZE after it
        plans: list[str] = []
        with b._claims().connection() as conn:
            conn.execute("LOAD 'auto_explain'")
            conn.execute("SET auto_explain.log_min_duration = 0")
            conn.execute("SET client_min_messages = log")  # the plan arrives as a notice
            conn.add_notice_handler(lambda d: plans.append(d.message_primary or ""))
        done, got = b.record_and_claim(_complete(got), ["default"], 2, worker_id="w", lease=lease)
        assert len(done) == 2 and [r.id for r in got] == sorted(r.id for r in got)
        assert len(b.claim(["default"], 1, worker_id="w", lease=lease)) == 1
        assert _plans(b, "WITH done AS")[0] == generic + 1  # the cached plans ran
        for start in ("WITH done AS", "WITH served AS"):
            (plan,) = [p for p in plans if f"Query Text: {start}" in p]
            assert "Seq Scan on jobq_jobs" not in plan, plan
            assert "Index Scan using jobq_jobs_claim on jobq_jobs" in plan, plan
    finally:
        b.close()


def _sent_by(conn: psycopg.Connection[Any], action: Callable[[], None]) -> str:
    """What ``action`` made libpq exchange with the server on ``conn`` (its protocol trace)."""
    with tempfile.TemporaryFile() as trace:
        conn.pgconn.trace(trace.fileno())
        try:
            action()
        finally:
            conn.pgconn.untrace()
        trace.seek(0)
        return trace.read().decode()


def test_the_pool_check_lends_an_idle_connection_without_a_round_trip(url: str) -> None:
    """An idle connection with nothing to read passes the check without a word to the server;
    one with something to read that is still alive (here, a notification) gets the empty
    query, passes, and is lent."""
    b = PostgresBackend(url + "&pool_size=1")
    try:
        with b._pool.connection() as conn:
            pass
        assert _sent_by(conn, lambda: _check_alive(conn)) == ""
        conn.execute("LISTEN jobq_check_probe")
        with psycopg.connect(postgres_or_skip(), autocommit=True) as other:
            other.execute("NOTIFY jobq_check_probe")
        wait_for(lambda: _readable(conn.pgconn.socket), "the notification to arrive")
        assert "Query" in _sent_by(conn, lambda: _check_alive(conn))
        assert not _readable(conn.pgconn.socket)
        conn.execute("UNLISTEN *")
        with b._pool.connection() as again:
            assert again is conn
    finally:
        b.close()


def test_the_pool_check_refuses_a_terminated_connection(url: str) -> None:
    """The pools' check passes a live connection, raises for one the server terminated (its
    socket has the server's last words to read), and the pool then lends a fresh one."""
    b = PostgresBackend(url + "&pool_size=1")
    try:
        with b._pool.connection() as conn:
            _check_alive(conn)
            pid = conn.info.backend_pid
        with psycopg.connect(postgres_or_skip(), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s, 10000)", (pid,))
        with b._pool._lock:  # the pooled connection, as the next borrower would get it
            dead = b._pool._pool[0]
        assert _readable(dead.pgconn.socket)
        with pytest.raises(psycopg.OperationalError, match=r"failed its check|connection"):
            _check_alive(dead)
        (job,) = b.enqueue_many([new_job()])
        with b._pool.connection() as conn:
            assert conn.info.backend_pid != pid
        assert b.get(job.id) is not None
    finally:
        b.close()


def test_a_pool_whose_connections_the_server_ended_lends_a_fresh_one_without_pausing(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the server ended every pooled connection (a restart, a cut of every session),
    the next use tries them one after the other at once and gets a fresh connection; it never
    sleeps between tries (psycopg_pool paces failed checks 1 s, 2 s, 4 s... apart, and under
    sessions cut every few seconds a worker got no connection for minutes)."""
    import psycopg_pool.pool

    slept: list[float] = []
    monkeypatch.setattr(psycopg_pool.pool, "sleep", lambda delay: slept.append(delay))
    b = PostgresBackend(url + "&pool_size=4")
    try:
        held = [b._pool.getconn() for _ in range(3)]
        pids = {conn.info.backend_pid for conn in held}
        for conn in held:
            b._pool.putconn(conn)
        with psycopg.connect(postgres_or_skip(), autocommit=True) as admin:
            for pid in pids:  # waits for each to end
                admin.execute("SELECT pg_terminate_backend(%s, 10000)", (pid,))
        with _lend(b._pool) as conn:
            assert conn.info.backend_pid not in pids
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert slept == []
        (job,) = b.enqueue_many([new_job()])  # and the backend goes on as usual
        assert b.get(job.id) is not None
    finally:
        b.close()


def test_lend_gives_up_with_a_clear_error_when_every_try_finds_an_ended_connection(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jobq.backends import postgres

    def ended(conn: psycopg.Connection[Any]) -> None:
        raise psycopg.OperationalError("terminating connection due to administrator command")

    b = PostgresBackend(url + "&pool_size=2")
    try:
        monkeypatch.setattr(postgres, "_check_alive", ended)
        with pytest.raises(jobq.BackendError, match=r"every connection of pool 'jobq' .* 3 times"):
            b.stats()
        monkeypatch.undo()
        assert b.stats() is not None  # the pool recovers once connections pass again
    finally:
        b.close()


def test_only_claims_without_outcomes_skip_the_flush_wait(url: str) -> None:
    """A claim that records no outcomes commits with synchronous_commit off for its own
    transaction (postgres_sql, _NO_FLUSH_WAIT); enqueues, outcomes and exchanges keep the
    server's durable commit, and the setting does not outlive the claim's transaction."""
    from jobq.backends import postgres_sql as q

    no_wait = "set_config('synchronous_commit', 'off', true)"
    for name in ("CLAIM", "CLAIM_ORDERED", "CLAIM_FULL", "CLAIM_FULL_ORDERED"):
        assert no_wait in getattr(q, name), name
    for name in (
        "EXCHANGE",
        "EXCHANGE_ORDERED",
        "EXCHANGE_FULL",
        "EXCHANGE_FULL_ORDERED",
        "OUTCOMES",
        "ENQUEUE",
        "ENQUEUE_ONE",
        "ENQUEUE_ONE_PLAIN",
        "CLAIM_LIMITED",
        "HEARTBEAT",
    ):
        assert "synchronous_commit" not in getattr(q, name), name
    b = PostgresBackend(url + "&pool_size=1")
    lease = timedelta(seconds=60)
    try:
        b.enqueue_many([new_job() for _ in range(3)])
        (got,) = b.claim(["default"], 1, worker_id="w", lease=lease)
        with b._claims().connection() as conn:
            assert conn.execute("SHOW synchronous_commit").fetchone() == ("on",)
        done, more = b.record_and_claim(
            _complete([got]), ["default"], 2, worker_id="w", lease=lease
        )
        assert done == {got.id} and len(more) == 2
        assert b.get(got.id).state is jobq.JobState.COMPLETED
    finally:
        b.close()
