"""SIGTERM under load: a graceful drain, then a second SIGTERM that exits at once."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.fault.checker import Deaths, reconcile
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

PROCESSES, THREADS, LEASE, GRACE = 3, 4, 5.0, 60.0


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_sigterm_drains_and_a_second_sigterm_exits_at_once(store: Store, fleet: Fleet) -> None:
    """``jobq worker --processes 3`` under load. First SIGTERM: it stops claiming, lets the
    running jobs finish, hands the rest back and exits 0 — nothing left ``running``, every
    started attempt ended, handed-back jobs kept their attempt. Then a new supervisor gets two
    SIGTERMs: it exits at once (128 + SIGTERM), killing its workers mid-job; a third one
    drains the queue. Proves: no job lost, extra runs only for the attempts cut by the second
    signal."""
    n = size(600, 6000)
    ids = enqueue_work(fleet, n, 200, seed=5)
    started = time.monotonic()
    with TerminalWatcher(store) as watcher:
        # 1. graceful drain
        sup = fleet.supervisor(PROCESSES, THREADS, LEASE, GRACE)
        wait_for(finished_reached(store, n // 10), "a tenth of the jobs to finish")
        sup.popen.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        assert sup.popen.wait(STEP_WAIT) == 0, sup.log()[-3000:]
        drain_seconds = time.monotonic() - t0
        counts = store.counts()
        assert counts.get("running", 0) == 0, counts
        assert counts.get("completed", 0) + counts.get("available", 0) == n, counts
        events = fleet.side_log()
        started_tokens = {e.token for e in events if e.kind == "start"}
        assert started_tokens == {e.token for e in events if e.kind == "end"}, (
            "a running job was cut off by a graceful stop"
        )
        handed_back = [r for r in store.rows().values() if r.state == "available"]
        assert handed_back and all(r.attempt == 0 for r in handed_back)

        # 2. a second SIGTERM exits at once; the killed workers' jobs wait for their leases
        sup = fleet.supervisor(PROCESSES, THREADS, LEASE, GRACE)
        done = store.finished()
        wait_for(finished_reached(store, done + n // 10), "the second supervisor to run jobs")
        wait_for(lambda: store.counts().get("running", 0) > 0, "jobs to be running")
        sup.popen.send_signal(signal.SIGTERM)
        wait_for(lambda: "send again" in sup.log(), "the supervisor to handle the first signal")
        sup.popen.send_signal(signal.SIGTERM)
        assert sup.popen.wait(STEP_WAIT) == 128 + signal.SIGTERM, sup.log()[-3000:]
        children = fleet.supervised_pids(sup)
        assert len(children) == PROCESSES
        wait_for(lambda: all(gone(pid) for pid in children), "its workers to be gone")
        died = time.time()
        fleet.killed.update(dict.fromkeys(children, died))
        fleet.kills += len(children)
        left_running = store.counts().get("running", 0)

        # 3. a fresh supervisor picks up everything, the cut-off jobs once their leases expire
        sup = fleet.supervisor(PROCESSES, THREADS, LEASE, GRACE)
        fleet.restarts += 1
        wait_for(finished_reached(store, n), f"all {n} jobs to finish", timeout=DRAIN_WAIT)
        sup.popen.send_signal(signal.SIGTERM)
        assert sup.popen.wait(STEP_WAIT) == 0, sup.log()[-3000:]
    assert store.counts() == {"completed": n}
    report = reconcile(
        f"SIGTERM drain [{store.kind}]",
        dict.fromkeys(ids, "completed"),
        store.rows(),
        fleet.side_log(),
        Deaths(killed=fleet.killed),
        terminal_changes=watcher.changes,
    )
    report.kills, report.restarts = fleet.kills, fleet.restarts
    report.seconds = time.monotonic() - started
    report.notes += [
        f"first_sigterm=exit 0 in {drain_seconds:.1f}s, {len(handed_back)} handed back",
        f"second_sigterm=exit {128 + signal.SIGTERM}, {left_running} running left to leases",
    ]
    record(report.line())
    report.check()
