"""Flow control across real processes on one SQLite file and on PostgreSQL: what the store
promises must hold between processes, not only between threads.

* a concurrency limit K is never exceeded by 8 worker processes, checked from an execution log
  that every job appends to (not from a counter inside one process);
* a rate limit holds across processes (starts within any sliding window);
* two producer processes racing on one unique key create one job;
* a dependent never starts before each of its dependencies has ended (execution log order).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import jobq
from tests.conftest import fresh_schema

pytestmark = pytest.mark.slow
WAIT = 240.0

APP_MODULE = textwrap.dedent("""
    import os, time
    import jobq

    app = jobq.App(os.environ["JOBQ_URL"])
    LOG = os.environ["SIDE_LOG"]

    def note(event):
        job = jobq.current_job()
        line = f"{job.id} {event} {time.monotonic_ns()} {os.getpid()}\\n"
        fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    @app.task(name="limited", concurrency_limit=3)
    def limited(i):
        note("start")
        time.sleep(0.01 + (i % 3) * 0.01)
        note("end")

    @app.task(name="per_key", concurrency_limit=1,
              concurrency_key=lambda args, kwargs: f"customer:{args[0] % 2}")
    def per_key(i):
        note("start")
        time.sleep(0.005)
        note("end")

    @app.task(name="rated", rate_limit="5/s")
    def rated(i):
        note("start")
        note("end")

    @app.task(name="step")
    def step(i):
        note("start")
        time.sleep(0.002)
        note("end")
""")

RUNNER = (
    "import sys, flowapp; "
    "flowapp.app.run_worker(threads=int(sys.argv[1]), lease=10, grace=30, poll_interval=0.2)"
)


@pytest.fixture(params=["sqlite", "postgres"])
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    (tmp_path / "flowapp.py").write_text(APP_MODULE)
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
def app(env: dict[str, str]) -> Iterator[jobq.App]:
    a = jobq.App(env["JOBQ_URL"]).open()  # creates the schema before the processes start
    yield a
    a.close()


@pytest.fixture
def workers(
    env: dict[str, str], tmp_path: Path
) -> Iterator[Callable[[int, int], list[subprocess.Popen[bytes]]]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(n: int, threads: int) -> list[subprocess.Popen[bytes]]:
        for _ in range(n):
            with open(tmp_path / f"worker{len(procs)}.err", "wb") as err:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-c", RUNNER, str(threads)],
                        env=env,
                        cwd=tmp_path,
                        stdout=subprocess.DEVNULL,
                        stderr=err,
                    )
                )
        return procs

    yield start
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(60)


def wait_done(app: jobq.App, total: int) -> None:
    deadline = time.monotonic() + WAIT
    while True:
        stats = app.stats()
        done = sum(
            n for per in stats.values() for s, n in per.items() if s is jobq.JobState.COMPLETED
        )
        if done >= total:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"only {done} of {total} jobs completed: {stats}")
        time.sleep(0.1)


def read_log(env: dict[str, str]) -> list[tuple[int, str, int, int]]:
    out = []
    for line in Path(env["SIDE_LOG"]).read_text().splitlines():
        job_id, event, t, pid = line.split()
        out.append((int(job_id), event, int(t), int(pid)))
    return out


def peak_overlap(events: list[tuple[int, str, int, int]]) -> int:
    """The most jobs between their start and end lines at any instant."""
    running = peak = 0
    # at equal times, count ends first: a slot freed and taken at once is not an overlap
    for _, event, _, _ in sorted(events, key=lambda e: (e[2], e[1] == "start")):
        running += 1 if event == "start" else -1
        peak = max(peak, running)
    return peak


def test_concurrency_limit_is_never_exceeded_by_8_worker_processes(
    env: dict[str, str], app: jobq.App, workers: Callable[[int, int], list[Any]]
) -> None:
    n = 240
    # the limit travels with each job; a producer enqueuing by name states it
    jobs = [app.enqueue("limited", args=[i], concurrency_limit=3) for i in range(n)]
    assert all(j.record.concurrency_key == "task:limited" for j in jobs)
    procs = workers(8, 4)
    wait_done(app, n)
    log = read_log(env)
    assert sum(1 for e in log if e[1] == "end") == n
    assert len({e[3] for e in log}) >= 2, "the work was not spread over several processes"
    peak = peak_overlap(log)
    print(f"\nconcurrency limit 3, 8 processes x 4 threads, {n} jobs: peak overlap {peak}")
    assert 1 <= peak <= 3
    for p in procs:
        assert p.poll() is None, "a worker process died"


def test_per_key_limit_holds_for_each_key_across_processes(
    env: dict[str, str], app: jobq.App, workers: Callable[[int, int], list[Any]]
) -> None:
    n = 120
    ids = {}
    for i in range(n):
        job = app.enqueue(
            "per_key", args=[i], concurrency_key=f"customer:{i % 2}", concurrency_limit=1
        )
        ids[job.id] = i
    workers(4, 4)
    wait_done(app, n)
    log = read_log(env)
    for key in (0, 1):
        events = [e for e in log if ids[e[0]] % 2 == key]
        assert peak_overlap(events) == 1, f"customer:{key} ran two at once"


def test_rate_limit_holds_across_processes(
    env: dict[str, str], app: jobq.App, workers: Callable[[int, int], list[Any]]
) -> None:
    n = 15
    for i in range(n):
        app.enqueue("rated", args=[i], rate_limit="5/s")
    workers(3, 4)
    wait_done(app, n)
    assert sum(1 for e in read_log(env) if e[1] == "start") == n
    # claim times by the store's clock (the started_at of each job's only attempt): any
    # 6 consecutive starts span at least the 1 s window
    starts = sorted(j.started_at for j in app.list_jobs(task="rated", limit=100) if j.started_at)
    assert len(starts) == n
    for i in range(len(starts) - 5):
        assert starts[i + 5] - starts[i] >= timedelta(seconds=1), "over 5 starts in 1 s"


def test_two_producer_processes_racing_on_one_unique_key_create_one_job(
    env: dict[str, str], app: jobq.App, tmp_path: Path
) -> None:
    produce = (
        "import sys, time, flowapp\n"
        "go = float(sys.argv[1])\n"
        "time.sleep(max(0.0, go - time.time()))\n"
        "ids = set()\n"
        "for round_ in range(30):\n"
        "    job = flowapp.app.enqueue('step', args=[round_], unique_key=f'key-{round_}')\n"
        "    ids.add(job.id)\n"
        "print(' '.join(map(str, sorted(ids))))\n"
    )
    go = time.time() + 3.0  # both processes start their loops at the same moment
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", produce, str(go)],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=WAIT)[0].decode().split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outputs[0] == outputs[1], "the two producers got different jobs for one key"
    stats = app.stats()
    assert sum(stats["default"].values()) == 30


def test_dependents_never_start_before_their_dependencies_end(
    env: dict[str, str], app: jobq.App, workers: Callable[[int, int], list[Any]]
) -> None:
    # a diamond per round: a -> (b, c) -> d
    deps: dict[int, list[int]] = {}
    total = 0
    for r in range(25):
        a = app.enqueue("step", args=[r])
        b = app.enqueue("step", args=[r], depends_on=[a])
        c = app.enqueue("step", args=[r], depends_on=[a])
        d = app.enqueue("step", args=[r], depends_on=[b, c.id])
        deps[b.id], deps[c.id], deps[d.id] = [a.id], [a.id], [b.id, c.id]
        total += 4
    workers(4, 4)
    wait_done(app, total)
    log = read_log(env)
    start = {job_id: t for job_id, event, t, _ in log if event == "start"}
    end = {job_id: t for job_id, event, t, _ in log if event == "end"}
    assert len(start) == total
    for job_id, before in deps.items():
        for dep in before:
            assert start[job_id] > end[dep], f"job {job_id} started before dependency {dep} ended"
