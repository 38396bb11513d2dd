"""Real worker processes on one SQLite file: kill -9 mid-job, several workers and producers
sharing the file, SIGTERM drain. Every job appends to an O_APPEND side log, which is reconciled
with the database afterwards."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import jobq
from tests.conftest import fresh_schema

pytestmark = pytest.mark.slow
WAIT = 60.0

APP_MODULE = textwrap.dedent("""
    import os, time
    import jobq

    app = jobq.App(os.environ["JOBQ_URL"])
    LOG = os.environ["SIDE_LOG"]

    def note(event):
        job = jobq.current_job()
        line = f"{job.id} {job.attempt} {job.record.lease_token} {os.getpid()} {event}\\n"
        fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    @app.task(name="work", max_attempts=5)
    def work(i, sleep=0.0):
        note("start")
        time.sleep(sleep)
        note("end")
        return i

    @app.task(name="block", max_attempts=5)
    def block(marker):
        note("start")
        if jobq.current_job().attempt == 1:
            open(marker, "w").close()
            time.sleep(3600)   # killed here
        note("end")
        return "survived"
""")

RUNNER = (
    "import sys, procapp; "
    "procapp.app.run_worker(threads=int(sys.argv[1]), lease=float(sys.argv[2]), "
    "grace=30, poll_interval=0.2)"
)


@pytest.fixture(params=["sqlite", "postgres"])
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    (tmp_path / "procapp.py").write_text(APP_MODULE)
    e = dict(os.environ)
    e.update(
        SIDE_LOG=str(tmp_path / "side.log"),
        PYTHONPATH=f"{tmp_path}{os.pathsep}{e.get('PYTHONPATH', '')}",
    )
    if request.param == "sqlite":
        e["JOBQ_URL"] = f"sqlite:///{tmp_path}/jobs.db"
        yield e
    else:
        with fresh_schema() as url:
            e["JOBQ_URL"] = url
            yield e


@pytest.fixture
def spawn(env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(threads: int = 4, lease: float = 2.0) -> subprocess.Popen[bytes]:
        with open(tmp_path / f"worker{len(procs)}.err", "wb") as err:
            p = subprocess.Popen(
                [sys.executable, "-c", RUNNER, str(threads), str(lease)],
                env=env,
                cwd=tmp_path,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        procs.append(p)
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(WAIT)


def wait_for(cond: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def side_log(env: dict[str, str]) -> list[tuple[int, int, str, int, str]]:
    path = Path(env["SIDE_LOG"])
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        job_id, attempt, token, pid, event = line.split()
        out.append((int(job_id), int(attempt), token, int(pid), event))
    return out


def counts(app: jobq.App) -> Counter[jobq.JobState]:
    c: Counter[jobq.JobState] = Counter()
    for per_state in app.stats().values():
        c.update(per_state)
    return c


def test_kill_9_mid_job_runs_it_again_and_loses_nothing(
    env: dict[str, str], spawn: Callable[..., subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    app = jobq.App(env["JOBQ_URL"])
    marker = tmp_path / "started"
    blocked = app.enqueue("block", args=[str(marker)])
    others = [app.enqueue("work", args=[i, 0.01]) for i in range(200)]
    first = spawn(threads=4, lease=2.0)
    wait_for(marker.exists, "the blocking job to start")
    first.send_signal(signal.SIGKILL)
    assert first.wait(WAIT) == -signal.SIGKILL
    spawn(threads=4, lease=2.0)
    wait_for(lambda: counts(app)[jobq.JobState.COMPLETED] == 201, "all jobs to complete")
    blocked.refresh()
    assert blocked.result() == "survived" and blocked.attempt == 2
    assert blocked.errors[-1].type == "WorkerLost"
    # none lost, and every job that ran twice was one the killed process had started
    log = side_log(env)
    ends = Counter(job_id for job_id, *_, event in log if event == "end")
    assert set(ends) == {blocked.id, *(j.id for j in others)}
    killed_pid = first.pid
    for job_id, n in ends.items():
        if n > 1:
            starts = [e for e in log if e[0] == job_id and e[4] == "start"]
            assert any(pid == killed_pid for *_, pid, _ in starts)
    app.close()


def test_workers_and_producers_share_one_file_without_running_an_attempt_twice(
    env: dict[str, str], spawn: Callable[..., subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    n_per_producer, producers = 1500, 2
    workers = [spawn(threads=4, lease=10.0) for _ in range(3)]
    produce = (
        "import procapp, sys\n"
        "n = int(sys.argv[1])\n"
        "for start in range(0, n, 100):\n"
        "    procapp.work.enqueue_many([(i, 0.002) for i in range(start, min(n, start + 100))])\n"
        "for i in range(50):\n"
        "    procapp.work.enqueue(i)\n"
    )
    prods = [
        subprocess.Popen(
            [sys.executable, "-c", produce, str(n_per_producer)], env=env, cwd=tmp_path
        )
        for _ in range(producers)
    ]
    for p in prods:
        assert p.wait(WAIT) == 0
    total = producers * (n_per_producer + 50)
    app = jobq.App(env["JOBQ_URL"])
    wait_for(lambda: counts(app)[jobq.JobState.COMPLETED] == total, "all jobs to complete")
    for w in workers:
        w.send_signal(signal.SIGTERM)
    for w in workers:
        assert w.wait(WAIT) == 0
    log = side_log(env)
    starts = Counter((job_id, attempt) for job_id, attempt, *_, event in log if event == "start")
    assert len(starts) == total
    assert max(starts.values()) == 1, "an attempt ran twice"
    assert {attempt for _, attempt in starts} == {1}
    assert len({pid for *_, pid, _ in log}) >= 2  # the workers really shared the file
    assert counts(app) == Counter({jobq.JobState.COMPLETED: total})
    if env["JOBQ_URL"].startswith("sqlite"):
        check = app.backend._conn().execute("PRAGMA integrity_check").fetchone()  # type: ignore[attr-defined]
        assert check == ("ok",)
    app.close()


def test_sigterm_drains_running_jobs_and_exits_0(
    env: dict[str, str], spawn: Callable[..., subprocess.Popen[bytes]]
) -> None:
    app = jobq.App(env["JOBQ_URL"])
    jobs = [app.enqueue("work", args=[i, 0.3]) for i in range(40)]
    w = spawn(threads=4, lease=10.0)
    wait_for(lambda: counts(app)[jobq.JobState.RUNNING] > 0, "jobs to start")
    w.send_signal(signal.SIGTERM)
    assert w.wait(WAIT) == 0
    c = counts(app)
    assert c[jobq.JobState.RUNNING] == 0
    assert c[jobq.JobState.COMPLETED] + c[jobq.JobState.AVAILABLE] == len(jobs)
    assert c[jobq.JobState.COMPLETED] >= 1
    # handed-back jobs did not use up an attempt
    for j in jobs:
        j.refresh()
    handed_back = [j for j in jobs if j.state is jobq.JobState.AVAILABLE]
    assert handed_back and all(j.attempt == 0 for j in handed_back)
    app.close()


def test_second_sigterm_exits_at_once_and_leases_recover(
    env: dict[str, str], spawn: Callable[..., subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    app = jobq.App(env["JOBQ_URL"])
    marker = tmp_path / "started"
    job = app.enqueue("block", args=[str(marker)])
    w = spawn(threads=1, lease=2.0)
    wait_for(marker.exists, "the blocking job to start")
    w.send_signal(signal.SIGTERM)
    err = tmp_path / "worker0.err"
    wait_for(lambda: "send again to exit" in err.read_text(), "the first signal to be handled")
    w.send_signal(signal.SIGTERM)
    assert w.wait(WAIT) == 128 + signal.SIGTERM
    spawn(threads=1, lease=2.0)
    wait_for(lambda: job.refresh().state is jobq.JobState.COMPLETED, "the job to run again")
    assert job.attempt == 2
    app.close()


SIGNAL_WHILE_LOCKED = textwrap.dedent(
    """
    import os, signal, sys, time
    import jobq
    from jobq.worker import signal_handlers

    app = jobq.App("memory://")
    worker = app.worker(threads=1)
    with signal_handlers(worker):
        # The handler runs in this thread at the next bytecode, while it holds the lock of
        # the worker's wake-up event, as the idle loop does many times a second.
        with worker._wake._cond:
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):
                pass
        deadline = time.monotonic() + 30
        while not worker._stopping.is_set():
            if time.monotonic() > deadline:
                sys.exit("the signal never stopped the worker")
            time.sleep(0.01)
    print("stopped")
    """
)


def test_a_signal_that_arrives_while_the_main_thread_holds_a_worker_lock_still_stops_it() -> None:
    # A handler that set the worker's events itself deadlocked here: an Event is a Condition
    # over a non-reentrant lock, and the handler runs on the thread that already holds it.
    proc = subprocess.run(
        [sys.executable, "-c", SIGNAL_WHILE_LOCKED], capture_output=True, text=True, timeout=WAIT
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "stopped"
    assert "received SIGTERM: finishing running jobs" in proc.stderr
