"""Database faults on PostgreSQL: worker sessions terminated again and again, and a fast restart
of the server in the middle of a run. Workers must recover by themselves and lose nothing."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time

import pytest

from tests.fault.checker import CUT_OFF, Deaths, reconcile
from tests.fault.harness import (
    DRAIN_WAIT,
    STEP_WAIT,
    Fleet,
    Proc,
    Store,
    TerminalWatcher,
    finished_reached,
    record,
    size,
    wait_for,
)
from tests.fault.test_kill_storm import enqueue_work

pytestmark = pytest.mark.slow

PROCESSES, THREADS, LEASE = 4, 4, 5.0


def terminate_sessions(store: Store) -> int:
    """``pg_terminate_backend`` every session jobq opened on this store; returns how many."""
    rows = store.query(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE application_name = ? AND pid <> pg_backend_pid()",
        (store.tag,),
    )
    return int(rows[0][0])


def drain_and_stop(store: Store, fleet: Fleet, workers: list[Proc], n: int) -> None:
    wait_for(finished_reached(store, n), f"{n} jobs to finish", timeout=DRAIN_WAIT)
    for w in workers:
        assert w.alive(), f"worker {w.pid} died instead of recovering:\n{w.log()[-3000:]}"
        w.popen.send_signal(signal.SIGTERM)
    for w in workers:
        assert w.popen.wait(STEP_WAIT) == 0, w.log()[-3000:]


def test_terminated_sessions_lose_nothing(pg_store: Store, pg_fleet: Fleet) -> None:
    """Every couple of seconds, ``pg_terminate_backend`` cuts every session of the workers
    (pool, LISTEN and the maintenance leader's). Proves: no worker dies, they reconnect by
    themselves, no job is lost, and a job runs again only when its worker was cut off past
    its lease."""
    store, fleet = pg_store, pg_fleet
    n, max_ms, every = size(2000, 20_000), size(100, 200), size(1.5, 3.0)
    ids = enqueue_work(fleet, n, max_ms, seed=3)
    started = time.monotonic()
    workers = [fleet.worker(THREADS, LEASE) for _ in range(PROCESSES)]
    terminated = rounds = 0
    with TerminalWatcher(store) as watcher:
        next_cut = time.monotonic() + every
        while store.finished() < n:
            assert time.monotonic() - started < DRAIN_WAIT, f"not drained: {store.counts()}"
            if time.monotonic() >= next_cut:
                terminated += terminate_sessions(store)
                rounds += 1
                next_cut = time.monotonic() + every
            time.sleep(0.2)
        seconds = time.monotonic() - started
        drain_and_stop(store, fleet, workers, n)
    report = reconcile(
        "pg_terminate_backend storm [postgres]",
        dict.fromkeys(ids, "completed"),
        store.rows(),
        fleet.side_log(),
        Deaths(cut_off=fleet.cut_off()),
        terminal_changes=watcher.changes,
        allowed=[CUT_OFF],
    )
    report.seconds = seconds
    report.notes.append(f"cut_rounds={rounds} sessions_terminated={terminated}")
    record(report.line())
    report.check()
    assert rounds >= 3 and terminated >= 3 * PROCESSES, report.line()


def restart_command() -> str:
    """The command that restarts the test server; skips without one (fails under CI)."""
    restart = os.environ.get("JOBQ_TEST_PG_RESTART")
    if not restart:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(
                "CI=true but JOBQ_TEST_PG_RESTART (a command restarting the server) is unset"
            )
        pytest.skip("set JOBQ_TEST_PG_RESTART to a command that restarts the test server")
    return restart


#: What a worker logs when it loses the database, and when it has it back.
OUTAGE_LINES = ("unavailable", "reachable again", "lost the LISTEN connection", "listening for")


def test_server_restart_mid_run_loses_nothing(pg_store: Store, pg_fleet: Fleet) -> None:
    """A fast restart of the PostgreSQL server while workers are busy. Proves: the workers
    ride it out and reconnect by themselves, no job is lost, and every extra run is an
    attempt whose outcome could not be recorded before its lease ran out."""
    restart = restart_command()
    store, fleet = pg_store, pg_fleet
    n, max_ms = size(2000, 20_000), size(100, 200)
    ids = enqueue_work(fleet, n, max_ms, seed=4)
    started = time.monotonic()
    booted = store.query("SELECT pg_postmaster_start_time()")
    workers = [fleet.worker(THREADS, LEASE) for _ in range(PROCESSES)]
    with TerminalWatcher(store) as watcher:
        wait_for(finished_reached(store, n // 5), "a fifth of the jobs to finish")
        subprocess.run(shlex.split(restart), check=True, timeout=STEP_WAIT, capture_output=True)
        assert store.query("SELECT pg_postmaster_start_time()") != booted, "no restart happened"
        drain_and_stop(store, fleet, workers, n)
    seconds = time.monotonic() - started
    report = reconcile(
        "server restart mid-run [postgres]",
        dict.fromkeys(ids, "completed"),
        store.rows(),
        fleet.side_log(),
        Deaths(cut_off=fleet.cut_off()),
        terminal_changes=watcher.changes,
        allowed=[CUT_OFF],
    )
    noticed = sum(any(line in w.log() for line in OUTAGE_LINES) for w in workers)
    report.seconds = seconds
    report.notes.append(f"server_restarts=1 workers_that_logged_the_outage={noticed}/{PROCESSES}")
    record(report.line())
    report.check()
    assert noticed >= 1, "no worker noticed the restart"
