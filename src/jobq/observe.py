"""What a worker reports about each job, in one call per event: Prometheus metrics
(:mod:`jobq.metrics`) and a structured log line (:mod:`jobq.logs`).

The worker calls :func:`job_started` when a thread (or the event loop) starts an attempt and
:func:`job_finished` when the attempt's outcome is handed back to be recorded. Neither ever
raises: a broken metrics setup must not stop jobs from running.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from jobq.logs import job_fields
from jobq.metrics import serve, worker_metrics

if TYPE_CHECKING:
    from jobq.backends.base import Outcome
    from jobq.job import JobRecord

#: The logger of the per-job start and end lines.
log = logging.getLogger("jobq.job")
_internal = logging.getLogger("jobq.worker")
#: Level of the end line by outcome (others: INFO). Completed jobs are DEBUG: a busy worker
#: finishes thousands a second; metrics count them.
_LEVELS = {"completed": logging.DEBUG, "dead": logging.WARNING, "expired": logging.WARNING}


def job_started(record: JobRecord) -> None:
    """An attempt of ``record`` (as claimed: ``started_at`` is the claim time) starts now."""
    try:
        m = worker_metrics()
        if m is not None:
            m.job_started(record)
        if not log.isEnabledFor(logging.DEBUG):
            return  # a busy worker starts thousands a second: skip building the line
        log.debug(
            "job %s started: %s attempt %d/%d",
            record.id,
            record.task,
            record.attempt,
            record.max_attempts,
            extra=job_fields(record),
        )
    except Exception:  # pragma: no cover - reporting must never break a worker
        _internal.exception("job %s: reporting its start failed", record.id)


def job_finished(record: JobRecord, outcome: Outcome, started: float | None) -> None:
    """An attempt of ``record`` ended with ``outcome``; ``started`` is the ``time.monotonic()``
    at which it started (None: it never ran, e.g. an unknown task or a passed deadline)."""
    try:
        seconds = None if started is None else time.monotonic() - started
        m = worker_metrics()
        if m is not None:
            m.job_finished(record, outcome, seconds)
        kind = outcome.kind.value
        level = _LEVELS.get(kind, logging.INFO)
        if not log.isEnabledFor(level):
            return
        took = "" if seconds is None else f" in {seconds:.3f}s"
        why = f": {outcome.error.type}: {outcome.error.message}" if outcome.error else ""
        log.log(
            level,
            "job %s %s%s (%s attempt %d/%d)%s",
            record.id,
            kind,
            took,
            record.task,
            record.attempt,
            record.max_attempts,
            why,
            extra=job_fields(record),
        )
    except Exception:  # pragma: no cover - reporting must never break a worker
        _internal.exception("job %s: reporting its outcome failed", record.id)


def serve_metrics(port: int | None, host: str = "127.0.0.1") -> Callable[[], None]:
    """Serve this process's metrics on ``port`` (None: do nothing); returns the stopper."""
    if port is None:
        return lambda: None
    stop = serve(port, host)
    _internal.info("serving Prometheus metrics on http://%s:%d/metrics", host, port)
    return stop
