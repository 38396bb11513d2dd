"""Prometheus metrics: what worker processes did, and what the job store holds.

Two sources, two endpoints:

* **Worker metrics** (this process's counters and histograms, labelled by ``queue`` and
  ``task``): jobs enqueued, started, completed, failed, retried, dead, cancelled, expired and
  snoozed; deadline misses; ``jobq_job_wait_seconds`` (from when a job became due — its
  ``run_at``, which is its enqueue time unless it was delayed or is retrying — to the start of
  the attempt) and ``jobq_job_run_seconds`` (how long an attempt ran). They live in
  ``prometheus_client``'s default registry, so an application that already serves Prometheus
  metrics gets them too; ``jobq worker --metrics-port N`` (or ``WorkerConfig.metrics_port``)
  serves them on their own.
* **Store metrics** (:class:`StoreCollector`, computed from the store at each scrape, the same
  from any process): ``jobq_queue_depth{queue,state}``, ``jobq_queue_paused{queue}`` and
  ``jobq_workers{alive}``. The dashboard serves them on its ``/metrics``.

**Many worker processes.** ``jobq worker --processes P --metrics-port N`` serves the sum over
all of its worker processes on port N, from the supervisor: it gives its children a fresh
directory in ``$PROMETHEUS_MULTIPROC_DIR`` (``prometheus_client``'s multiprocess mode), each child
writes its counters there, and the supervisor adds them up at each scrape. Counters of a child
that was recycled or restarted are kept, so the totals never go backwards while the supervisor
runs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from jobq.exceptions import ConfigurationError

if TYPE_CHECKING:
    from prometheus_client.registry import Collector, CollectorRegistry

    from jobq.app import App
    from jobq.backends.base import Outcome
    from jobq.job import JobRecord

#: Where ``prometheus_client`` keeps the metrics of each process in multiprocess mode.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

#: Buckets (seconds) for waits and run times: 1 ms to 1 h.
DURATION_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
)

_LABELS = ("queue", "task")


def _require() -> None:
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise ConfigurationError(
            "metrics need the prometheus_client package, which is not installed; install it "
            "with: pip install 'jobq[dashboard]' (or pip install prometheus_client)"
        ) from None


class WorkerMetrics:
    """The worker counters and histograms of this process (one set per process)."""

    def __init__(self) -> None:
        _require()
        from prometheus_client import Counter, Histogram

        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, _LABELS)

        self.enqueued = counter("jobq_jobs_enqueued_total", "Jobs enqueued by this process.")
        self.started = counter("jobq_jobs_started_total", "Attempts started.")
        self.completed = counter("jobq_jobs_completed_total", "Attempts that completed.")
        self.failed = counter(
            "jobq_jobs_failed_total",
            "Attempts that failed (raised, timed out, or could not run), retried or not.",
        )
        self.retried = counter(
            "jobq_jobs_retried_total", "Failed attempts that will be retried later."
        )
        self.dead = counter("jobq_jobs_dead_total", "Jobs that ended dead.")
        self.cancelled = counter(
            "jobq_jobs_cancelled_total", "Jobs whose task cancelled them (raised jobq.Cancel)."
        )
        self.snoozed = counter("jobq_jobs_snoozed_total", "Attempts snoozed (jobq.Snooze).")
        self.expired = counter(
            "jobq_jobs_expired_total", "Jobs not run because their deadline had passed."
        )
        self.deadline_misses = counter(
            "jobq_deadline_misses_total",
            "Jobs that did not start by their deadline: expired, or run late (run_late=True).",
        )
        self._hot_children: dict[tuple[str, str], tuple[Any, Any, Any, Any]] = {}
        self.wait = Histogram(
            "jobq_job_wait_seconds",
            "Seconds from when a job became due (run_at) to the start of its attempt.",
            _LABELS,
            buckets=DURATION_BUCKETS,
        )
        self.run = Histogram(
            "jobq_job_run_seconds",
            "Seconds an attempt ran, until it returned, raised or timed out.",
            _LABELS,
            buckets=DURATION_BUCKETS,
        )

    def _hot(self, record: JobRecord) -> tuple[Any, Any, Any, Any]:
        """The (started, wait, run, completed) children of ``record``'s queue and task, looked
        up once per pair: ``labels()`` costs more than the increment itself, per job."""
        key = (record.queue, record.task)
        hot = self._hot_children.get(key)
        if hot is None:
            hot = (
                self.started.labels(*key),
                self.wait.labels(*key),
                self.run.labels(*key),
                self.completed.labels(*key),
            )
            self._hot_children[key] = hot
        return hot

    def job_started(self, record: JobRecord) -> None:
        """An attempt of ``record`` (as claimed) starts now."""
        started_total, wait, _, _ = self._hot(record)
        started_total.inc()
        started = record.started_at
        if started is not None:
            wait.observe(max(0.0, (started - record.run_at).total_seconds()))
            if record.deadline is not None and started > record.deadline:
                self.deadline_misses.labels(record.queue, record.task).inc()

    def job_finished(self, record: JobRecord, outcome: Outcome, seconds: float | None) -> None:
        """An attempt ended with ``outcome`` after running ``seconds`` (None: it never ran)."""
        from jobq.backends.base import OutcomeKind

        labels = (record.queue, record.task)
        _, _, run, completed = self._hot(record)
        if seconds is not None:
            run.observe(max(0.0, seconds))
        kind = outcome.kind
        if kind is OutcomeKind.COMPLETED:
            completed.inc()
        elif kind is OutcomeKind.RETRY:
            self.failed.labels(*labels).inc()
            self.retried.labels(*labels).inc()
        elif kind is OutcomeKind.DEAD:
            self.failed.labels(*labels).inc()
            self.dead.labels(*labels).inc()
        elif kind is OutcomeKind.CANCELLED:
            self.cancelled.labels(*labels).inc()
        elif kind is OutcomeKind.SNOOZED:
            self.snoozed.labels(*labels).inc()
        elif kind is OutcomeKind.EXPIRED:
            self.expired.labels(*labels).inc()
            self.deadline_misses.labels(*labels).inc()

    def jobs_enqueued(self, records: Iterable[JobRecord]) -> None:
        """Jobs this process has just enqueued (committed)."""
        counts: dict[tuple[str, str], int] = {}
        for r in records:
            key = (r.queue, r.task)
            counts[key] = counts.get(key, 0) + 1
        for (queue, task), n in counts.items():
            self.enqueued.labels(queue, task).inc(n)


_metrics: WorkerMetrics | None = None
_metrics_lock = threading.Lock()


def worker_metrics() -> WorkerMetrics | None:
    """This process's :class:`WorkerMetrics`, created on first use; None when
    ``prometheus_client`` is not installed (jobq then runs without metrics)."""
    global _metrics
    if _metrics is None:
        with _metrics_lock:
            if _metrics is None:
                try:
                    _metrics = WorkerMetrics()
                except ConfigurationError:
                    return None
    return _metrics


def record_enqueued(records: Iterable[JobRecord]) -> None:
    """Count jobs this process enqueued (called by :class:`jobq.App` after a commit)."""
    m = worker_metrics()
    if m is not None:
        m.jobs_enqueued(records)


# -- serving -----------------------------------------------------------------------------------


def check_metrics_port(port: int) -> int:
    """``port`` if it is a valid TCP port, else a :class:`ConfigurationError` that says so."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ConfigurationError(f"metrics port must be an int from 1 to 65535, got {port!r}")
    return port


def serve(
    port: int, host: str = "127.0.0.1", registry: Collector | None = None
) -> Callable[[], None]:
    """Serve ``registry`` (default: this process's metrics, or the sum over every process
    writing to ``$PROMETHEUS_MULTIPROC_DIR`` when that is set) in Prometheus' text format at
    ``http://host:port/metrics`` from a daemon thread; returns a function that stops it.

    Raises :class:`ConfigurationError` when the port cannot be bound.
    """
    _require()
    from prometheus_client import REGISTRY, start_http_server

    check_metrics_port(port)
    if registry is None:
        registry = multiprocess_registry() if os.environ.get(MULTIPROC_ENV) else REGISTRY
    worker_metrics()  # the families exist (at zero) from the first scrape
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}; pick another "
            "--metrics-port"
        ) from None

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5)

    return stop


def multiprocess_registry(path: str | None = None) -> CollectorRegistry:
    """A registry that adds up the metrics every process wrote to ``path`` (default:
    ``$PROMETHEUS_MULTIPROC_DIR``)."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    return registry


@contextlib.contextmanager
def multiprocess_dir() -> Iterator[str]:
    """A fresh directory for worker processes' metrics, set as ``$PROMETHEUS_MULTIPROC_DIR``
    (inherited by child processes started inside the block) and removed afterwards."""
    path = tempfile.mkdtemp(prefix="jobq-metrics-")
    old = os.environ.get(MULTIPROC_ENV)
    os.environ[MULTIPROC_ENV] = path
    try:
        yield path
    finally:
        if old is None:
            os.environ.pop(MULTIPROC_ENV, None)
        else:
            os.environ[MULTIPROC_ENV] = old
        shutil.rmtree(path, ignore_errors=True)


# -- store-wide gauges -------------------------------------------------------------------------


class StoreCollector:
    """Gauges computed from the job store at each scrape: they are the same whichever process
    serves them, and cover every worker on every machine.

    * ``jobq_queue_depth{queue,state}``: jobs in each queue and state (every state, zeros
      included, for each queue that has jobs);
    * ``jobq_queue_paused{queue}``: 1 for a paused queue (when the store supports pausing);
    * ``jobq_workers{alive}``: registered worker processes seen within a lease, and not.
    """

    def __init__(self, app: App) -> None:
        self.app = app

    def describe(self) -> list[Any]:
        return []  # collected lazily: never query the store at registration

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        from jobq.states import JobState

        stats = self.app.stats()
        depth = GaugeMetricFamily(
            "jobq_queue_depth", "Jobs in each queue and state.", labels=["queue", "state"]
        )
        for queue in sorted(stats):
            for state in JobState:
                depth.add_metric([queue, state.value], stats[queue].get(state, 0))
        yield depth

        queues_fn = getattr(self.app, "queues", None)
        if callable(queues_fn):
            paused = GaugeMetricFamily(
                "jobq_queue_paused", "1 if the queue is paused.", labels=["queue"]
            )
            settings: dict[str, Any] = queues_fn()
            for name in sorted(settings):
                paused.add_metric([name], 1.0 if getattr(settings[name], "paused", False) else 0.0)
            yield paused

        workers = self.app.workers()
        now = self.app.backend.now()
        alive = sum(1 for w in workers if w.alive(now, self.app.lease))
        family = GaugeMetricFamily(
            "jobq_workers",
            "Registered worker processes, by whether they are alive.",
            labels=["alive"],
        )
        family.add_metric(["true"], alive)
        family.add_metric(["false"], len(workers) - alive)
        yield family


def store_registry(app: App) -> CollectorRegistry:
    """A registry holding a :class:`StoreCollector` for ``app``."""
    _require()
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(app))
    return registry
