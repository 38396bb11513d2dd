"""kill -9 storm: worker processes SIGKILLed in the middle of their jobs, over and over."""

from __future__ import annotations

import random
import signal
import time

import pytest

from tests.fault.checker import Deaths, reconcile
from tests.fault.faultapp import build
from tests.fault.harness import (
    DRAIN_WAIT,
    STEP_WAIT,
    Fleet,
    Store,
    TerminalWatcher,
    record,
    size,
)

pytestmark = pytest.mark.slow


def enqueue_work(
    fleet: Fleet, n: int, max_ms: int, seed: int, max_attempts: int | None = None
) -> list[int]:
    """``n`` jobs of 0..max_ms milliseconds each, in batches; returns their ids."""
    rng = random.Random(seed)
    app = build(fleet.store.url, str(fleet.side_log_path))
    work = app.tasks["work"].options(max_attempts=max_attempts)
    ids: list[int] = []
    try:
        for first in range(0, n, 1000):
            calls = [(i, rng.randint(0, max_ms)) for i in range(first, min(n, first + 1000))]
            ids += [job.id for job in work.enqueue_many(calls)]
    finally:
        app.close()
    return ids


def test_kill_9_storm_loses_nothing(store: Store, fleet: Fleet) -> None:
    """4 worker processes; every 2 s two of them are SIGKILLed and started again, until every
    job has finished. Proves: no job lost, every extra run belongs to an attempt whose process
    was killed, no two attempts of a job ran at once, and no finished job changed afterwards."""
    n, max_ms = size(2000, 20_000), size(50, 200)
    processes, threads, lease, every = 4, 4, 5.0, 2.0
    ids = enqueue_work(fleet, n, max_ms, seed=1)
    rng = random.Random(2)
    started = time.monotonic()
    workers = [fleet.worker(threads, lease) for _ in range(processes)]
    with TerminalWatcher(store) as watcher:
        next_kill = time.monotonic() + every
        while store.finished() < n:
            assert time.monotonic() - started < DRAIN_WAIT, (
                f"not drained: {store.counts()}\n{fleet.logs()}"
            )
            if time.monotonic() >= next_kill:
                for slot in rng.sample(range(processes), 2):
                    fleet.kill(workers[slot])
                    workers[slot] = fleet.worker(threads, lease)
                    fleet.restarts += 1
                next_kill = time.monotonic() + every
            time.sleep(0.2)
    seconds = time.monotonic() - started
    for w in workers:
        w.popen.send_signal(signal.SIGTERM)
    for w in workers:
        assert w.popen.wait(STEP_WAIT) == 0, w.log()[-3000:]
    report = reconcile(
        f"kill -9 storm [{store.kind}]",
        dict.fromkeys(ids, "completed"),
        store.rows(),
        fleet.side_log(),
        Deaths(killed=fleet.killed),
        terminal_changes=watcher.changes,
    )
    report.kills, report.restarts, report.seconds = fleet.kills, fleet.restarts, seconds
    record(report.line())
    report.check()
    assert fleet.kills >= 4, f"the storm was too short to mean much: {report.line()}"
