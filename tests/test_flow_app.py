"""Flow control through the App and a real worker, on every backend: unique jobs, dependencies
and groups, concurrency limits, paused queues, backpressure, cooperative and hard cancellation,
progress, secrets, retention. The backend-level contract (races included) is in
``tests/conformance/test_flow_control.py``; here the user-facing API is checked end to end.
Tests wait on events and conditions, never on fixed sleeps."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

import jobq
from jobq.cli.render import job_to_dict
from tests.test_worker import WAIT, Background, burst, wait_for


@pytest.fixture
def app(app_url: str) -> Iterator[jobq.App]:
    a = jobq.App(app_url)
    yield a
    a.close()


@pytest.fixture
def mem() -> Iterator[jobq.App]:
    a = jobq.App("memory://")
    yield a
    a.close()


# -- refused at definition or enqueue, nothing written ---------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"concurrency_limit": 0}, "concurrency_limit must be an int from 1"),
        ({"concurrency_limit": -3}, "concurrency_limit must be an int from 1"),
        ({"concurrency_key": "customer"}, "concurrency_key needs concurrency_limit"),
        ({"concurrency_key": 7, "concurrency_limit": 1}, "concurrency_key must be"),
        ({"rate_limit": "ten/s"}, "rate_limit must look like"),
        ({"rate_limit": "0/s"}, "rate_limit must be an int from 1"),
        ({"rate_limit": (5, -1)}, "rate_limit period must be"),
        ({"rate_key": "k"}, "rate_key needs rate_limit"),
        ({"secret": [None]}, "secret names kwargs"),
        ({"secret": [-1]}, "secret positional index must be >= 0"),
    ],
)
def test_bad_task_options_are_refused_at_definition(
    mem: jobq.App, kwargs: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(jobq.ConfigurationError, match=fragment):
        mem.task(name="t", **kwargs)(lambda: None)


@pytest.mark.parametrize(
    ("options", "error", "fragment"),
    [
        ({"on_conflict": "ignore", "unique_key": "k"}, jobq.InvalidJobError, "on_conflict must"),
        ({"on_conflict": "skip"}, jobq.InvalidJobError, "need a unique_key"),
        ({"unique_window": 60}, jobq.InvalidJobError, "need a unique_key"),
        ({"unique_key": "k", "unique_window": -1}, jobq.InvalidJobError, "unique_window must"),
        ({"concurrency_limit": -1}, jobq.InvalidJobError, "concurrency_limit must be"),
        ({"concurrency_key": "c"}, jobq.InvalidJobError, "needs a concurrency_limit"),
        ({"rate_limit": "5/0s"}, jobq.InvalidJobError, "period must be positive"),
        ({"depends_on": "12"}, jobq.InvalidJobError, "depends_on must be a list"),
        ({"depends_on": [0]}, jobq.InvalidJobError, "is not a job or a job id"),
        ({"depends_on": [True]}, jobq.InvalidJobError, "is not a job or a job id"),
        ({"depends_on": [10_000]}, jobq.DependencyError, "job 10000, which does not exist"),
    ],
)
def test_bad_call_options_are_refused_with_nothing_written(
    app: jobq.App, options: dict[str, Any], error: type[Exception], fragment: str
) -> None:
    @app.task(name="t")
    def t() -> None: ...

    with pytest.raises(error, match=fragment):
        t.options(**options).enqueue()
    assert app.stats() == {}


def test_admin_calls_refuse_bad_values(mem: jobq.App) -> None:
    with pytest.raises(jobq.ConfigurationError, match="max_depth must be an int >= 1"):
        mem.set_max_depth("q", 0)
    with pytest.raises(jobq.ConfigurationError, match="invalid queue name"):
        mem.pause_queue("bad name;")
    with pytest.raises(jobq.ConfigurationError, match="needs a filter"):
        mem.cancel_many()
    with pytest.raises(jobq.ConfigurationError, match="is finished already"):
        mem.cancel_many(state="dead")
    with pytest.raises(jobq.ConfigurationError, match="is not finished"):
        mem.retry_many(state="running")
    with pytest.raises(jobq.ConfigurationError, match="finished jobs only"):
        mem.prune(states=["available"])
    with pytest.raises(jobq.ConfigurationError, match="not a finished state"):
        jobq.App("memory://", retention={"running": timedelta(days=1)})
    with pytest.raises(jobq.ConfigurationError, match="retention_count must be"):
        jobq.App("memory://", retention_count=-1)


# -- unique jobs, dependencies, groups ---------------------------------------------------------


def test_unique_skip_returns_the_holder_and_raise_refuses(app: jobq.App) -> None:
    @app.task(name="sync")
    def sync(customer: int) -> None: ...

    first = sync.options(unique_key="sync:7").enqueue(7)
    again = sync.options(unique_key="sync:7").enqueue(7)
    assert again.id == first.id
    with pytest.raises(jobq.UniqueConflict, match="sync:7"):
        sync.options(unique_key="sync:7", on_conflict="raise").enqueue(7)
    replaced = sync.options(unique_key="sync:7", on_conflict="replace", priority=5).enqueue(8)
    assert replaced.id == first.id
    assert replaced.refresh().args == [8] and replaced.priority == 5
    assert sum(app.stats()["default"].values()) == 1


def test_dependent_runs_only_after_its_dependencies_complete(app: jobq.App) -> None:
    ran: list[str] = []
    release = threading.Event()

    @app.task(name="step")
    def step(name: str) -> str:
        if name == "extract":
            assert release.wait(WAIT)
        ran.append(name)
        return name

    extract = step.enqueue("extract")
    other = step.enqueue("other")
    load = step.options(depends_on=[extract, other.id]).enqueue("load")
    assert load.state is jobq.JobState.BLOCKED and load.depends_on == (extract.id, other.id)
    bg = Background(app, threads=2)
    try:
        wait_for(lambda: "other" in ran)
        assert load.refresh().state is jobq.JobState.BLOCKED
        release.set()
        assert load.wait(WAIT) == "load"
    finally:
        bg.stop()
    assert ran.index("load") > ran.index("extract")


def test_failed_dependency_cancels_dependents_unless_allow_failed(app: jobq.App) -> None:
    @app.task(name="boom", max_attempts=1)
    def boom() -> None:
        raise RuntimeError("no")

    @app.task(name="after")
    def after() -> str:
        return "ran"

    failing = boom.enqueue()
    strict = after.options(depends_on=[failing]).enqueue()
    chained = after.options(depends_on=[strict]).enqueue()
    lenient = after.options(depends_on=[failing], allow_failed=True).enqueue()
    burst(app, threads=2)
    for job in (strict, chained):
        job.refresh()
        assert job.state is jobq.JobState.CANCELLED
        assert job.errors[-1].type == "DependencyFailed"
    assert lenient.wait(WAIT) == "ran"
    with pytest.raises(jobq.JobCancelled, match="dependency"):
        strict.wait(1)


def test_group_waits_for_all_and_runs_its_callbacks(app: jobq.App) -> None:
    done: list[str] = []

    @app.task(name="square")
    def square(x: int) -> int:
        if x < 0:
            raise ValueError("negative")
        return x * x

    @app.task(name="report")
    def report(kind: str) -> None:
        done.append(kind)

    ok = app.group(
        [square.call(i) for i in range(5)],
        on_complete=report.call("complete"),
        on_success=report.call("success"),
    )
    assert len(ok.jobs) == 5 and ok.on_complete is not None and ok.on_success is not None
    assert ok.on_complete.state is jobq.JobState.BLOCKED
    bad = app.group(
        [square.call(2), square.options(max_attempts=1).call(-1)],
        on_complete=report.call("bad-complete"),
        on_success=report.call("bad-success"),
    )
    burst(app, threads=2)
    assert ok.wait(WAIT) == [0, 1, 4, 9, 16]
    assert sorted(done) == ["bad-complete", "complete", "success"]
    with pytest.raises(jobq.JobFailed, match="negative"):
        bad.wait(WAIT)
    assert bad.on_success is not None
    assert bad.on_success.refresh().state is jobq.JobState.CANCELLED
    assert bad.counts() == {"completed": 1, "dead": 1}


def test_group_refuses_bad_items_and_writes_nothing(app: jobq.App) -> None:
    @app.task(name="t")
    def t(x: int) -> None: ...

    with pytest.raises(jobq.InvalidJobError, match="at least one call"):
        app.group([])
    with pytest.raises(jobq.InvalidJobError, match=r"task.call\(...\) values"):
        app.group([t.call(1), 42])  # type: ignore[list-item]
    with pytest.raises(jobq.PayloadError):
        app.group([t.call(1), t.call({1, 2})])  # type: ignore[arg-type]
    assert app.stats() == {}


# -- limits, paused queues, backpressure -------------------------------------------------------


def test_concurrency_limit_holds_with_more_threads_than_the_limit(app: jobq.App) -> None:
    lock = threading.Lock()
    running = peak = 0

    @app.task(name="export", concurrency_limit=2)
    def export(i: int) -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.02)  # the work; overlap is what is being measured
        with lock:
            running -= 1

    export.enqueue_many([(i,) for i in range(12)])
    summary = burst(app, threads=6)
    assert summary.completed == 12
    assert peak <= 2


def test_concurrency_key_function_gives_each_customer_its_own_limit(mem: jobq.App) -> None:
    @mem.task(
        name="sync",
        concurrency_limit=1,
        concurrency_key=lambda args, kwargs: f"customer:{kwargs['customer']}",
    )
    def sync(customer: int) -> None: ...

    a = sync.enqueue(customer=1)
    b = sync.options(concurrency_key="override").enqueue(customer=2)
    assert a.record.concurrency_key == "customer:1"
    assert b.record.concurrency_key == "override"


def test_paused_queue_waits_until_resumed(app: jobq.App) -> None:
    @app.task(name="mail", queue="mail")
    def mail() -> str:
        return "sent"

    @app.task(name="bill", queue="bill")
    def bill() -> str:
        return "billed"

    app.pause_queue("mail")
    assert app.queues()["mail"].paused
    m, b = mail.enqueue(), bill.enqueue()
    bg = Background(app, queues=["mail", "bill"], threads=2)
    try:
        assert b.wait(WAIT) == "billed"
        assert m.refresh().state is jobq.JobState.AVAILABLE
        app.resume_queue("mail")
        assert m.wait(WAIT) == "sent"
    finally:
        bg.stop()
    assert not app.queues()["mail"].paused


def test_full_queue_raises_or_waits_for_room(app: jobq.App) -> None:
    @app.task(name="t", queue="spiky")
    def t(i: int) -> None: ...

    app.set_max_depth("spiky", 2)
    t.enqueue(1)
    with pytest.raises(jobq.QueueFull, match="'spiky' is full"):
        t.enqueue_many([(2,), (3,)])
    t.enqueue(2)
    with pytest.raises(jobq.QueueFull, match="max_depth of 2"):
        t.enqueue(3)
    assert app.stats()["spiky"][jobq.JobState.AVAILABLE] == 2

    got: list[jobq.Job] = []
    waiter = threading.Thread(target=lambda: got.append(t.options(wait_if_full=WAIT).enqueue(3)))
    waiter.start()
    bg = Background(app, queues=["spiky"], threads=1)
    try:
        waiter.join(WAIT)
        assert got, "enqueue with wait_if_full did not get in once the worker made room"
    finally:
        bg.stop()
    app.set_max_depth("spiky", None)
    assert app.queues()["spiky"].max_depth is None


# -- cancellation, progress --------------------------------------------------------------------


def test_running_job_sees_cancel_requested_and_stops(app: jobq.App) -> None:
    started = threading.Event()
    saw: list[bool] = []

    @app.task(name="long")
    def long() -> None:
        job = jobq.current_job()
        started.set()
        while not job.wait_cancelled(0.05):
            pass
        saw.append(job.cancel_requested)

    job = long.enqueue()
    bg = Background(app, threads=1)
    try:
        assert started.wait(WAIT)
        assert job.cancel()
        wait_for(lambda: saw == [True])
    finally:
        summary = bg.stop()
    assert job.refresh().state is jobq.JobState.CANCELLED
    assert summary.lost_leases == 1


def test_thread_ignoring_cancel_is_hard_stopped_and_the_worker_goes_on(app: jobq.App) -> None:
    started = threading.Event()
    caught: list[type[BaseException]] = []

    @app.task(name="stubborn")
    def stubborn() -> None:
        started.set()
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:  # never looks at cancel_requested
                pass
        except BaseException as exc:
            caught.append(type(exc))
            raise

    @app.task(name="next")
    def next_() -> str:
        return "ran"

    job = stubborn.enqueue()
    bg = Background(app, threads=1, cancel_grace=0.2)
    try:
        assert started.wait(WAIT)
        job.cancel()
        wait_for(lambda: caught == [jobq.Cancelled])
        assert next_.enqueue().wait(WAIT) == "ran"
    finally:
        bg.stop()


def test_async_task_is_cancelled_at_its_next_await(app: jobq.App) -> None:
    started = threading.Event()
    caught: list[str] = []

    @app.task(name="poll")
    async def poll() -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        except jobq.Cancelled:
            caught.append("cancelled")
            raise

    job = poll.enqueue()
    bg = Background(app, threads=1)
    try:
        assert started.wait(WAIT)
        job.cancel()
        wait_for(lambda: caught == ["cancelled"])
    finally:
        bg.stop()


def test_progress_is_readable_from_the_handle_while_running(app: jobq.App) -> None:
    release = threading.Event()

    @app.task(name="import")
    def import_rows() -> None:
        job = jobq.current_job()
        for i in range(1, 5):
            job.set_progress(i / 8, f"row {i} of 8")
        assert release.wait(WAIT)

    job = import_rows.enqueue()
    bg = Background(app, threads=1)
    try:
        wait_for(lambda: job.refresh().progress == 0.5)
        assert job.progress_message == "row 4 of 8"
        assert job_to_dict(job)["progress"] == 0.5
    finally:
        release.set()
        bg.stop()


def test_set_progress_refuses_bad_values(mem: jobq.App) -> None:
    errors: list[str] = []

    @mem.task(name="p")
    def p() -> None:
        job = jobq.current_job()
        for bad in (1.5, -0.1, float("nan"), "half", True):
            try:
                job.set_progress(bad)  # type: ignore[arg-type]
            except jobq.InvalidJobError as exc:
                errors.append(str(exc))

    p.enqueue()
    burst(mem)
    assert len(errors) == 5 and all("from 0 to 1" in e for e in errors)


# -- secrets, bulk actions, retention ----------------------------------------------------------


def test_secret_arguments_are_redacted_in_errors_and_displays(app: jobq.App) -> None:
    @app.task(name="login", secret=["password"], max_attempts=1)
    def login(user: str, password: str) -> None:
        raise PermissionError(f"wrong password {password!r} for {user}")

    job = login.enqueue("ann", password="hunter2-secret")
    by_position = login.enqueue("bob", "hunter3-secret")
    burst(app)
    job.refresh()
    assert job.record.secret == ("1", "password")  # the name, and its position
    assert job_to_dict(by_position)["args"] == ["bob", "***"]
    assert "hunter3-secret" not in by_position.refresh().errors[-1].message
    assert job.kwargs["password"] == "hunter2-secret"  # the task still gets it
    err = job.errors[-1]
    assert "hunter2-secret" not in err.message and "***" in err.message
    assert err.traceback is None or "hunter2-secret" not in err.traceback
    shown = job_to_dict(job)
    assert shown["kwargs"] == {"password": "***"} and shown["args"] == ["ann"]
    # a text search cannot be used to confirm a secret value
    assert app.list_jobs(search="hunter2") == []
    assert [j.id for j in app.list_jobs(search="ann")] == [job.id]


def test_bulk_cancel_retry_and_delete(app: jobq.App) -> None:
    @app.task(name="a", queue="qa", max_attempts=1)
    def a() -> None:
        raise RuntimeError("x")

    @app.task(name="b", queue="qb")
    def b() -> None: ...

    dead = [a.enqueue() for _ in range(3)]
    burst(app, queues=["qa"])
    waiting = [b.enqueue() for _ in range(4)]
    assert app.cancel_many(queue="qb") == 4
    assert all(j.refresh().state is jobq.JobState.CANCELLED for j in waiting)
    assert app.retry_many(queue="qa") == 3
    assert all(j.refresh().state is jobq.JobState.AVAILABLE for j in dead)
    assert app.delete(dead[0].id)
    assert not app.delete(dead[0].id)
    with pytest.raises(jobq.JobNotFound):
        app.get_job(dead[0].id)


def test_retention_by_state_and_count(app_url: str) -> None:
    app = jobq.App(
        app_url,
        retention={"completed": timedelta(0), "dead": None},
        retention_count=1,
    )
    try:

        @app.task(name="ok")
        def ok() -> None: ...

        @app.task(name="bad", max_attempts=1)
        def bad() -> None:
            raise RuntimeError("x")

        for _ in range(3):
            ok.enqueue()
            bad.enqueue()
        burst(app, threads=1)
        worker = app.worker(threads=1)
        worker._prune()
        stats = app.stats()["default"]
        assert jobq.JobState.COMPLETED not in stats  # age 0: all gone
        assert stats[jobq.JobState.DEAD] == 1  # kept forever by age, but only 1 by count
    finally:
        app.close()


# -- periodic jobs and locks through the App ---------------------------------------------------


def test_worker_leader_enqueues_due_ticks_of_app_periodic(app: jobq.App) -> None:
    ran: list[str] = []

    @app.periodic("*/5 * * * *", name="rates", tick_kwarg="tick")
    def refresh_rates(tick: str) -> None:
        ran.append(tick)

    schedule = app.scheduler.schedules["rates"]
    now = app.backend.now()
    last = schedule.cron.last_at_or_before(now - timedelta(minutes=20))
    assert last is not None
    # the store says the schedule last ran 20+ minutes ago: the latest missed tick is due now
    app.backend.enqueue_tick("rates", last, schedule.build(last))
    app.backend.cancel_many(jobq.backends.JobFilter(queue="default"))
    bg = Background(app, threads=1)
    try:
        wait_for(lambda: len(ran) == 1)
    finally:
        bg.stop()
    assert app.backend.cron_ticks()["rates"] > last
    with pytest.raises(jobq.ConfigurationError, match="hour field"):
        app.periodic("0 25 * * *", task=refresh_rates)


def test_app_lock_excludes_a_second_holder(app: jobq.App) -> None:
    with app.lock("import:customer-7", ttl=30) as lock:
        assert lock.token >= 1
        with pytest.raises(jobq.LockTimeout), app.lock("import:customer-7", ttl=30, wait=0):
            pass
    with app.lock("import:customer-7", ttl=30, wait=0) as again:
        assert again.token > lock.token
