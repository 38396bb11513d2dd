"""What the CLI prints: jobs and queue counts as JSON or as aligned plain-text tables."""

from __future__ import annotations

import json
import sys
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Any

from jobq.backends.base import WorkerInfo
from jobq.exceptions import JobqError
from jobq.job import Job, JobRecord
from jobq.secrets import redact_args
from jobq.states import JobState


def _json_default(value: object) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, JobState):
        return value.value
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def dumps(value: object, *, indent: int | None = 2) -> str:
    """``value`` as JSON; datetimes ISO-8601, durations in seconds, states by name."""
    return json.dumps(value, default=_json_default, indent=indent)


def _decoded(record: JobRecord, name: str) -> Any:
    """``record.<name>`` decoded; the raw stored text if it is not valid JSON."""
    try:
        return getattr(record, name)
    except JobqError:
        return getattr(record, f"{name}_json")


def job_to_dict(job: Job | JobRecord) -> dict[str, Any]:
    """Everything about a job, JSON-ready (datetimes ISO-8601, durations in seconds)."""
    r = job.record if isinstance(job, Job) else job
    shown_args, shown_kwargs = redact_args(r)  # secret arguments as ***
    return {
        "id": r.id,
        "task": r.task,
        "queue": r.queue,
        "state": r.state.value,
        "priority": r.priority,
        "args": shown_args,
        "kwargs": shown_kwargs,
        "result": _decoded(r, "result"),
        "attempt": r.attempt,
        "max_attempts": r.max_attempts,
        "run_at": r.run_at.isoformat(),
        "deadline": _iso(r.deadline),
        "timeout": r.timeout.total_seconds() if r.timeout is not None else None,
        "unique_key": r.unique_key,
        "tags": list(r.tags),
        "worker_id": r.worker_id,
        "leased_until": _iso(r.leased_until),
        "created_at": r.created_at.isoformat(),
        "started_at": _iso(r.started_at),
        "finished_at": _iso(r.finished_at),
        "progress": r.progress,
        "progress_message": r.progress_message,
        "depends_on": list(r.depends_on),
        "allow_failed": r.allow_failed,
        "concurrency_key": r.concurrency_key,
        "rate_key": r.rate_key,
        "secret": list(r.secret),
        "errors": [
            {
                "attempt": e.attempt,
                "at": e.at.isoformat(),
                "type": e.type,
                "message": e.message,
                "traceback": e.traceback,
            }
            for e in r.errors
        ],
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def when(value: datetime | None) -> str:
    """``value`` in local time to the second, for tables; ``"-"`` for ``None``."""
    if value is None:
        return "-"
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def format_table(
    header: Sequence[str], rows: Sequence[Sequence[object]], right: Collection[int] = ()
) -> str:
    """An aligned plain-text table; the columns at indexes ``right`` are right-aligned."""
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = []
    for row in cells:
        parts = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def stats_rows(stats: dict[str, dict[JobState, int]]) -> tuple[list[str], list[list[object]]]:
    """The header and rows of the ``status`` table: a row per queue, then the totals."""
    header = ["QUEUE", *(s.value for s in JobState), "total"]
    rows: list[list[object]] = []
    totals = dict.fromkeys(JobState, 0)
    for queue in sorted(stats):
        counts = stats[queue]
        row: list[object] = [queue]
        for s in JobState:
            row.append(counts.get(s, 0))
            totals[s] += counts.get(s, 0)
        row.append(sum(counts.values()))
        rows.append(row)
    rows.append(["total", *(totals[s] for s in JobState), sum(totals.values())])
    return header, rows


def stats_json(stats: dict[str, dict[JobState, int]]) -> dict[str, Any]:
    """The ``status --json`` document: counts per queue and state, and the totals."""
    queues = {q: {s.value: stats[q].get(s, 0) for s in JobState} for q in sorted(stats)}
    total = {s.value: sum(c.get(s, 0) for c in stats.values()) for s in JobState}
    return {"queues": queues, "total": total}


def out(text: str = "") -> None:
    """Write a line to stdout."""
    sys.stdout.write(text + "\n")


def workers_rows(
    workers: Sequence[WorkerInfo], now: datetime, lease: timedelta
) -> tuple[list[str], list[list[object]]]:
    """The header and rows of the ``status`` workers table."""
    header = ["WORKER", "HOST", "PID", "QUEUES", "THREADS", "UP", "SEEN", "JOBS", "ALIVE"]
    rows: list[list[object]] = [
        [
            w.id,
            w.host,
            w.pid,
            ",".join(w.queues),
            w.threads,
            _ago(now - w.started_at),
            _ago(now - w.heartbeat_at) + " ago",
            w.jobs_run,
            "yes" if w.alive(now, lease) else "NO",
        ]
        for w in workers
    ]
    return header, rows


def workers_json(workers: Sequence[WorkerInfo], now: datetime, lease: timedelta) -> list[Any]:
    return [
        {
            "id": w.id,
            "host": w.host,
            "pid": w.pid,
            "queues": list(w.queues),
            "threads": w.threads,
            "started_at": w.started_at.isoformat(),
            "heartbeat_at": w.heartbeat_at.isoformat(),
            "jobs_run": w.jobs_run,
            "alive": w.alive(now, lease),
        }
        for w in workers
    ]


def _ago(delta: timedelta) -> str:
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"
