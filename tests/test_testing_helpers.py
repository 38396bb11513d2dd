"""jobq.testing: drain inline and assert what was enqueued."""

from __future__ import annotations

from datetime import timedelta

import pytest

import jobq
from jobq import testing


@pytest.fixture
def app() -> jobq.App:
    return jobq.App("memory://")


def test_drain_runs_everything_including_jobs_enqueued_by_jobs(app: jobq.App) -> None:
    seen: list[int] = []

    @app.task
    def child(i: int) -> None:
        seen.append(i)

    @app.task
    def parent(n: int) -> None:
        child.enqueue_many([(i,) for i in range(n)])

    parent.enqueue(3)
    result = testing.drain(app)
    assert result.completed == 4 and sorted(seen) == [0, 1, 2]
    assert app.stats() == {"default": {jobq.JobState.COMPLETED: 4}}


def test_drain_with_scheduled_retries_until_done(app: jobq.App) -> None:
    attempts: list[int] = []

    @app.task(max_attempts=3)
    def flaky() -> None:
        attempts.append(jobq.current_job().attempt)
        if len(attempts) < 3:
            raise RuntimeError("again")

    job = flaky.enqueue()
    assert testing.drain(app).failed == 1  # the retry waits for its backoff
    assert job.refresh().state is jobq.JobState.SCHEDULED
    result = testing.drain(app, with_scheduled=True)
    assert result.completed == 1 and attempts == [1, 2, 3]


def test_drain_only_given_queues(app: jobq.App) -> None:
    a = app.enqueue("x", queue="a")
    b = app.enqueue("x", queue="b")
    testing.drain(app, ["a"])
    assert a.refresh().state is jobq.JobState.DEAD  # unknown task 'x'
    assert b.refresh().state is jobq.JobState.AVAILABLE


def test_drain_stops_a_job_that_enqueues_itself_forever(app: jobq.App) -> None:
    @app.task
    def forever() -> None:
        forever.enqueue()

    forever.enqueue()
    with pytest.raises(AssertionError, match="re-enqueueing itself"):
        testing.drain(app, max_jobs=50)


def test_assert_and_refute_enqueued(app: jobq.App) -> None:
    @app.task(queue="mail")
    def send(order_id: int, to: str) -> None: ...

    send.enqueue(42, "a@example.com")
    send.options(delay=timedelta(hours=1)).enqueue(43, to="b@example.com")
    (job,) = testing.assert_enqueued(app, send, args=[42, "a@example.com"])
    assert job.queue == "mail"
    testing.assert_enqueued(
        app,
        "tests.test_testing_helpers.test_assert_and_refute_enqueued.<locals>.send",
        kwargs={"to": "b@example.com"},
    )
    testing.assert_enqueued(app, send, count=2)
    testing.refute_enqueued(app, send, args=[44, "c@example.com"])
    with pytest.raises(AssertionError, match=r"found 0\. Queued jobs:\n  <Job"):
        testing.assert_enqueued(app, send, args=[99, "x"])
    with pytest.raises(AssertionError, match="expected 1 queued"):
        testing.assert_enqueued(app, send, count=1)
    with pytest.raises(AssertionError, match="expected no queued job"):
        testing.refute_enqueued(app, send, queue="mail")
