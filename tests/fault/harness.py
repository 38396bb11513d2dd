"""The fault battery's harness: the job store read raw, real worker processes that can be
killed, paused and restarted, the side log they write, and a watcher of finished jobs.

Sizes: every test has a CI size (small, minutes for the whole battery) and the issue's full
size, chosen by ``JOBQ_SOAK=1`` (what ``make soak`` sets).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tests.fault.faultapp import SIDE_LOG_ENV

T = TypeVar("T")

SOAK = os.environ.get("JOBQ_SOAK", "").lower() not in ("", "0", "false", "no")
#: Deadline of a whole drain; generous, the machine may be loaded.
DRAIN_WAIT = 900.0 if SOAK else 240.0
#: Deadline of one step (a process starting, a job starting, a lease running out).
STEP_WAIT = 120.0
REPO = Path(__file__).resolve().parents[2]
TERMINAL = ("completed", "dead", "cancelled", "expired")


def size(ci: T, soak: T) -> T:
    """The CI size, or the full size under ``JOBQ_SOAK=1``."""
    return soak if SOAK else ci


def wait_for(cond: Callable[[], bool], what: str, timeout: float = STEP_WAIT) -> float:
    """Poll ``cond`` until true; returns the seconds waited. Fails after ``timeout``."""
    started = time.monotonic()
    while not cond():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - started


# -- the job store, read raw -------------------------------------------------------------------


@dataclass(frozen=True)
class Store:
    """One job store under test. ``url`` is what jobq opens; ``tag`` is the PostgreSQL
    application_name of every connection jobq makes to it (so a test can cut exactly those)."""

    kind: str  # "sqlite" or "postgres"
    url: str
    path: Path | None = None
    base: str | None = None  # PostgreSQL: the server URL, without jobq's options
    schema: str | None = None
    tag: str = ""

    def _connect(self) -> Any:
        if self.kind == "sqlite":
            assert self.path is not None
            lite = sqlite3.connect(self.path, isolation_level=None, timeout=60)
            lite.execute("PRAGMA busy_timeout = 60000")
            return lite
        import psycopg

        assert self.base is not None and self.schema is not None
        pg = psycopg.connect(self.base, autocommit=True, connect_timeout=10)
        pg.execute(f"SET search_path TO {self.schema}")
        return pg

    @contextlib.contextmanager
    def connection(self) -> Iterator[Any]:
        conn = self._connect()
        try:
            yield conn
        finally:
            conn.close()

    def sql(self, text: str) -> str:
        """``?`` placeholders in this store's parameter style."""
        return text if self.kind == "sqlite" else text.replace("?", "%s")

    def query(self, text: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement on a connection of its own; returns its rows. A connection cut
        by the server (a restart, ``pg_terminate_backend``) is retried for a while: every
        statement the tests run this way is a read or an idempotent update."""
        give_up = time.monotonic() + STEP_WAIT
        while True:
            try:
                with self.connection() as conn:
                    cur = conn.execute(self.sql(text), tuple(params))
                    return list(cur.fetchall()) if cur.description else []
            except Exception as exc:
                if not self._transient(exc) or time.monotonic() > give_up:
                    raise
                time.sleep(0.2)

    def _transient(self, exc: Exception) -> bool:
        if self.kind == "sqlite":
            return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)
        import psycopg

        return isinstance(exc, psycopg.OperationalError)

    def execute(self, text: str, params: Sequence[Any] = ()) -> None:
        self.query(text, params)

    def counts(self) -> dict[str, int]:
        return dict(self.query("SELECT state, count(*) FROM jobq_jobs GROUP BY state"))

    def finished(self) -> int:
        rows = self.query(
            f"SELECT count(*) FROM jobq_jobs WHERE state IN ({','.join(map(repr, TERMINAL))})"
        )
        return int(rows[0][0])

    def rows(self) -> dict[int, Row]:
        """Every job's final row."""
        errors = "errors" if self.kind == "sqlite" else "errors::text"
        out: dict[int, Row] = {}
        for r in self.query(
            f"SELECT id, task, state, attempt, max_attempts, lease_token, result, {errors} "
            "FROM jobq_jobs"
        ):
            out[r[0]] = Row(*r)
        return out


@dataclass(frozen=True)
class Row:
    id: int
    task: str
    state: str
    attempt: int
    max_attempts: int
    token: str | None
    result: str | None
    errors: str

    def result_value(self) -> Any:
        return None if self.result is None else json.loads(self.result)

    def error_types(self) -> list[str]:
        return [e.get("type") for e in json.loads(self.errors)]

    def error_messages(self) -> list[str]:
        return [e.get("message") for e in json.loads(self.errors)]


def finished_reached(store: Store, n: int) -> Callable[[], bool]:
    """A condition for :func:`wait_for`: at least ``n`` jobs finished (tolerates the store
    being unreachable for a moment)."""

    def cond() -> bool:
        try:
            return store.finished() >= n
        except Exception:
            return False

    return cond


# -- the side log ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    job_id: int
    attempt: int
    token: str
    pid: int
    kind: str  # "start" or "end"
    at: float  # wall clock (time.time()), shared by every process of this host


def read_side_log(path: Path) -> list[Event]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        job_id, attempt, token, pid, kind, at = line.split()
        out.append(Event(int(job_id), int(attempt), token, int(pid), kind, float(at)))
    return out


# -- processes ---------------------------------------------------------------------------------

#: A worker's log line saying it lost a job's lease (or that its outcome was refused).
_LOST = re.compile(
    r"pid=(\d+) [^\n]*?\bjob (\d+)\b[^\n]*?"
    r"(?:lease lost|lease is gone|lease was lost|no longer held|not recorded)"
)
_SUP_STARTED = re.compile(r"worker process \d+ started \(pid (\d+)\)")


@dataclass
class Proc:
    popen: subprocess.Popen[bytes]
    stderr: Path
    role: str
    started: float = field(default_factory=time.time)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        return self.stderr.read_text(errors="replace") if self.stderr.exists() else ""


class Fleet:
    """Worker, supervisor and producer processes on one store, and what was done to them.

    ``killed`` maps a pid to when it died abnormally (SIGKILL, exit at once on a second signal,
    a crash); ``paused`` maps a pid to the window it spent stopped (SIGSTOP..SIGCONT).
    """

    def __init__(self, store: Store, workdir: Path) -> None:
        self.store = store
        self.workdir = workdir
        self.side_log_path = workdir / "side.log"
        self.env = dict(os.environ)
        self.env.update(
            JOBQ_URL=store.url,
            PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
            PYTHONUNBUFFERED="1",
        )
        self.env[SIDE_LOG_ENV] = str(self.side_log_path)
        self.env.pop("JOBQ_SOAK", None)
        self.procs: list[Proc] = []
        self.killed: dict[int, float] = {}
        self.paused: dict[int, tuple[float, float]] = {}
        self.kills = 0
        self.restarts = 0

    def _start(self, argv: list[str], role: str) -> Proc:
        err = self.workdir / f"{role}-{len(self.procs)}.err"
        with open(err, "wb") as f:
            popen = subprocess.Popen(
                argv,
                env=self.env,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=f,
            )
        proc = Proc(popen, err, role)
        self.procs.append(proc)
        return proc

    def worker(
        self, threads: int = 4, lease: float = 5.0, grace: float = 30.0, queues: str = "default"
    ) -> Proc:
        """One worker process (``App.run_worker``) that logs with its pid."""
        argv = [sys.executable, "-m", "tests.fault.faultapp"]
        argv += [str(threads), str(lease), str(grace), queues]
        return self._start(argv, "worker")

    def supervisor(
        self,
        processes: int,
        threads: int = 4,
        lease: float = 5.0,
        grace: float = 60.0,
        burst: bool = False,
    ) -> Proc:
        """``jobq worker tests.fault.faultapp:app --processes P``: the real CLI supervisor."""
        argv = [
            sys.executable,
            "-m",
            "jobq.cli",
            "worker",
            "tests.fault.faultapp:app",
            f"--processes={processes}",
            f"--threads={threads}",
            f"--lease={lease}",
            f"--grace={grace}",
        ]
        if burst:
            argv.append("--burst")
        return self._start(argv, "supervisor")

    def python(self, code: str, role: str, *args: str) -> Proc:
        return self._start([sys.executable, "-c", code, *args], role)

    def kill(self, proc: Proc, sig: int = signal.SIGKILL) -> None:
        """SIGKILL (or another fatal signal) and reap; the pid counts as died abnormally."""
        proc.popen.send_signal(sig)
        proc.popen.wait(STEP_WAIT)
        self.killed[proc.pid] = time.time()
        self.kills += 1

    def pause(self, proc: Proc) -> float:
        proc.popen.send_signal(signal.SIGSTOP)
        started = time.time()
        self.paused[proc.pid] = (started, float("inf"))
        return started

    def resume(self, proc: Proc) -> None:
        proc.popen.send_signal(signal.SIGCONT)
        self.paused[proc.pid] = (self.paused[proc.pid][0], time.time())

    def side_log(self) -> list[Event]:
        return read_side_log(self.side_log_path)

    def cut_off(self) -> dict[int, set[int]]:
        """pid -> ids of jobs whose lease that (living) worker lost, from its own log."""
        out: dict[int, set[int]] = {}
        for p in self.procs:
            for m in _LOST.finditer(p.log()):
                out.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
        return out

    def supervised_pids(self, proc: Proc) -> list[int]:
        """The pids of the worker processes a supervisor started, from its log."""
        return [int(m.group(1)) for m in _SUP_STARTED.finditer(proc.log())]

    def logs(self) -> str:
        return "\n".join(f"--- {p.role} {p.pid}\n{p.log()[-3000:]}" for p in self.procs)

    def stop_all(self) -> None:
        for p in self.procs:
            if p.alive():
                with contextlib.suppress(ProcessLookupError):
                    p.popen.send_signal(signal.SIGCONT)
                    p.popen.kill()
        for p in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.popen.wait(STEP_WAIT)


# -- finished jobs stay finished ---------------------------------------------------------------


class TerminalWatcher:
    """Samples every job's row while a test runs and reports any finished job whose state,
    attempt or lease token changed afterwards (DESIGN §2: finished states are absorbing)."""

    def __init__(self, store: Store, interval: float = 0.5) -> None:
        self.store = store
        self.interval = interval
        self.seen: dict[int, tuple[str, int, str | None]] = {}
        self.changes: list[str] = []
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="terminal-watcher", daemon=True)

    def __enter__(self) -> TerminalWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(STEP_WAIT)
        self.sample()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        try:
            rows = self.store.query("SELECT id, state, attempt, lease_token FROM jobq_jobs")
        except Exception:
            return  # the store is down for a moment (a fault test): sample again later
        self.samples += 1
        current = {r[0]: (r[1], r[2], r[3]) for r in rows}
        for job_id, before in list(self.seen.items()):
            now = current.get(job_id)
            if now != before:
                self.changes.append(f"job {job_id} was {before} after finishing, then {now}")
                del self.seen[job_id]  # report each change once
        self.seen.update({i: v for i, v in current.items() if v[0] in TERMINAL})


# -- one summary line per test -----------------------------------------------------------------

#: (test node id, line) printed at the end of the pytest session (``tests/fault/conftest.py``).
SUMMARY: list[tuple[str, str]] = []


def record(line: str) -> None:
    """Add the running test's summary line."""
    test = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0]
    SUMMARY.append((test, line))
