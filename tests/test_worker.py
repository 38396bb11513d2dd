"""The worker in this process, on every backend: order, retries, signals from tasks, timeouts,
deadlines, rows that cannot run, graceful stop. Tests wait on events, never on fixed sleeps."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import jobq
from jobq.backends.base import OutcomeKind
from jobq.worker import Worker, _weighted_order

WAIT = 30.0  # generous deadline for anything that should happen "soon"


@pytest.fixture
def app(app_url: str) -> Iterator[jobq.App]:
    a = jobq.App(app_url)
    yield a
    a.close()


def wait_for(cond: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)


def burst(app: jobq.App, threads: int = 1, **kw: Any) -> jobq.WorkerSummary:
    return app.run_worker(threads=threads, burst=True, handle_signals=False, **kw)


class Background:
    """A worker running in a thread, stopped (gracefully) at the end of the test."""

    def __init__(self, app: jobq.App, **kw: Any) -> None:
        kw.setdefault("threads", 2)
        self.worker: Worker = app.worker(**kw)
        self.summary: jobq.WorkerSummary | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.summary = self.worker.run()

    def stop(self) -> jobq.WorkerSummary:
        self.worker.stop()
        self.thread.join(WAIT)
        assert not self.thread.is_alive(), "worker did not stop"
        assert self.summary is not None
        return self.summary


def test_runs_jobs_in_priority_deadline_fifo_order(app: jobq.App) -> None:
    ran: list[str] = []

    @app.task
    def record(name: str) -> None:
        ran.append(name)

    soon = datetime.now(UTC) + timedelta(hours=1)
    later = datetime.now(UTC) + timedelta(hours=2)
    record.enqueue("normal-1")
    record.options(priority=9).enqueue("vip")
    record.options(priority=5, deadline=later).enqueue("reset-later")
    record.options(priority=5, deadline=soon).enqueue("reset-soon")
    record.options(priority=5).enqueue("p5-no-deadline")
    record.enqueue("normal-2")
    record.options(priority=-1).enqueue("bulk")
    burst(app, threads=1)
    assert ran == [
        "vip",
        "reset-soon",
        "reset-later",
        "p5-no-deadline",
        "normal-1",
        "normal-2",
        "bulk",
    ]


def test_result_is_stored_and_waited_for(app: jobq.App) -> None:
    @app.task
    def add(a: int, b: int) -> dict[str, int]:
        return {"sum": a + b}

    job = add.enqueue(2, 3)
    assert job.state is jobq.JobState.AVAILABLE
    bg = Background(app)
    assert job.wait(timeout=WAIT) == {"sum": 5}
    assert job.state is jobq.JobState.COMPLETED and job.attempt == 1
    bg.stop()


def test_wait_times_out_with_clear_error(app: jobq.App) -> None:
    job = app.enqueue("nobody.serves.this", queue="idle")
    with pytest.raises(jobq.WaitTimeout, match="idle"):
        job.wait(timeout=0.05)


def test_failures_retry_then_succeed(app: jobq.App) -> None:
    calls: list[int] = []

    @app.task(max_attempts=3, retry=jobq.FixedDelay(timedelta(0)))
    def flaky() -> str:
        calls.append(jobq.current_job().attempt)
        if len(calls) < 3:
            raise ConnectionError(f"try {len(calls)}")
        return "ok"

    job = flaky.enqueue()
    burst(app)
    job.refresh()
    assert job.state is jobq.JobState.COMPLETED and job.result() == "ok"
    assert calls == [1, 2, 3]
    assert [(e.attempt, e.type, e.message) for e in job.errors] == [
        (1, "ConnectionError", "try 1"),
        (2, "ConnectionError", "try 2"),
    ]
    assert "ConnectionError: try 1" in (job.errors[0].traceback or "")


def test_dead_after_max_attempts(app: jobq.App) -> None:
    @app.task(max_attempts=2, retry=jobq.FixedDelay(timedelta(0)))
    def always_fails() -> None:
        raise ValueError("nope")

    job = always_fails.enqueue()
    burst(app)
    job.refresh()
    assert job.state is jobq.JobState.DEAD and job.attempt == 2 and len(job.errors) == 2
    with pytest.raises(jobq.JobFailed, match="dead after 2 attempt"):
        job.wait(timeout=1)


def test_backoff_schedules_the_retry_in_the_future(app: jobq.App) -> None:
    @app.task(max_attempts=5, retry=jobq.ExponentialBackoff(base=timedelta(hours=1)))
    def fails() -> None:
        raise RuntimeError("down")

    job = fails.enqueue()
    before = datetime.now(UTC)
    burst(app)
    job.refresh()
    assert job.state is jobq.JobState.SCHEDULED and job.attempt == 1
    wait = job.run_at - before
    assert timedelta(minutes=44) <= wait <= timedelta(hours=1, seconds=5)


def test_exponential_backoff_policy_grows_and_caps() -> None:
    p = jobq.ExponentialBackoff(
        base=timedelta(seconds=1), factor=2, jitter=0, max_delay=timedelta(seconds=10)
    )
    assert [p.delay(a, ValueError()).total_seconds() for a in range(1, 7)] == [1, 2, 4, 8, 10, 10]
    jittered = jobq.ExponentialBackoff(base=timedelta(seconds=8), jitter=0.5)
    for _ in range(200):
        assert 4 <= jittered.delay(1, ValueError()).total_seconds() <= 8
    assert jobq.NoRetry().delay(1, ValueError()) is None
    with pytest.raises(jobq.ConfigurationError):
        jobq.ExponentialBackoff(jitter=2)


def test_no_retry_policy_makes_first_failure_dead(app: jobq.App) -> None:
    @app.task(max_attempts=5, retry=jobq.NoRetry())
    def once() -> None:
        raise ValueError("permanent")

    job = once.enqueue()
    burst(app)
    assert job.refresh().state is jobq.JobState.DEAD and job.attempt == 1


def test_task_signals_retry_cancel_snooze(app: jobq.App) -> None:
    @app.task(max_attempts=3)
    def retry_me() -> None:
        if jobq.current_job().attempt == 1:
            raise jobq.Retry(timedelta(0), reason="rate limited")

    @app.task
    def cancel_me() -> None:
        raise jobq.Cancel("order was refunded")

    @app.task(max_attempts=1)
    def snooze_me() -> str:
        if jobq.current_job().attempt == 1:
            raise jobq.Snooze(timedelta(hours=2))
        return "late"

    r, c, s = retry_me.enqueue(), cancel_me.enqueue(), snooze_me.enqueue()
    burst(app)
    assert r.refresh().state is jobq.JobState.COMPLETED and r.attempt == 2
    assert r.errors[0].type == "Retry" and r.errors[0].message == "rate limited"
    assert c.refresh().state is jobq.JobState.CANCELLED
    assert c.errors[-1].message == "order was refunded"
    with pytest.raises(jobq.JobCancelled):
        c.wait(timeout=1)
    s.refresh()
    assert s.state is jobq.JobState.SCHEDULED and s.max_attempts == 2 and s.errors == ()
    assert s.run_at > datetime.now(UTC) + timedelta(minutes=119)


def test_current_job_outside_a_task() -> None:
    with pytest.raises(jobq.NoCurrentJob):
        jobq.current_job()


def test_current_job_inside_a_task(app: jobq.App) -> None:
    seen: dict[str, Any] = {}
    deadline = datetime.now(UTC) + timedelta(hours=1)

    @app.task
    def introspect() -> None:
        job = jobq.current_job()
        seen.update(id=job.id, attempt=job.attempt, deadline=job.deadline, task=job.task)

    job = introspect.options(deadline=deadline).enqueue()
    burst(app)
    assert seen == {"id": job.id, "attempt": 1, "deadline": deadline, "task": job.task}


def test_expired_deadline_is_not_run(app: jobq.App) -> None:
    ran: list[str] = []

    @app.task
    def strict(x: str) -> None:
        ran.append(x)

    @app.task(run_late=True)
    def lenient(x: str) -> None:
        ran.append(x)

    past = datetime.now(UTC) - timedelta(seconds=1)
    a = strict.options(deadline=past).enqueue("strict")
    b = lenient.options(deadline=past).enqueue("lenient")
    burst(app)
    assert ran == ["lenient"]
    assert a.refresh().state is jobq.JobState.EXPIRED
    assert a.errors[-1].type == "DeadlineExpired"
    with pytest.raises(jobq.JobExpired):
        a.wait(timeout=1)
    assert b.refresh().state is jobq.JobState.COMPLETED


def test_timeout_fails_the_attempt_and_frees_the_slot(app: jobq.App) -> None:
    release = threading.Event()
    ran: list[int] = []

    @app.task(timeout=timedelta(milliseconds=200), max_attempts=1)
    def hangs() -> None:
        release.wait(WAIT)

    @app.task
    def quick(i: int) -> None:
        ran.append(i)

    slow = hangs.enqueue()
    quick.enqueue_many([(i,) for i in range(5)])
    try:
        summary = burst(app, threads=1)
    finally:
        release.set()
    assert slow.refresh().state is jobq.JobState.DEAD
    assert slow.errors[-1].type == "Timeout" and "timeout" in slow.errors[-1].message
    assert sorted(ran) == [0, 1, 2, 3, 4]  # the single slot was given to a fresh thread
    assert summary.timed_out == 1


def test_unknown_task_goes_dead_and_worker_keeps_going(app: jobq.App) -> None:
    @app.task
    def fine() -> int:
        return 1

    unknown = app.enqueue("os.system", args=["echo pwned"])
    ok = fine.enqueue()
    burst(app)
    assert unknown.refresh().state is jobq.JobState.DEAD
    assert unknown.errors[-1].type == "UnknownTaskError"
    assert "not registered" in unknown.errors[-1].message
    assert ok.refresh().state is jobq.JobState.COMPLETED


def test_result_that_is_not_json_makes_job_dead(app: jobq.App) -> None:
    @app.task
    def returns_set() -> object:
        return {1, 2}

    job = returns_set.enqueue()
    burst(app)
    assert job.refresh().state is jobq.JobState.DEAD
    assert "cannot be stored" in job.errors[-1].message


def test_async_task_runs(app: jobq.App) -> None:
    @app.task
    async def double(x: int) -> int:
        return x * 2

    job = double.enqueue(21)
    burst(app)
    assert job.refresh().result() == 42


def test_sync_and_async_tasks_share_a_queue_and_async_ones_take_no_thread(
    app: jobq.App,
) -> None:
    import asyncio

    gate = asyncio.Event()
    waiting: list[int] = []
    loop_ref: list[asyncio.AbstractEventLoop] = []

    @app.task
    async def wait_together(i: int) -> int:
        loop_ref[:] = [asyncio.get_running_loop()]
        waiting.append(i)
        if len(waiting) == 20:
            gate.set()  # only if 20 run at once on one thread
        await asyncio.wait_for(gate.wait(), WAIT)
        return jobq.current_job().id

    @app.task
    def sync_one(i: int) -> int:
        return i

    async_jobs = wait_together.enqueue_many([(i,) for i in range(20)])
    sync_jobs = sync_one.enqueue_many([(i,) for i in range(20)])
    summary = burst(app, threads=1)  # one thread: the 20 async jobs must not need it
    assert summary.completed == 40
    assert [j.refresh().result() for j in async_jobs] == [j.id for j in async_jobs]
    assert [j.refresh().result() for j in sync_jobs] == list(range(20))


def test_async_limit_bounds_concurrency(app: jobq.App) -> None:
    import asyncio

    running = [0]
    peak = [0]

    @app.task
    async def tick() -> None:
        running[0] += 1
        peak[0] = max(peak[0], running[0])
        await asyncio.sleep(0.01)
        running[0] -= 1

    tick.enqueue_many([()] * 30)
    # several threads meet the first async jobs together: still one loop, one limit
    assert burst(app, threads=4, async_limit=3).completed == 30
    assert 1 <= peak[0] <= 3


def test_async_timeout_cancels_the_coroutine(app: jobq.App) -> None:
    import asyncio

    cancelled = threading.Event()

    @app.task(timeout=timedelta(milliseconds=100), max_attempts=1)
    async def too_slow() -> None:
        try:
            await asyncio.sleep(WAIT)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    job = too_slow.enqueue()
    summary = burst(app)
    assert cancelled.is_set()  # really stopped, not abandoned
    assert job.refresh().state is jobq.JobState.DEAD and job.errors[-1].type == "Timeout"
    assert summary.timed_out == 0  # no thread was abandoned


def test_cancelling_a_running_async_job_stops_it(app: jobq.App) -> None:
    import asyncio

    started, cancelled = threading.Event(), threading.Event()

    @app.task
    async def long_poll() -> None:
        started.set()
        try:
            await asyncio.sleep(WAIT)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    job = long_poll.enqueue()
    bg = Background(app, threads=1, lease=1)  # heartbeat every 1/3 s notices the cancel
    assert started.wait(WAIT)
    assert job.cancel() is True
    assert cancelled.wait(WAIT), "the coroutine of a cancelled job kept running"
    bg.stop()
    assert job.refresh().state is jobq.JobState.CANCELLED


def test_idle_worker_wakes_for_a_new_job(app: jobq.App) -> None:
    done = threading.Event()

    @app.task
    def ping() -> None:
        done.set()

    @app.task
    def warm_up() -> None: ...

    bg = Background(app, poll_interval=3600)
    warm_up.enqueue().wait(timeout=WAIT)  # the worker has claimed once and gone idle again
    ping.enqueue()
    assert done.wait(WAIT), "an idle worker did not wake for a local enqueue"
    bg.stop()


def test_graceful_stop_lets_running_job_finish(app: jobq.App) -> None:
    started, release = threading.Event(), threading.Event()

    @app.task
    def long_job() -> str:
        started.set()
        release.wait(WAIT)
        return "finished"

    @app.task
    def later() -> None: ...

    job = long_job.enqueue()
    bg = Background(app, threads=1)
    assert started.wait(WAIT)
    queued = later.enqueue()
    bg.worker.stop()
    release.set()
    summary = bg.stop()
    assert job.refresh().state is jobq.JobState.COMPLETED and job.result() == "finished"
    assert queued.refresh().state is jobq.JobState.AVAILABLE and queued.attempt == 0
    assert summary.outcomes.get(OutcomeKind.COMPLETED) == 1


def test_grace_period_over_releases_running_job(app: jobq.App) -> None:
    started, release = threading.Event(), threading.Event()

    @app.task
    def stuck() -> None:
        started.set()
        release.wait(WAIT)

    job = stuck.enqueue()
    bg = Background(app, threads=1, grace=0.1)
    assert started.wait(WAIT)
    summary = bg.stop()
    release.set()
    job.refresh()
    assert job.state is jobq.JobState.AVAILABLE and job.attempt == 0
    assert summary.released == 1


def test_cancel_and_manual_retry_through_the_app(app: jobq.App) -> None:
    @app.task(max_attempts=1)
    def fails() -> None:
        raise ValueError("x")

    queued = app.enqueue("t", delay=60)
    assert queued.cancel() is True and queued.state is jobq.JobState.CANCELLED
    assert queued.cancel() is False
    job = fails.enqueue()
    burst(app)
    assert job.refresh().state is jobq.JobState.DEAD
    again = app.retry(job.id)
    assert again.state is jobq.JobState.AVAILABLE and again.max_attempts == 2
    burst(app)
    assert job.refresh().state is jobq.JobState.DEAD and job.attempt == 2
    with pytest.raises(jobq.JobNotFound):
        app.get_job(987_654)
    with pytest.raises(jobq.JobNotFound):
        app.retry("7")  # type: ignore[arg-type]


def test_weighted_queue_order_follows_weights() -> None:
    firsts = [_weighted_order(["a", "b"], {"a": 3, "b": 1})[0] for _ in range(4000)]
    share = firsts.count("a") / len(firsts)
    assert 0.65 < share < 0.85  # 0.75 expected; 4000 draws keep this far from flaky
    assert sorted(_weighted_order(["a", "b", "c"], {"a": 1})) == ["a", "b", "c"]


def test_weighted_worker_serves_every_queue(app: jobq.App) -> None:
    ran: list[str] = []

    @app.task
    def job(q: str) -> None:
        ran.append(q)

    for q in ("high", "low"):
        job.options(queue=q).enqueue_many([(q,)] * 5)
    burst(app, queues=["high", "low"], weights={"high": 3, "low": 1})
    assert sorted(ran) == ["high"] * 5 + ["low"] * 5


def test_bad_worker_configuration(app: jobq.App) -> None:
    with pytest.raises(jobq.ConfigurationError, match="threads"):
        app.worker(threads=0)
    with pytest.raises(jobq.ConfigurationError, match="lease"):
        app.worker(lease=0.1)
    with pytest.raises(jobq.ConfigurationError, match="invalid queue name"):
        app.worker(queues=["bad queue"])
    with pytest.raises(jobq.ConfigurationError, match="weight"):
        app.worker(queues=["a"], weights={"b": 2})


def test_recycles_after_max_jobs(app: jobq.App) -> None:
    @app.task
    def noop(i: int) -> None: ...

    noop.enqueue_many([(i,) for i in range(30)])
    summary = burst(app, threads=2, max_jobs=10)
    assert summary.exit_reason == "recycle" and "max_jobs=10" in summary.recycle_reason
    assert 10 <= summary.finished < 30  # stopped claiming, finished what it held
    stats = app.stats()["default"]
    assert stats.get(jobq.JobState.RUNNING, 0) == 0
    assert stats[jobq.JobState.COMPLETED] + stats[jobq.JobState.AVAILABLE] == 30


def test_recycles_when_memory_is_over_the_limit(app: jobq.App) -> None:
    @app.task
    def noop() -> None: ...

    noop.enqueue()
    summary = burst(app, max_memory_mb=1)  # any Python process uses more than 1 MiB
    assert summary.exit_reason == "recycle" and "max_memory_mb=1" in summary.recycle_reason


def test_recycles_when_a_timed_out_thread_stays_stuck(app: jobq.App) -> None:
    release = threading.Event()

    @app.task(timeout=timedelta(milliseconds=100), max_attempts=1)
    def hangs() -> None:
        release.wait(WAIT)

    job = hangs.enqueue()
    bg = Background(app, threads=1, stuck_grace=0.2)
    try:
        bg.thread.join(WAIT)
        assert not bg.thread.is_alive()
        assert bg.summary is not None and bg.summary.exit_reason == "recycle"
        assert "stuck" in bg.summary.recycle_reason
        assert job.refresh().state is jobq.JobState.DEAD
        assert job.errors[-1].type == "Timeout"
    finally:
        release.set()


def test_burst_exit_reason(app: jobq.App) -> None:
    assert burst(app).exit_reason == "burst"


def test_limits_are_validated(app: jobq.App) -> None:
    with pytest.raises(jobq.ConfigurationError, match="max_jobs"):
        app.worker(max_jobs=0)
    with pytest.raises(jobq.ConfigurationError, match="max_memory_mb"):
        app.worker(max_memory_mb=-5)
    with pytest.raises(jobq.ConfigurationError, match="async_limit"):
        app.worker(async_limit=0)


def test_running_worker_is_registered_and_leaves_on_stop(app: jobq.App) -> None:
    @app.task
    def noop() -> None: ...

    bg = Background(app, threads=3, queues=["default", "mail"])
    noop.enqueue().wait(timeout=WAIT)
    (info,) = app.backend.list_workers()
    assert info.id == bg.worker.worker_id and info.pid == os.getpid()
    assert info.queues == ("default", "mail") and info.threads == 3
    assert info.alive(app.backend.now(), timedelta(seconds=30))
    bg.stop()
    assert app.backend.list_workers() == []


def test_autoscaling_adds_threads_for_a_backlog_and_retires_idle_ones(app: jobq.App) -> None:
    together = threading.Barrier(4, timeout=WAIT)  # passes only with 4 threads at once

    @app.task
    def needs_four() -> None:
        together.wait()

    bg = Background(app, threads=4, min_threads=1, scale_down_after=0.2)
    assert bg.worker.thread_count == 1
    jobs = needs_four.enqueue_many([()] * 8)
    for job in jobs:
        job.wait(timeout=WAIT)
    wait_for(lambda: bg.worker.thread_count == 1)  # idle threads retire, down to the minimum
    bg.stop()


def test_bad_autoscaling_configuration(app: jobq.App) -> None:
    with pytest.raises(jobq.ConfigurationError, match="min_threads"):
        app.worker(threads=4, min_threads=5)
    with pytest.raises(jobq.ConfigurationError, match="min_threads"):
        app.worker(threads=4, min_threads=0)
