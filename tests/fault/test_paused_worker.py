"""A worker paused (SIGSTOP) past its lease: the job runs elsewhere, and when the paused
worker wakes up (SIGCONT) its late writes change nothing."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.fault.checker import PAUSED, Deaths, reconcile
from tests.fault.faultapp import build
from tests.fault.harness import STEP_WAIT, Fleet, Proc, Store, TerminalWatcher, record, wait_for

pytestmark = pytest.mark.slow

#: The paused worker's lease; it is paused for much longer than this.
LEASE = 2.0
#: How long the paused worker's job sleeps: it ends after the other worker's run of it.
JOB_MS = 3000
#: Once another worker provably claims jobs, the expired lease must be rescued within this.
RESCUE_WAIT = 30.0
LEADER_LINE = "now the maintenance leader"


def paused_worker_run(store: Store, fleet: Fleet, tmp_path: Path, pause_leader: bool) -> None:
    """A claims job J and is paused mid-run; B, started after, must run J; A then wakes up,
    has its stale writes refused, and runs the next jobs once B is gone."""
    app = build(store.url, str(fleet.side_log_path))
    work = app.tasks["work"]
    leader: Proc | None = None
    if not pause_leader:
        # a worker on another queue takes the maintenance lead first (PostgreSQL elects one)
        leader = fleet.worker(threads=1, lease=5.0, queues="elsewhere")
        if store.kind == "postgres":
            wait_for(lambda: LEADER_LINE in leader.log(), "the idle worker to lead maintenance")
    a = fleet.worker(threads=1, lease=LEASE)
    if pause_leader:
        wait_for(lambda: LEADER_LINE in a.log(), "worker A to lead maintenance")
    marker = tmp_path / "started"
    started = time.monotonic()
    job = work.enqueue(0, JOB_MS, str(marker))
    with TerminalWatcher(store) as watcher:
        wait_for(marker.exists, "worker A to start the job")
        assert int(marker.read_text()) == a.pid
        fleet.pause(a)
        b = fleet.worker(threads=2, lease=5.0)
        probe = work.enqueue(1, 0)
        wait_for(lambda: probe.refresh().state.value == "completed", "worker B to run a job")
        wait_for(
            lambda: job.refresh().state.value == "completed",
            "the paused worker's job to be rescued and run by worker B",
            timeout=RESCUE_WAIT,
        )
        fleet.resume(a)
        first = [e for e in fleet.side_log() if e.job_id == job.id and e.attempt == 1]
        wait_for(
            lambda: any(
                e.kind == "end" and e.pid == a.pid for e in fleet.side_log() if e.job_id == job.id
            ),
            "the woken worker to finish its stale run",
        )
        wait_for(lambda: job.id in fleet.cut_off().get(a.pid, set()), "A to log its lost lease")
        # the woken worker is still a working worker: with B gone, A runs what comes next
        b.popen.send_signal(signal.SIGTERM)
        assert b.popen.wait(STEP_WAIT) == 0, b.log()[-3000:]
        after = [work.enqueue(i, 0) for i in range(2, 12)]
        wait_for(
            lambda: all(j.refresh().state.value == "completed" for j in after),
            "jobs enqueued after the pause to complete",
        )
        assert {r.result()["pid"] for r in after} == {a.pid}
    for p in [a, *([leader] if leader else [])]:
        p.popen.send_signal(signal.SIGTERM)
        assert p.popen.wait(STEP_WAIT) == 0, p.log()[-3000:]
    row = store.rows()[job.id]
    second = [e for e in fleet.side_log() if e.job_id == job.id and e.pid == b.pid]
    assert first and first[0].pid == a.pid
    assert {e.kind for e in second} == {"start", "end"}, "the job did not run on worker B"
    # the final row is the newer attempt's: its lease token, its result, no stale write
    assert row.state == "completed" and row.attempt == 2
    assert row.token == second[0].token != first[0].token
    assert row.result_value()["pid"] == b.pid
    assert row.error_types() == ["WorkerLost"]
    report = reconcile(
        f"paused worker [{store.kind}{', paused the leader' if pause_leader else ''}]",
        {j.id: "completed" for j in [job, probe, *after]},
        store.rows(),
        fleet.side_log(),
        Deaths(paused=fleet.paused, cut_off=fleet.cut_off()),
        terminal_changes=watcher.changes,
        allowed=[PAUSED],
    )
    report.seconds = time.monotonic() - started
    pause = fleet.paused[a.pid]
    report.notes.append(f"paused={pause[1] - pause[0]:.1f}s lease={LEASE:g}s")
    report.notes.append("stale write refused")
    record(report.line())
    report.check()
    assert report.extra[PAUSED] == 1 and report.overlaps_explained == 1
    app.close()


def test_paused_worker_cannot_overwrite_the_newer_attempt(
    store: Store, fleet: Fleet, tmp_path: Path
) -> None:
    """SIGSTOP a worker in the middle of a job until well past its lease, then SIGCONT it.
    Proves: another worker ran the job; the paused worker's late heartbeat and outcome were
    refused (fencing) and logged; the final row is the newer attempt's; the paused worker
    goes on working."""
    paused_worker_run(store, fleet, tmp_path, pause_leader=False)


def test_paused_maintenance_leader_does_not_stop_rescues(
    pg_store: Store, pg_fleet: Fleet, tmp_path: Path
) -> None:
    """The same, when the paused worker is the one that runs maintenance (on PostgreSQL one
    elected leader rescues expired leases). Proves that a leader that stops without dying
    (SIGSTOP, a paused VM, a process stuck in swap) does not keep every other worker from
    rescuing jobs: DESIGN §3 promises the lease of a worker that "stops" expires. (Every
    SQLite worker runs maintenance, so only PostgreSQL has a leader to pause.)"""
    paused_worker_run(pg_store, pg_fleet, tmp_path, pause_leader=True)
