"""A poison job: one that kills the process running it, on every attempt."""

from __future__ import annotations

import re
import signal
import time

import pytest

from tests.fault.checker import Deaths, Report, reconcile
from tests.fault.faultapp import POISON_ATTEMPTS, WORK_ATTEMPTS, build
from tests.fault.harness import (
    DRAIN_WAIT,
    STEP_WAIT,
    Fleet,
    Store,
    TerminalWatcher,
    finished_reached,
    record,
    size,
    wait_for,
)
from tests.fault.test_kill_storm import enqueue_work

pytestmark = pytest.mark.slow

#: jobq's default max_attempts, which the poison job has too.
DEFAULT_ATTEMPTS = 3


def poison_run(store: Store, fleet: Fleet, good_attempts: int) -> Report:
    """One poison job in the middle of many good ones (with ``good_attempts`` each), under
    ``jobq worker --processes 2``; drains, checks the poison's end, returns the report."""
    n = size(500, 10_000)
    first = enqueue_work(fleet, n // 2, 20, seed=6, max_attempts=good_attempts)
    app = build(store.url, str(fleet.side_log_path))
    poison = app.tasks["poison"].enqueue()
    app.close()
    ids = first + enqueue_work(fleet, n - n // 2, 20, seed=7, max_attempts=good_attempts)
    started = time.monotonic()
    with TerminalWatcher(store) as watcher:
        sup = fleet.supervisor(processes=2, threads=4, lease=3.0)
        wait_for(finished_reached(store, n + 1), "every job to finish", timeout=DRAIN_WAIT)
        seconds = time.monotonic() - started
        sup.popen.send_signal(signal.SIGTERM)
        assert sup.popen.wait(STEP_WAIT) == 0, sup.log()[-3000:]
    events = fleet.side_log()
    # the processes the poison took down; each died after the last line it wrote
    crashed = {e.pid for e in events if e.job_id == poison.id and e.kind == "start"}
    crashes = {pid: max(e.at for e in events if e.pid == pid) for pid in crashed}
    row = store.rows()[poison.id]
    assert row.state == "dead" and row.attempt == POISON_ATTEMPTS
    assert len(crashes) == POISON_ATTEMPTS
    assert row.error_types() == ["WorkerLost"] * POISON_ATTEMPTS
    assert "may be killing the process" in row.error_messages()[-1]
    restarts = len(re.findall(r"restarting it in", sup.log()))
    assert restarts >= POISON_ATTEMPTS, sup.log()[-3000:]
    report = reconcile(
        f"poison job [{store.kind}, good jobs max_attempts={good_attempts}]",
        {**dict.fromkeys(ids, "completed"), poison.id: "dead"},
        store.rows(),
        events,
        Deaths(killed=crashes),
        terminal_changes=watcher.changes,
        runs_expected={poison.id: POISON_ATTEMPTS},
    )
    report.kills, report.restarts, report.seconds = len(crashes), restarts, seconds
    report.notes.append(f"poison=dead after {row.attempt} attempts")
    record(report.line())
    return report


def test_poison_job_ends_dead_and_good_jobs_complete(store: Store, fleet: Fleet) -> None:
    """One job that SIGKILLs its own process on every attempt, among many good ones. Proves:
    it takes down exactly ``max_attempts`` processes, then ends ``dead`` with a message saying
    it may be killing its worker; the supervisor restarts every crashed process; every good
    job completes, and ran again only when the poison took its process down with it. (The
    good jobs have attempts to spare here; see the next test for jobq's default.)"""
    poison_run(store, fleet, good_attempts=WORK_ATTEMPTS).check()


def test_poison_job_does_not_take_good_jobs_with_it(store: Store, fleet: Fleet) -> None:
    """The same with jobq's default ``max_attempts=3`` for every job. Proves that a good job
    is not declared dead ("may be killing the process") because it kept being claimed in the
    same batch as the poison job: a rescued job's ``lost`` count makes workers claim at most
    one lost job at a time, so the poison job takes a batch-mate down at most once."""
    poison_run(store, fleet, good_attempts=DEFAULT_ATTEMPTS).check()
