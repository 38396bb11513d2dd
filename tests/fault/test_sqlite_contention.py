"""SQLite contention: producers and workers in many processes hammering one file."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from pathlib import Path

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

pytestmark = pytest.mark.slow

#: The WAL file must stay bounded: SQLite checkpoints it every 1000 pages (about 4 MB); this
#: allows for checkpoints that cannot finish at once, but not for a WAL that grows with the
#: number of jobs.
WAL_LIMIT = 64 * 2**20

PRODUCER = """
import os, random, sys, time
from tests.fault.faultapp import build

app = build(os.environ["JOBQ_URL"], os.environ["JOBQ_FAULT_SIDE_LOG"])
work = app.tasks["work"]
n, seed, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
rng = random.Random(seed)
ids = []
i = 0
while i < n:
    if rng.random() < 0.5:                       # one job per call: one commit each
        ids.append(work.enqueue(i, rng.randint(0, 5)).id)
        i += 1
    else:                                        # a batch in one transaction
        k = min(n - i, rng.randint(2, 50))
        ids += [j.id for j in work.enqueue_many([(i + d, rng.randint(0, 5)) for d in range(k)])]
        i += k
    if rng.random() < 0.1:                       # readers too
        app.stats()
        app.get_job(ids[-1])
with open(out + ".tmp", "w") as f:
    f.write("\\n".join(map(str, ids)))
os.replace(out + ".tmp", out)
"""


class WalWatcher:
    """Samples the size of the WAL file while the test runs."""

    def __init__(self, db: Path) -> None:
        self.wal = Path(f"{db}-wal")
        self.largest = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> WalWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(STEP_WAIT)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            with contextlib.suppress(FileNotFoundError):
                self.largest = max(self.largest, self.wal.stat().st_size)


def test_producers_and_workers_share_one_file(tmp_path: Path) -> None:
    """4 producer and 4 worker processes on one SQLite file. Proves: no "database is locked"
    (or any other error) reaches user code in any process, every job runs exactly once, the
    file passes ``PRAGMA integrity_check``, and the WAL file stays bounded."""
    db = tmp_path / "jobs.db"
    store = Store("sqlite", f"sqlite:///{db}", path=db)
    fleet = Fleet(store, tmp_path)
    try:
        run_contention(store, fleet, tmp_path)
    finally:
        fleet.stop_all()


def run_contention(store: Store, fleet: Fleet, tmp_path: Path) -> None:
    per_producer, producers, processes = size(1500, 10_000), 4, 4
    n = per_producer * producers
    started = time.monotonic()
    with TerminalWatcher(store) as watcher, WalWatcher(store.path or tmp_path) as wal:
        workers = [fleet.worker(threads=4, lease=10.0) for _ in range(processes)]
        outs = [tmp_path / f"ids-{k}.txt" for k in range(producers)]
        prods = [
            fleet.python(PRODUCER, "producer", str(per_producer), str(k), str(outs[k]))
            for k in range(producers)
        ]
        for p in prods:
            assert p.popen.wait(DRAIN_WAIT) == 0, p.log()[-3000:]
        wait_for(finished_reached(store, n), f"{n} jobs to finish", timeout=DRAIN_WAIT)
        seconds = time.monotonic() - started
        for w in workers:
            w.popen.send_signal(signal.SIGTERM)
        for w in workers:
            assert w.popen.wait(STEP_WAIT) == 0, w.log()[-3000:]
    ids = [int(x) for out in outs for x in out.read_text().split()]
    assert len(ids) == len(set(ids)) == n
    for p in fleet.procs:
        text = p.log().lower()
        assert "locked" not in text and "traceback" not in text, f"{p.role} {p.pid}:\n{text}"
    assert store.query("PRAGMA integrity_check") == [("ok",)]
    report = reconcile(
        "SQLite contention [sqlite]",
        dict.fromkeys(ids, "completed"),
        store.rows(),
        fleet.side_log(),
        Deaths(),
        terminal_changes=watcher.changes,
        allowed=[],
    )
    report.seconds = seconds
    report.notes += [
        f"producers={producers} workers={processes}",
        "locked_errors=0 integrity=ok",
        f"wal_max={wal.largest / 2**20:.1f}MiB",
    ]
    record(report.line())
    report.check()
    assert report.extra_runs == 0
    assert wal.largest <= WAL_LIMIT, f"the WAL grew to {wal.largest:,} bytes"
