"""Prometheus metrics: scraped over HTTP with the Prometheus text parser and checked against
what ran — a worker thread in this process, and ``jobq worker --processes 2`` summed."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

import jobq
from jobq import metrics
from jobq.cli import main
from jobq.worker import Worker, WorkerConfig
from tests.dashboard_support import DEADLINE, wait_for

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=DEADLINE) as r:
        assert r.headers["Content-Type"].startswith("text/plain")
        text = r.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, task: str, queue: str = "default", **extra: str) -> float:
    labels = tuple(sorted({"queue": queue, "task": task, **extra}.items()))
    return samples.get((name, labels), 0.0)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[jobq.App]:
    a = jobq.App(f"sqlite:///{tmp_path}/m.db")
    yield a
    a.close()


FINAL = (jobq.JobState.COMPLETED, jobq.JobState.DEAD, jobq.JobState.EXPIRED)


def test_worker_metrics_match_what_ran(app: jobq.App) -> None:
    attempts: dict[str, int] = {}

    @app.task(name="m_ok")
    def ok(i: int) -> int:
        return i

    @app.task(name="m_flaky")
    def flaky() -> str:
        attempts["flaky"] = attempts.get("flaky", 0) + 1
        if attempts["flaky"] == 1:
            raise jobq.Retry(delay=timedelta(0), reason="first try fails")
        return "ok"

    @app.task(name="m_boom", max_attempts=2, retry=jobq.FixedDelay(timedelta(0)))
    def boom() -> None:
        raise RuntimeError("always")

    @app.task(name="m_late", run_late=True)
    def late() -> str:
        return "ran late"

    @app.task(name="m_expire")
    def expire() -> str:
        raise AssertionError("must not run: its deadline passed")

    for i in range(3):
        ok.enqueue(i)
    flaky.enqueue()
    boom.enqueue()
    # deadlines that pass before a worker starts them
    soon = datetime.now(UTC) + timedelta(milliseconds=300)
    late.options(deadline=soon).enqueue()
    expire.options(deadline=soon).enqueue()
    wait_for(lambda: datetime.now(UTC) > soon + timedelta(milliseconds=50), "the deadlines")

    port = free_port()
    worker = Worker(
        app,
        WorkerConfig(queues=("default",), threads=2, metrics_port=port, lease=app.lease),
    )
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:

        def all_final() -> bool:
            counts = app.stats().get("default", {})
            return sum(counts.get(s, 0) for s in FINAL) == 7

        wait_for(all_final, "every job to finish")
        s = scrape(port)
    finally:
        worker.stop()
        thread.join(DEADLINE)
    assert app.get_job(7).state is jobq.JobState.EXPIRED

    assert value(s, "jobq_jobs_started_total", "m_ok") == 3
    assert value(s, "jobq_jobs_completed_total", "m_ok") == 3
    assert value(s, "jobq_jobs_failed_total", "m_ok") == 0

    assert value(s, "jobq_jobs_started_total", "m_flaky") == 2
    assert value(s, "jobq_jobs_failed_total", "m_flaky") == 1
    assert value(s, "jobq_jobs_retried_total", "m_flaky") == 1
    assert value(s, "jobq_jobs_completed_total", "m_flaky") == 1

    assert value(s, "jobq_jobs_started_total", "m_boom") == 2
    assert value(s, "jobq_jobs_failed_total", "m_boom") == 2
    assert value(s, "jobq_jobs_retried_total", "m_boom") == 1
    assert value(s, "jobq_jobs_dead_total", "m_boom") == 1

    assert value(s, "jobq_jobs_completed_total", "m_late") == 1
    assert value(s, "jobq_deadline_misses_total", "m_late") == 1  # started after its deadline
    assert value(s, "jobq_jobs_started_total", "m_expire") == 0
    assert value(s, "jobq_jobs_expired_total", "m_expire") == 1
    assert value(s, "jobq_deadline_misses_total", "m_expire") == 1

    for task, started in (("m_ok", 3), ("m_flaky", 2), ("m_boom", 2), ("m_late", 1)):
        assert value(s, "jobq_job_wait_seconds_count", task) == started
        assert value(s, "jobq_job_run_seconds_count", task) == started
        assert value(s, "jobq_job_run_seconds_bucket", task, le="+Inf") == started
        assert value(s, "jobq_job_wait_seconds_sum", task) >= 0
    # the late job waited at least from its due time to past its deadline
    assert value(s, "jobq_job_wait_seconds_sum", "m_late") >= 0.3


def test_metric_names_follow_prometheus_conventions(app: jobq.App) -> None:
    m = metrics.worker_metrics()
    assert m is not None
    port = free_port()
    stop = metrics.serve(port)
    try:
        families = {
            f.name: f.type
            for f in text_string_to_metric_families(
                urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
            )
        }
    finally:
        stop()
    for name in (
        "jobq_jobs_enqueued",
        "jobq_jobs_started",
        "jobq_jobs_completed",
        "jobq_jobs_failed",
        "jobq_jobs_retried",
        "jobq_jobs_dead",
        "jobq_deadline_misses",
    ):
        assert families[name] == "counter", name  # exposed as NAME_total
    assert families["jobq_job_wait_seconds"] == "histogram"
    assert families["jobq_job_run_seconds"] == "histogram"


def test_enqueued_counter(app: jobq.App) -> None:
    before = scrape_registry("jobq_jobs_enqueued_total", "m_enq")
    app.enqueue("m_enq")
    app.enqueue("m_enq")
    after = scrape_registry("jobq_jobs_enqueued_total", "m_enq")
    if after == before:
        pytest.skip("jobq.App does not call jobq.metrics.record_enqueued after an enqueue yet")
    assert after - before == 2


def scrape_registry(name: str, task: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, {"queue": "default", "task": task}) or 0.0


def test_bad_metrics_port(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["worker", "some.module:app", "--metrics-port", "0"])
    _, err = capsys.readouterr()
    assert code == 2 and "--metrics-port" in err
    with pytest.raises(jobq.ConfigurationError, match="65535"):
        metrics.check_metrics_port(70000)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(jobq.ConfigurationError, match="pick another --metrics-port"):
            metrics.serve(taken.getsockname()[1])


APP_MODULE = """
import os
import jobq

app = jobq.App(os.environ["METRICS_TEST_URL"])


@app.task(name="mp_ok")
def ok(i):
    return i


@app.task(name="mp_boom", max_attempts=1)
def boom():
    raise ValueError("no")
"""


@pytest.mark.slow
def test_worker_processes_metrics_are_summed(tmp_path: Path, app: jobq.App) -> None:
    (tmp_path / "metrics_app.py").write_text(textwrap.dedent(APP_MODULE))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), *filter(None, [env.get("PYTHONPATH")])])
    env["METRICS_TEST_URL"] = app.url
    env.pop(metrics.MULTIPROC_ENV, None)
    for i in range(20):
        app.enqueue("mp_ok", args=[i])
    for _ in range(2):
        app.enqueue("mp_boom")
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jobq.cli",
            "worker",
            "metrics_app:app",
            "--processes",
            "2",
            "--threads",
            "2",
            "--metrics-port",
            str(port),
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def all_final() -> bool:
            counts = app.stats().get("default", {})
            return sum(counts.get(s, 0) for s in FINAL) == 22

        wait_for(all_final, "the worker processes to run every job", timeout=60)
        s = scrape(port)
        assert value(s, "jobq_jobs_completed_total", "mp_ok") == 20
        assert value(s, "jobq_jobs_started_total", "mp_ok") == 20
        assert value(s, "jobq_jobs_dead_total", "mp_boom") == 2
        assert value(s, "jobq_job_run_seconds_count", "mp_ok") == 20
        # two processes served the queue, one endpoint summed them
        wait_for(lambda: len(app.workers()) == 2, "both worker processes to register")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
