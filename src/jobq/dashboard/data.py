"""What the dashboard's pages show, read from the job store: plain data, no HTML.

Every function here is synchronous (the store's API is); the views run them in a thread.
Arguments and keyword arguments only ever leave this module redacted
(:func:`jobq.secrets.redact_args`).
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from jobq.app import App
from jobq.backends.base import WorkerInfo
from jobq.job import Job, JobRecord
from jobq.secrets import redact_args
from jobq.states import TERMINAL_STATES, JobState

T = TypeVar("T")

#: Page sizes the job list offers; any other requested size is clamped into this range.
PAGE_SIZES = (25, 50, 100, 200)
MIN_PAGE, MAX_PAGE, DEFAULT_PAGE = 1, 200, 50
#: Longest text search and filter value accepted (longer ones are cut).
MAX_FILTER_CHARS = 200
#: The activity charts cover this window, in buckets of BUCKET.
WINDOW = timedelta(minutes=60)
BUCKET = timedelta(minutes=1)
#: The activity charts read at most this many of the newest jobs (a bounded cost per refresh).
MAX_SCAN = 5000
#: Dependencies shown on a job page (the rest are counted).
MAX_DEPENDENCIES = 100


def clamp_page_size(value: object) -> int:
    """A requested page size as an int from :data:`MIN_PAGE` to :data:`MAX_PAGE` (the default
    for anything that is not an integer)."""
    try:
        n = int(str(value))
    except ValueError:
        return DEFAULT_PAGE
    return max(MIN_PAGE, min(n, MAX_PAGE))


# -- one job ------------------------------------------------------------------------------------


def pretty_json(value: Any) -> str:
    """``value`` as indented JSON text (non-ASCII kept), for a ``<pre>``."""
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)


def args_preview(record: JobRecord, limit: int = 80) -> str:
    """The redacted arguments on one short line: ``1, "a", to="x"``."""
    args, kwargs = redact_args(record)
    parts = [json.dumps(a, ensure_ascii=False, default=str) for a in args]
    parts += [f"{k}={json.dumps(v, ensure_ascii=False, default=str)}" for k, v in kwargs.items()]
    text = ", ".join(parts)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def result_text(record: JobRecord) -> str | None:
    """The stored result as indented JSON (the raw text if it does not decode); None if none."""
    if record.result_json is None:
        return None
    try:
        return pretty_json(record.result)
    except Exception:
        return record.result_json


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return max(0.0, (end - start).total_seconds())


def duration(seconds: float | None) -> str:
    """``0.123s``, ``12.3s``, ``4m 05s``, ``2h 03m``; ``-`` for None."""
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.3f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m {int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h {int(seconds % 3600 // 60):02d}m"


@dataclass(frozen=True, slots=True)
class Dependency:
    id: int
    state: str  # a JobState value, or "pruned"
    task: str


@dataclass(frozen=True, slots=True)
class JobDetail:
    """Everything the job page shows."""

    record: JobRecord
    args_json: str
    kwargs_json: str
    result: str | None
    wait: str  # run_at → started
    run: str  # started → finished
    total: str  # created → finished
    dependencies: list[Dependency]
    more_dependencies: int
    can_retry: bool
    can_cancel: bool
    can_delete: bool


def job_detail(app: App, job_id: int) -> JobDetail:
    """The job page's data; raises :class:`jobq.JobNotFound`."""
    r = app.get_job(job_id).record
    args, kwargs = redact_args(r)
    deps: list[Dependency] = []
    for dep_id in r.depends_on[:MAX_DEPENDENCIES]:
        try:
            d = app.get_job(dep_id).record
            deps.append(Dependency(d.id, d.state.value, d.task))
        except Exception:
            deps.append(Dependency(dep_id, "pruned", "-"))
    return JobDetail(
        record=r,
        args_json=pretty_json(args),
        kwargs_json=pretty_json(kwargs),
        result=result_text(r),
        wait=duration(_seconds(r.run_at, r.started_at)),
        run=duration(_seconds(r.started_at, r.finished_at)),
        total=duration(_seconds(r.created_at, r.finished_at)),
        dependencies=deps,
        more_dependencies=max(0, len(r.depends_on) - MAX_DEPENDENCIES),
        can_retry=r.state in TERMINAL_STATES,
        can_cancel=r.state not in TERMINAL_STATES,
        can_delete=r.state is not JobState.RUNNING,
    )


# -- the job list -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JobFilters:
    """The job list's filters, as given in the query string (validated by the store)."""

    queue: str | None = None
    state: str | None = None
    task: str | None = None
    search: str | None = None
    limit: int = DEFAULT_PAGE
    before: int | None = None

    @classmethod
    def from_query(cls, query: Any) -> JobFilters:
        """From a mapping of query parameters; blanks are no filter, values are cut to
        :data:`MAX_FILTER_CHARS`, the page size is clamped, a bad ``before`` is ignored."""

        def text(name: str) -> str | None:
            value = str(query.get(name) or "").strip()
            return value[:MAX_FILTER_CHARS] or None

        before: int | None = None
        raw_before = text("before")
        if raw_before is not None and raw_before.isdigit():
            before = int(raw_before) if 0 < int(raw_before) < 2**63 else None
        return cls(
            queue=text("queue"),
            state=text("state"),
            task=text("task"),
            search=text("q"),
            limit=clamp_page_size(query.get("limit") or DEFAULT_PAGE),
            before=before,
        )

    def params(self, **changes: Any) -> dict[str, str]:
        """Query parameters for a link to this list with ``changes`` (None drops one)."""
        values: dict[str, Any] = {
            "queue": self.queue,
            "state": self.state,
            "task": self.task,
            "q": self.search,
            "limit": self.limit if self.limit != DEFAULT_PAGE else None,
            "before": self.before,
        }
        values.update(changes)
        return {k: str(v) for k, v in values.items() if v is not None and v != ""}


@dataclass(frozen=True, slots=True)
class JobRow:
    id: int
    state: str
    queue: str
    task: str
    args: str
    attempt: str
    progress: float | None
    created_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class JobPage:
    rows: list[JobRow]
    next_before: int | None  # the ``before`` of the next (older) page, if there may be one


def job_page(app: App, f: JobFilters) -> JobPage:
    """One page of the job list, newest first; raises :class:`jobq.ConfigurationError` or
    :class:`jobq.InvalidJobError` for a bad queue or state name."""
    jobs: Sequence[Job] = app.list_jobs(
        queue=f.queue,
        state=f.state,
        task=f.task,
        search=f.search,
        limit=f.limit,
        before_id=f.before,
    )
    rows = [
        JobRow(
            id=j.id,
            state=j.state.value,
            queue=j.queue,
            task=j.task,
            args=args_preview(j.record),
            attempt=f"{j.attempt}/{j.max_attempts}",
            progress=j.record.progress,
            created_at=j.created_at,
            finished_at=j.finished_at,
        )
        for j in jobs
    ]
    next_before = rows[-1].id if len(rows) == f.limit and rows else None
    return JobPage(rows, next_before)


# -- the overview -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueueRow:
    name: str
    counts: dict[str, int]
    total: int
    paused: bool


@dataclass(frozen=True, slots=True)
class WorkerRow:
    info: WorkerInfo
    alive: bool
    up: str
    seen: str
    running: list[int]  # ids of the jobs it runs now


@dataclass(slots=True)
class Bucket:
    """One minute of activity."""

    start: datetime
    completed: int = 0
    failed: int = 0  # failed attempts (retried or not)
    expired: int = 0
    waits: list[float] = field(default_factory=list)
    runs: list[float] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Activity:
    """Throughput and latency over the last :data:`WINDOW`, from the newest jobs."""

    buckets: list[Bucket]
    scanned: int
    truncated: bool  # MAX_SCAN reached: older activity is not counted
    deadline_misses: int  # expired, or started after the deadline, within the window
    completed_5m: int
    wait_p95: float | None
    run_p95: float | None


@dataclass(frozen=True, slots=True)
class Overview:
    queues: list[QueueRow]
    totals: dict[str, int]
    workers: list[WorkerRow]
    activity: Activity
    now: datetime


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) of ``values`` by nearest rank; None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def activity(app: App, now: datetime) -> Activity:
    """Bucket the newest jobs' finishes, failed attempts, waits and run times by minute."""
    start = now - WINDOW
    n = int(WINDOW / BUCKET)
    buckets = [Bucket(start + i * BUCKET) for i in range(n)]

    def slot(at: datetime | None) -> Bucket | None:
        if at is None or at < start or at >= now + BUCKET:
            return None
        return buckets[min(n - 1, int((at - start) / BUCKET))]

    scanned, before, misses = 0, None, 0
    truncated = False
    while True:
        page = app.list_jobs(limit=1000, before_id=before)
        for job in page:
            r = job.record
            scanned += 1
            for err in r.errors:
                b = slot(err.at)
                if b is not None and err.type not in ("DeadlineExpired", "DependencyFailed"):
                    b.failed += 1
            done = slot(r.finished_at)
            if done is not None:
                if r.state is JobState.COMPLETED:
                    done.completed += 1
                    run = _seconds(r.started_at, r.finished_at)
                    if run is not None:
                        done.runs.append(run)
                elif r.state is JobState.EXPIRED:
                    done.expired += 1
                    misses += 1
            began = slot(r.started_at)
            if began is not None:
                wait = _seconds(r.run_at, r.started_at)
                if wait is not None:
                    began.waits.append(wait)
                if r.deadline is not None and r.started_at and r.started_at > r.deadline:
                    misses += r.state is not JobState.EXPIRED
        if len(page) < 1000:
            break
        before = page[-1].id
        # Jobs are listed newest first: stop once they were all created well before the window.
        if page[-1].created_at < start - WINDOW:
            break
        if scanned >= MAX_SCAN:
            truncated = True
            break
    recent = now - timedelta(minutes=5)
    return Activity(
        buckets=buckets,
        scanned=scanned,
        truncated=truncated,
        deadline_misses=misses,
        completed_5m=sum(b.completed for b in buckets if b.start >= recent - BUCKET),
        wait_p95=percentile([w for b in buckets for w in b.waits], 0.95),
        run_p95=percentile([r for b in buckets for r in b.runs], 0.95),
    )


def ago(delta: timedelta) -> str:
    """``12s``, ``5m``, ``3h`` (at least 0)."""
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"


def overview(app: App, cache: TTLCache[Activity] | None = None) -> Overview:
    """The overview page's data: counts per queue, workers and what they run, activity (from
    ``cache`` when it is fresh: counts and workers are always read anew)."""
    now = app.backend.now()
    stats = app.stats()
    settings = app.queues()
    names = sorted(set(stats) | set(settings))
    queues: list[QueueRow] = []
    totals = dict.fromkeys((s.value for s in JobState), 0)
    for name in names:
        counts = {s.value: stats.get(name, {}).get(s, 0) for s in JobState}
        for k, v in counts.items():
            totals[k] += v
        s = settings.get(name)
        queues.append(QueueRow(name, counts, sum(counts.values()), bool(s and s.paused)))
    running: dict[str, list[int]] = {}
    for job in app.list_jobs(state=JobState.RUNNING, limit=1000):
        if job.record.worker_id:
            running.setdefault(job.record.worker_id, []).append(job.id)
    workers = [
        WorkerRow(
            info=w,
            alive=w.alive(now, app.lease),
            up=ago(now - w.started_at),
            seen=ago(now - w.heartbeat_at),
            running=sorted(running.get(w.id, [])),
        )
        for w in app.workers()
    ]
    workers.sort(key=lambda w: (not w.alive, w.info.host, w.info.pid))
    act = cache.get(lambda: activity(app, now)) if cache is not None else activity(app, now)
    return Overview(queues, totals, workers, act, now)


class TTLCache(Generic[T]):
    """Remembers the last value of a function for ``ttl`` seconds (the overview is read by
    every open browser tab every few seconds; the store need not be)."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._value: T | None = None
        self._at = -math.inf

    def get(self, compute: Callable[[], T]) -> T:
        with self._lock:
            if self._value is not None and time.monotonic() - self._at < self.ttl:
                return self._value
        value = compute()
        with self._lock:
            self._value, self._at = value, time.monotonic()
        return value

    def clear(self) -> None:
        with self._lock:
            self._at = -math.inf
