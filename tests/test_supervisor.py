"""``jobq worker --processes P``: the supervisor and its worker processes, as real processes.

Each test starts ``python -m jobq.cli worker supapp:app ...`` (the supervisor) in a session of
its own, with the supervisor's and its children's stderr in one file (the "supervisor log");
every job appends ``job_id attempt pid event`` to an O_APPEND side log, so the tests see which
process ran what. Tests wait on conditions with generous deadlines, never on fixed sleeps.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import jobq
from jobq.supervisor import EXIT_RECYCLE, Backoff, describe_exit, worker_command
from tests.conftest import fresh_schema

pytestmark = pytest.mark.slow
WAIT = 60.0  # generous: only reached when something is broken

#: Producer-side defaults of the test tasks (a job takes them from the task it is enqueued for).
TASK_OPTIONS: dict[str, dict[str, Any]] = {
    "work": {"max_attempts": 10},
    "block": {"max_attempts": 5},
    "poison": {"max_attempts": 3},
    "stuck": {"max_attempts": 2, "timeout": timedelta(seconds=0.5)},
    "hog": {"max_attempts": 1},
}

APP_MODULE = f"""
import datetime, os, time
import jobq

OPTIONS = {TASK_OPTIONS!r}
app = jobq.App(os.environ["JOBQ_URL"])
LOG = os.environ["SIDE_LOG"]
HOG = []  # memory the "hog" task keeps for the rest of the process's life


def note(event):
    job = jobq.current_job()
    line = f"{{job.id}} {{job.attempt}} {{os.getpid()}} {{event}}\\n"
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


@app.task(name="work", **OPTIONS["work"])
def work(sleep=0.0):
    note("start")
    time.sleep(sleep)
    note("end")


@app.task(name="block", **OPTIONS["block"])
def block(marker):
    note("start")
    if jobq.current_job().attempt == 1:
        open(marker, "w").close()
        time.sleep(3600)  # killed here
    note("end")
    return "survived"


@app.task(name="poison", **OPTIONS["poison"])
def poison():
    note("start")
    os._exit(1)  # takes its whole process down, every attempt


@app.task(name="stuck", retry=jobq.FixedDelay(datetime.timedelta(0)), **OPTIONS["stuck"])
def stuck():
    note("start")
    time.sleep(3600)  # past its timeout, in a thread that cannot be interrupted


@app.task(name="hog", **OPTIONS["hog"])
def hog():
    note("start")
    HOG.append(b"x" * (60 * 2**20))  # written, so resident
    note("end")
"""

STARTED_RE = re.compile(r"worker process \d+ started \(pid (\d+)\)")


def wait_for(cond: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def gone(pid: int) -> bool:
    """The process has exited (a zombie counts: it runs nothing)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] == "Z"
    except FileNotFoundError:
        return True


class Supervisor:
    """A ``jobq worker`` supervisor process under test."""

    def __init__(self, tmp_path: Path, env: dict[str, str], args: tuple[str, ...]) -> None:
        self.log_path = tmp_path / "supervisor.log"
        with open(self.log_path, "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "jobq.cli", "worker", "supapp:app", *args],
                cwd=tmp_path,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,  # signals to its process group reach nothing else
            )

    def log(self) -> str:
        return self.log_path.read_text()

    def count(self, text: str) -> int:
        return sum(text in line for line in self.log().splitlines())

    def child_pids(self) -> list[int]:
        """Every child started so far, in order."""
        return [int(m) for m in STARTED_RE.findall(self.log())]

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = WAIT) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the supervisor did not exit; its log:\n{self.log()}") from None

    def close(self) -> None:
        """Stop it if it still runs: SIGTERM, and once handled a second one (which kills the
        children); SIGKILL as the last resort."""
        if self.proc.poll() is None:
            handled = self.count("received SIGTERM: stopping")
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(AssertionError):
                wait_for(
                    lambda: (
                        self.count("received SIGTERM: stopping") > handled
                        or self.proc.poll() is not None
                    ),
                    "the supervisor to take the signal",
                    timeout=10,
                )
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(WAIT)


class Harness:
    """The store, the producer app, the side log, and the supervisors of one test."""

    def __init__(self, tmp_path: Path, url: str) -> None:
        self.tmp_path = tmp_path
        self.url = url
        (tmp_path / "supapp.py").write_text(APP_MODULE)
        self.env = dict(os.environ)
        self.env.update(
            JOBQ_URL=url,
            SIDE_LOG=str(tmp_path / "side.log"),
            PYTHONPATH=os.pathsep.join(
                [str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])]
            ),
        )
        self.app = jobq.App(url)
        self.tasks: dict[str, jobq.Task[..., Any]] = {}
        for name, options in TASK_OPTIONS.items():
            # producer-side stand-ins: enqueueing takes the task's defaults from them
            self.tasks[name] = self.app.task(name=name, **options)(_runs_in_a_worker)
        self.supervisors: list[Supervisor] = []

    def start(self, *args: str) -> Supervisor:
        s = Supervisor(self.tmp_path, self.env, args)
        self.supervisors.append(s)
        return s

    def enqueue(self, name: str, calls: list[tuple[Any, ...]]) -> list[jobq.Job]:
        return self.tasks[name].enqueue_many(calls)

    def counts(self) -> Counter[jobq.JobState]:
        c: Counter[jobq.JobState] = Counter()
        for per_state in self.app.stats().values():
            c.update(per_state)
        return c

    def side_log(self) -> list[tuple[int, int, int, str]]:
        """``(job_id, attempt, pid, event)`` per line the jobs wrote."""
        path = self.tmp_path / "side.log"
        if not path.exists():
            return []
        out = []
        for line in path.read_text().splitlines():
            job_id, attempt, pid, event = line.split()
            out.append((int(job_id), int(attempt), int(pid), event))
        return out

    def pids_of(self, job_id: int, attempt: int | None = None) -> set[int]:
        return {
            pid
            for j, a, pid, event in self.side_log()
            if j == job_id and event == "start" and attempt in (None, a)
        }

    def close(self) -> None:
        for s in self.supervisors:
            s.close()
        self.app.close()


def _runs_in_a_worker(*args: Any, **kwargs: Any) -> None:
    raise AssertionError("only the worker processes run jobs")


@pytest.fixture(params=["sqlite", "postgres"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    if request.param == "sqlite":
        h = Harness(tmp_path, f"sqlite:///{tmp_path}/jobs.db")
        try:
            yield h
        finally:
            h.close()
    else:
        with fresh_schema() as url:
            h = Harness(tmp_path, url)
            try:
                yield h
            finally:
                h.close()


@pytest.fixture
def sqlite(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path, f"sqlite:///{tmp_path}/jobs.db")
    try:
        yield h
    finally:
        h.close()


# -- the pieces ----------------------------------------------------------------------------------


def test_backoff_doubles_up_to_the_cap_and_resets_after_a_long_run() -> None:
    b = Backoff()
    delays = [0.0]
    for _ in range(8):
        delays.append(b.next_delay(delays[-1], uptime=1.0))
    assert delays[1:] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert b.next_delay(30.0, uptime=60.0) == 0.5  # it stayed up a minute: start again


def test_exit_descriptions_and_child_command() -> None:
    assert describe_exit(-signal.SIGKILL) == "was killed by SIGKILL"
    assert describe_exit(EXIT_RECYCLE) == "recycled itself (exit code 3)"
    assert describe_exit(1) == "exited with code 1"
    assert worker_command("m:app", ["--threads=2"]) == [
        sys.executable,
        "-m",
        "jobq.cli",
        "worker",
        "m:app",
        "--child",
        "--threads=2",
    ]


def test_a_memory_limit_below_a_fresh_process_is_refused_at_once(sqlite: Harness) -> None:
    s = sqlite.start("--max-memory-per-process", "1")
    assert s.wait() == 2
    errors = [line for line in s.log().splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("jobq: error: --max-memory-per-process 1")
    assert "Traceback" not in s.log()
    assert not s.child_pids()


# -- restarts ------------------------------------------------------------------------------------


def test_a_killed_child_is_restarted_and_its_jobs_run_again(any_store: Harness) -> None:
    h = any_store
    marker = h.tmp_path / "started"
    [blocked] = h.enqueue("block", [(str(marker),)])
    others = h.enqueue("work", [(0.01,)] * 50)
    s = h.start("--processes", "2", "--threads", "2", "--lease", "1")
    wait_for(marker.exists, "the blocking job to start")
    [victim] = h.pids_of(blocked.id, attempt=1)
    assert victim in s.child_pids()
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: s.count(f"(pid {victim}) was killed by SIGKILL") == 1, "the crash logged")
    wait_for(lambda: len(s.child_pids()) == 3, "a new child in its place")
    wait_for(lambda: blocked.refresh().state is jobq.JobState.COMPLETED, "the job to run again")
    assert blocked.attempt == 2 and blocked.errors[-1].type == "WorkerLost"
    assert victim not in h.pids_of(blocked.id, attempt=2)
    wait_for(lambda: h.counts()[jobq.JobState.COMPLETED] == 1 + len(others), "the other jobs")
    s.signal(signal.SIGTERM)
    assert s.wait() == 0
    assert "restarting it in 0.5s" in s.log()


def test_a_poison_job_ends_dead_and_the_other_jobs_complete(sqlite: Harness) -> None:
    h = sqlite
    [poison] = h.enqueue("poison", [()])
    h.enqueue("work", [()] * 1000)
    s = h.start("--processes", "2", "--threads", "4", "--lease", "1")
    wait_for(lambda: poison.refresh().state is jobq.JobState.DEAD, "the poison job to be dead")
    wait_for(lambda: h.counts()[jobq.JobState.COMPLETED] == 1000, "the other jobs to complete")
    assert poison.attempt == 3
    assert [e.type for e in poison.errors] == ["WorkerLost"] * 3
    assert poison.errors[-1].message.startswith("worker lost 3 times")
    assert len(h.pids_of(poison.id)) == 3  # each attempt took a process down
    assert s.count("exited with code 1 after") == 3
    assert h.counts() == Counter({jobq.JobState.COMPLETED: 1000, jobq.JobState.DEAD: 1})
    s.signal(signal.SIGTERM)
    assert s.wait() == 0


# -- recycling -----------------------------------------------------------------------------------


def test_a_thread_stuck_past_its_timeout_recycles_its_process(sqlite: Harness) -> None:
    h = sqlite
    [stuck] = h.enqueue("stuck", [()])
    s = h.start("--processes", "1", "--threads", "2", "--grace", "1")
    wait_for(lambda: bool(h.pids_of(stuck.id, attempt=1)), "the stuck job to start")
    [first] = h.pids_of(stuck.id, attempt=1)
    wait_for(lambda: s.count(f"(pid {first}) recycled itself (exit code 3)") == 1, "a recycle")
    assert "is still stuck in a timed-out job" in s.log()
    wait_for(lambda: stuck.refresh().state is jobq.JobState.DEAD, "the job to be dead")
    assert stuck.attempt == 2  # retried once by its policy, then dead
    assert [e.type for e in stuck.errors] == ["Timeout", "Timeout"]
    others = h.enqueue("work", [()] * 20)
    wait_for(lambda: h.counts()[jobq.JobState.COMPLETED] == len(others), "the other jobs")
    ran_others = {pid for o in others for pid in h.pids_of(o.id)}
    assert ran_others and first not in ran_others
    assert len(s.child_pids()) >= 2
    s.signal(signal.SIGTERM)
    assert s.wait() == 0


def test_a_child_over_its_memory_limit_is_recycled(sqlite: Harness) -> None:
    h = sqlite
    [hog] = h.enqueue("hog", [()])
    s = h.start("--processes", "1", "--threads", "2", "--max-memory-per-process", "40")
    wait_for(lambda: hog.refresh().state is jobq.JobState.COMPLETED, "the hog to run")
    [hog_pid] = h.pids_of(hog.id)
    wait_for(lambda: s.count(f"(pid {hog_pid}) recycled itself (exit code 3)") == 1, "a recycle")
    assert "(max_memory_mb=40)" in s.log()
    others = h.enqueue("work", [()] * 20)
    wait_for(lambda: h.counts()[jobq.JobState.COMPLETED] == 1 + len(others), "the other jobs")
    ran_others = {pid for o in others for pid in h.pids_of(o.id)}
    assert ran_others and hog_pid not in ran_others
    assert s.count("recycled itself") == 1  # the fresh process stays under the limit
    s.signal(signal.SIGTERM)
    assert s.wait() == 0


def test_max_jobs_per_process_recycles_children(sqlite: Harness) -> None:
    h = sqlite
    jobs = h.enqueue("work", [()] * 200)
    s = h.start("--processes", "2", "--threads", "2", "--max-jobs-per-process", "50", "--burst")
    assert s.wait() == 0  # --burst: every child ended finding the queues empty
    assert h.counts() == Counter({jobq.JobState.COMPLETED: len(jobs)})
    ends = Counter(pid for *_, pid, event in h.side_log() if event == "end")
    assert sum(ends.values()) == len(jobs)
    assert len(ends) >= 4, ends
    assert s.count("recycled itself (exit code 3); starting a new one") >= 2
    assert "all worker processes finished" in s.log()


# -- signals -------------------------------------------------------------------------------------


def test_sigterm_under_load_drains_and_exits_0(any_store: Harness) -> None:
    h = any_store
    jobs = h.enqueue("work", [(0.05,)] * 200)
    grace = 20.0
    s = h.start("--processes", "2", "--threads", "4", "--grace", str(grace))
    wait_for(lambda: h.counts()[jobq.JobState.COMPLETED] >= 20, "jobs to run")
    started = time.monotonic()
    s.signal(signal.SIGTERM)
    assert s.wait() == 0, s.log()
    assert time.monotonic() - started < grace
    c = h.counts()
    assert c[jobq.JobState.RUNNING] == 0
    assert c[jobq.JobState.COMPLETED] + c[jobq.JobState.AVAILABLE] == len(jobs)
    for j in jobs:
        if j.refresh().state is jobq.JobState.AVAILABLE:
            assert j.attempt == 0  # handed back without using an attempt
    assert s.count("received SIGTERM: stopping") == 1
    assert "killed" not in s.log()


def test_ctrl_c_reaches_only_the_supervisor_which_forwards_sigterm(sqlite: Harness) -> None:
    s = sqlite.start("--processes", "2", "--threads", "1")
    # each child logs this once its signal handlers are in place
    wait_for(lambda: s.count("starting: queues=") == 2, "both workers to start")
    os.killpg(s.proc.pid, signal.SIGINT)  # what a terminal does on Ctrl-C
    assert s.wait() == 0, s.log()
    assert s.count("received SIGINT") == 1  # the supervisor's; the children are not in its group
    assert s.count("asked by the supervisor to stop") == 2  # passed on to each child


def test_sigterm_to_every_process_at_once_still_drains(sqlite: Harness) -> None:
    """systemd's default KillMode signals the supervisor and every child together: the
    children get SIGTERM and the supervisor's stop signal, and must still drain, not die."""
    h = sqlite
    jobs = h.enqueue("work", [(0.3,)] * 8)
    s = h.start("--processes", "2", "--threads", "2", "--grace", "20")
    wait_for(lambda: s.count("starting: queues=") == 2, "both workers to start")
    wait_for(lambda: h.counts()[jobq.JobState.RUNNING] > 0, "jobs to run")
    s.signal(signal.SIGTERM)
    for pid in s.child_pids():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    assert s.wait() == 0, s.log()
    assert "exiting now" not in s.log()  # no child took it for a second signal
    c = h.counts()
    assert c[jobq.JobState.RUNNING] == 0
    assert c[jobq.JobState.COMPLETED] + c[jobq.JobState.AVAILABLE] == len(jobs)
    assert c[jobq.JobState.COMPLETED] >= 1


def test_a_second_sigterm_kills_the_children_and_exits_at_once(sqlite: Harness) -> None:
    h = sqlite
    marker = h.tmp_path / "started"
    [blocked] = h.enqueue("block", [(str(marker),)])
    s = h.start("--processes", "1", "--threads", "1")
    wait_for(marker.exists, "the blocking job to start")
    [child] = h.pids_of(blocked.id)
    s.signal(signal.SIGTERM)
    wait_for(lambda: "received SIGTERM: stopping" in s.log(), "the first signal to be handled")
    assert s.proc.poll() is None  # waiting for the running job
    started = time.monotonic()
    s.signal(signal.SIGTERM)
    assert s.wait() == 128 + signal.SIGTERM
    assert time.monotonic() - started < 10
    wait_for(lambda: gone(child), "the child to be gone")
    assert blocked.refresh().state is jobq.JobState.RUNNING  # its lease will expire


def test_children_stop_by_themselves_when_the_supervisor_is_killed(sqlite: Harness) -> None:
    s = sqlite.start("--processes", "2", "--threads", "1")
    wait_for(lambda: s.count("starting: queues=") == 2, "both workers to start")
    children = s.child_pids()
    s.proc.kill()
    assert s.wait() == -signal.SIGKILL
    wait_for(lambda: all(gone(pid) for pid in children), "the orphaned children to exit")
    assert s.count("the supervisor that started this process is gone") == 2
    assert s.count("exit_reason='stopped'") == 2  # a graceful stop, not a crash
