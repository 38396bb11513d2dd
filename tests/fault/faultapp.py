"""The app the fault battery's worker processes run.

Every task appends ``job id, attempt, lease token, pid, start|end, time`` to a side log (one
``O_APPEND`` write per line, fsync'd) before and after its work, so what really ran can be
reconciled with what the database says after the run.

Worker processes load it with ``jobq worker tests.fault.faultapp:app`` (the supervisor) or
``python -m tests.fault.faultapp THREADS LEASE GRACE`` (one worker, logging with its pid);
both read ``JOBQ_URL`` and ``JOBQ_FAULT_SIDE_LOG``. Tests build the same app with :func:`build`
to enqueue.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import jobq

SIDE_LOG_ENV = "JOBQ_FAULT_SIDE_LOG"
#: Good jobs may be caught in many kills in a row; they must not run out of attempts.
WORK_ATTEMPTS = 25
POISON_ATTEMPTS = 3


def note(side_log: str, event: str) -> jobq.Job:
    """Append one line for the running job to the side log and fsync it."""
    job = jobq.current_job()
    line = (
        f"{job.id} {job.attempt} {job.record.lease_token} {os.getpid()} {event} {time.time():.6f}\n"
    )
    fd = os.open(side_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return job


def build(url: str, side_log: str) -> jobq.App:
    """The app with its tasks: ``work``, ``poison``, ``echo`` and ``length``."""
    app = jobq.App(url)

    @app.task(name="work", max_attempts=WORK_ATTEMPTS)
    def work(i: int, ms: int = 0, marker: str | None = None) -> dict[str, Any]:
        job = note(side_log, "start")
        if marker is not None and job.attempt == 1:
            tmp = f"{marker}.tmp"
            Path(tmp).write_text(str(os.getpid()))
            os.replace(tmp, marker)
        time.sleep(ms / 1000)
        note(side_log, "end")
        return {"i": i, "token": job.record.lease_token, "pid": os.getpid()}

    @app.task(name="poison", max_attempts=POISON_ATTEMPTS)
    def poison() -> None:
        note(side_log, "start")
        os.kill(os.getpid(), signal.SIGKILL)  # every attempt takes its process down

    @app.task(name="echo")
    def echo(value: Any = None, **kwargs: Any) -> Any:
        note(side_log, "start")
        note(side_log, "end")
        return value

    @app.task(name="bigint")
    def bigint(digits: int) -> int:
        note(side_log, "start")
        note(side_log, "end")
        huge: int = 10**digits  # more digits than json may write: a result it cannot store
        return huge

    @app.task(name="length")
    def length(data: str) -> int:
        note(side_log, "start")
        note(side_log, "end")
        return len(data)

    return app


_app: jobq.App | None = None


def __getattr__(name: str) -> Any:
    """``app``: built on first use from the environment (for ``jobq worker MODULE:app``)."""
    global _app
    if name != "app":
        raise AttributeError(name)
    if _app is None:
        _app = build(os.environ["JOBQ_URL"], os.environ[SIDE_LOG_ENV])
    return _app


def main(argv: list[str]) -> None:
    """One worker in this process, logging lines that carry its pid.

    ``argv``: threads, lease seconds, grace seconds, and optionally a comma-separated list of
    queues (default: ``default``)."""
    threads, lease, grace = int(argv[0]), float(argv[1]), float(argv[2])
    queues = argv[3].split(",") if len(argv) > 3 else ["default"]
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(created).3f pid=%(process)d %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
    app = build(os.environ["JOBQ_URL"], os.environ[SIDE_LOG_ENV])
    app.run_worker(queues, threads=threads, lease=lease, grace=grace, poll_interval=0.2)


if __name__ == "__main__":
    main(sys.argv[1:])
