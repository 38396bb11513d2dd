"""Periodic jobs: schedules, the missed-run policy, exactly-once ticks across schedulers (threads
and processes, on every backend), and ``jobq cron list``."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from jobq import ConfigurationError
from jobq.backends import Backend, JobFilter
from jobq.cli.cron import cmd_cron_list, cron_entries
from jobq.cron import Cron
from jobq.job import JobRecord
from jobq.options import JobOptions, TaskDefaults
from jobq.periodic import Periodic, Scheduler
from jobq.states import JobState
from tests.conftest import T0, Clock, fresh_schema

MIN = timedelta(minutes=1)
WAIT = 120.0


def every5(**kw: object) -> Periodic:
    return Periodic("every5", "*/5 * * * *", "reports.send", **kw)  # type: ignore[arg-type]


def jobs(backend: Backend) -> list[JobRecord]:
    return sorted(backend.list_jobs(JobFilter(), limit=10_000), key=lambda r: r.id)


def tick_of(record: JobRecord) -> datetime:
    (tag,) = [t for t in record.tags if t.startswith("cron-tick:")]
    return datetime.strptime(tag.removeprefix("cron-tick:"), "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=UTC
    )


# -- definitions ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"name": ""}, "invalid periodic schedule name ''"),
        ({"name": "x" * 96}, "1-95 characters"),
        ({"name": "bad name"}, "invalid periodic schedule name 'bad name'"),
        ({"cron": "*/5 25 * * *"}, "hour field '25'"),
        ({"cron": "* * * * *", "timezone": "Nowhere/City"}, "unknown timezone"),
        ({"task": "1bad"}, "invalid task name '1bad'"),
        ({"args": "abc"}, "args must be a list or tuple"),
        ({"kwargs": [1]}, "kwargs must be a dict"),
        ({"args": [object()]}, "periodic schedule 'p'"),
        ({"args": [(1, 2)]}, "periodic schedule 'p'"),
        ({"missed": "all"}, "missed='all' is not a policy"),
        ({"catch_up_limit": -1}, "catch_up_limit must be an int from 0 to 1000"),
        ({"catch_up_limit": True}, "catch_up_limit"),
        ({"tick_kwarg": "not valid"}, "tick_kwarg must be a parameter name"),
        ({"tick_kwarg": "at", "kwargs": {"at": 1}}, "kwargs already has 'at'"),
        ({"options": JobOptions(queue="bad queue")}, "invalid queue name"),
        ({"options": JobOptions(run_at=T0)}, "run_at and deadline are fixed instants"),
        ({"options": JobOptions(deadline=T0)}, "use delay"),
        ({"options": JobOptions(priority=10**9)}, "priority"),
        ({"cron": Cron.parse("@daily", "Europe/Berlin"), "timezone": "UTC"}, "conflicts"),
    ],
)
def test_bad_definitions_are_refused(kwargs: dict[str, object], fragment: str) -> None:
    fields: dict[str, object] = {"name": "p", "cron": "@hourly", "task": "t"}
    fields.update(kwargs)
    with pytest.raises(ConfigurationError) as exc:
        Periodic(**fields)  # type: ignore[arg-type]
    assert fragment in str(exc.value), str(exc.value)


def test_the_job_of_a_tick() -> None:
    p = Periodic(
        "nightly",
        "0 3 * * *",
        "reports.send",
        args=[1, "a"],
        kwargs={"to": "ops"},
        options=JobOptions(priority=5, tags=["reports"]),
        timezone="Europe/Berlin",
        tick_kwarg="scheduled_for",
        defaults=TaskDefaults(queue="reports", max_attempts=7),
    )
    job = p.build(datetime(2030, 1, 2, 2, tzinfo=UTC))
    assert (job.task, job.queue, job.priority, job.max_attempts) == (
        "reports.send",
        "reports",
        5,
        7,
    )
    assert json.loads(job.args_json) == [1, "a"]
    assert json.loads(job.kwargs_json) == {
        "to": "ops",
        "scheduled_for": "2030-01-02T02:00:00+00:00",
    }
    assert job.tags == ("reports", "cron:nightly", "cron-tick:2030-01-02T02:00:00Z")
    assert p.cron == Cron.parse("0 3 * * *", "Europe/Berlin")
    plain = every5().build(T0)
    assert json.loads(plain.kwargs_json) == {} and plain.queue == "default"


def test_missed_policies() -> None:
    now = T0 + timedelta(minutes=62)  # ticks due after T0: :05 ... 1:00 (12 of them)
    assert every5().due_ticks(T0, now) == [T0 + 60 * MIN]
    assert every5(missed="catch_up", catch_up_limit=0).due_ticks(T0, now) == [T0 + 60 * MIN]
    # at most 3 missed ticks, the most recent ones, oldest first, then the latest
    got = every5(missed="catch_up", catch_up_limit=3).due_ticks(T0, now)
    assert got == [T0 + m * MIN for m in (45, 50, 55, 60)]
    # fewer missed than the limit: all of them
    got = every5(missed="catch_up", catch_up_limit=100).due_ticks(T0, now)
    assert got == [T0 + m * MIN for m in range(5, 61, 5)]
    assert every5().due_ticks(T0 + 60 * MIN, now) == []
    assert every5().due_ticks(T0, T0 + 4 * MIN) == []
    # a huge outage is cheap: the limit bounds the work
    far = T0 + timedelta(days=365)
    got = Periodic("m", "* * * * *", "t", missed="catch_up", catch_up_limit=2).due_ticks(T0, far)
    assert got == [far - 2 * MIN, far - MIN, far]


def test_scheduler_registry_and_next_wakeup() -> None:
    s = Scheduler()
    assert s.next_wakeup(T0) is None
    p = s.add(every5())
    s.add(p)  # the same object again: fine
    with pytest.raises(ConfigurationError, match="already registered"):
        s.add(Periodic("every5", "@daily", "other"))
    s.add(Periodic("hourly", "@hourly", "other"))
    assert set(s.schedules) == {"every5", "hourly"}
    assert s.next_wakeup(T0 + 2 * MIN) == T0 + 5 * MIN
    s.remove("every5")
    assert s.next_wakeup(T0 + 2 * MIN) == T0 + 60 * MIN


def test_never_run_schedules_start_from_first_sight() -> None:
    s = Scheduler([every5()])
    assert s.due({}, T0 + 2 * MIN) == []  # first seen at :02; :00 is history
    assert [t for _, t in s.due({}, T0 + 5 * MIN)] == [T0 + 5 * MIN]
    # a stored tick wins over first sight
    assert [t for _, t in s.due({"every5": T0 - 60 * MIN}, T0 + 6 * MIN)] == [T0 + 5 * MIN]


# -- against every backend -----------------------------------------------------------------------


def test_ticks_are_enqueued_once_on_every_backend(backend: Backend, clock: Clock) -> None:
    s = Scheduler([every5(tick_kwarg="at"), Periodic("hourly", "@hourly", "cleanup")])
    assert s.tick(backend, now=clock.now) == []  # never ran: starts from here
    assert backend.cron_ticks() == {}
    fired = s.tick(backend, now=clock.advance(5 * 60))
    assert [(f.name, f.tick) for f in fired] == [("every5", T0 + 5 * MIN)]
    (job,) = jobs(backend)
    assert job.id == fired[0].job.id and job.task == "reports.send"
    assert job.state is JobState.AVAILABLE
    assert job.kwargs == {"at": "2030-01-01T00:05:00+00:00"}
    assert "cron:every5" in job.tags and tick_of(job) == T0 + 5 * MIN
    assert backend.cron_ticks() == {"every5": T0 + 5 * MIN}
    assert s.tick(backend, now=clock.now) == []  # same tick again: nothing
    assert s.tick(backend, now=clock.advance(60)) == []
    assert len(jobs(backend)) == 1
    # an hour later: skip policy enqueues the latest tick only, for each schedule
    fired = s.tick(backend, now=clock.advance(60 * 60))
    assert sorted((f.name, f.tick) for f in fired) == [
        ("every5", T0 + 65 * MIN),
        ("hourly", T0 + 60 * MIN),
    ]
    assert backend.cron_ticks() == {"every5": T0 + 65 * MIN, "hourly": T0 + 60 * MIN}
    assert s.next_wakeup(clock.now) == T0 + 70 * MIN


def test_catch_up_after_an_outage(backend: Backend, clock: Clock) -> None:
    p = every5(missed="catch_up", catch_up_limit=3)
    backend.enqueue_tick(p.name, T0, p.build(T0), now=clock.now)  # it ran once, at T0
    s = Scheduler([p])
    fired = s.tick(backend, now=clock.advance(42 * 60))  # down from :00 to :42
    assert [f.tick for f in fired] == [T0 + m * MIN for m in (25, 30, 35, 40)]
    assert [tick_of(j) for j in jobs(backend)] == [T0] + [T0 + m * MIN for m in (25, 30, 35, 40)]
    # oldest first: ids increase with the tick
    assert [f.job.id for f in fired] == sorted(f.job.id for f in fired)
    assert backend.cron_ticks()["every5"] == T0 + 40 * MIN


def test_a_stale_scheduler_enqueues_nothing_twice(open_store: Callable[[], Backend]) -> None:
    a, b = open_store(), open_store()
    p = every5(missed="catch_up", catch_up_limit=10)
    sa, sb = Scheduler([p]), Scheduler([p])
    sa.tick(a, now=T0)
    sb.tick(b, now=T0)
    assert len(sa.tick(a, now=T0 + 31 * MIN)) == 6
    # b read nothing new before: its view of the store is what it reads now
    assert sb.tick(b, now=T0 + 31 * MIN) == []
    assert sb.tick(b, now=T0 + 20 * MIN) == []  # a slower clock: nothing due before the last
    assert len(jobs(a)) == 6


def test_a_refused_tick_is_retried_and_others_go_on(backend: Backend, clock: Clock) -> None:
    full = Periodic("full", "* * * * *", "t", options=JobOptions(queue="full"))
    s = Scheduler([full, Periodic("ok", "* * * * *", "t")])
    backend.set_queue("full", max_depth=0)
    s.tick(backend, now=clock.now)
    fired = s.tick(backend, now=clock.advance(60))
    assert [f.name for f in fired] == ["ok"]
    assert "full" not in backend.cron_ticks()
    assert s.next_wakeup(clock.now) == clock.now + timedelta(seconds=10)
    backend.set_queue("full", max_depth=None)
    fired = s.tick(backend, now=clock.advance(10))
    assert [(f.name, f.tick) for f in fired] == [("full", T0 + MIN)]
    assert s.next_wakeup(clock.now) == T0 + 2 * MIN


def test_two_schedulers_racing_on_one_tick(open_store: Callable[[], Backend]) -> None:
    """Two schedulers, each with its own store handle, tick at the same instant from two
    threads, over and over: each tick becomes exactly one job."""
    handles = [open_store(), open_store()]
    p = Periodic("race", "* * * * *", "t")
    schedulers = [Scheduler([p]), Scheduler([p])]
    rounds = 25
    barrier = threading.Barrier(2, timeout=WAIT)
    fired: list[list[datetime]] = [[], []]
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            for k in range(rounds + 1):
                barrier.wait()
                for f in schedulers[i].tick(handles[i], now=T0 + k * MIN):
                    fired[i].append(f.tick)
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert not errors, errors
    expected = [T0 + k * MIN for k in range(1, rounds + 1)]
    assert sorted(fired[0] + fired[1]) == expected
    assert sorted(tick_of(j) for j in jobs(handles[0])) == expected


# -- two machines: two processes -----------------------------------------------------------------

SCHEDULER_PROCESS = textwrap.dedent("""
    import os, sys, time
    from datetime import datetime, timedelta, timezone
    from jobq import JobqError
    from jobq.backends import open_backend
    from jobq.periodic import Periodic, Scheduler

    T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)
    backend = open_backend(os.environ["JOBQ_URL"])
    backend.cron_ticks()  # connected and warm before the race starts
    scheduler = Scheduler([
        Periodic("minutely", "* * * * *", "t", missed="catch_up", catch_up_limit=3),
        Periodic("five", "*/5 * * * *", "t"),
    ])
    print("ready", flush=True)
    # lockstep: the test releases both processes into each step at once
    for line in sys.stdin:
        k = int(line)
        for attempt in range(100):
            try:
                fired = scheduler.tick(backend, now=T0 + timedelta(seconds=20 * k))
                break
            except JobqError:  # a dropped connection: a retried tick is refused if it landed
                time.sleep(0.1)
        print(len(fired), flush=True)
    backend.close()
""")


@pytest.fixture(params=["sqlite", "postgres"])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/jobs.db"
    else:
        with fresh_schema() as url:
            yield url


def _line(p: subprocess.Popen[str]) -> str:
    """The next line a scheduler process prints (its stderr if it died instead)."""
    assert p.stdout is not None
    line = p.stdout.readline()
    if not line:
        p.wait(WAIT)
        raise AssertionError(
            f"scheduler process exited {p.returncode}: {p.stderr and p.stderr.read()}"
        )
    return line.strip()


@pytest.mark.slow
def test_two_processes_enqueue_each_tick_once(shared_url: str, tmp_path: Path) -> None:
    from jobq.backends import open_backend

    backend = open_backend(shared_url)  # creates the schema before the race
    steps = 240  # 80 minutes of ticks, in 20-second steps
    env = dict(os.environ, JOBQ_URL=shared_url)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SCHEDULER_PROCESS],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    counts = [0, 0]
    try:
        for p in procs:
            assert _line(p) == "ready"
        for k in range(steps):
            for p in procs:
                assert p.stdin is not None
                p.stdin.write(f"{k}\n")
                p.stdin.flush()
            for i, p in enumerate(procs):
                counts[i] += int(_line(p))
        for p in procs:
            assert p.stdin is not None
            p.stdin.close()
            assert p.wait(WAIT) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            for f in (p.stdin, p.stdout, p.stderr):
                if f is not None:
                    f.close()
    end = T0 + timedelta(seconds=20 * (steps - 1))
    records = jobs(backend)
    by_schedule: dict[str, list[datetime]] = {"minutely": [], "five": []}
    for r in records:
        (name,) = [t.removeprefix("cron:") for t in r.tags if t.startswith("cron:")]
        by_schedule[name].append(tick_of(r))
    for name, expr in (("minutely", "* * * * *"), ("five", "*/5 * * * *")):
        expected = Cron.parse(expr).ticks_between(T0, end)
        ticks = by_schedule[name]
        assert Counter(ticks).most_common(1)[0][1] == 1, f"{name}: a tick enqueued twice"
        assert sorted(ticks) == expected, name
    # (a tick committed just as a connection dropped is enqueued but not reported)
    assert sum(counts) <= len(records)
    backend.close()


# -- jobq cron list ------------------------------------------------------------------------------

APP_MODULE = textwrap.dedent("""
    import os
    import jobq
    from jobq.periodic import Periodic, Scheduler

    app = jobq.App(os.environ["CRON_TEST_URL"])
    app.scheduler = Scheduler([
        Periodic("nightly", "30 2 * * *", "reports.send", timezone="Europe/Berlin"),
        Periodic("often", "*/5 * * * *", "t", missed="catch_up", catch_up_limit=4),
    ])
""")


@pytest.fixture
def cron_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    url = f"sqlite:///{tmp_path}/cron.db"
    (tmp_path / "cronapp.py").write_text(APP_MODULE)
    monkeypatch.setenv("CRON_TEST_URL", url)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    yield url
    sys.modules.pop("cronapp", None)


def cron_list(
    capsys: pytest.CaptureFixture[str],
    *,
    app: str | None = None,
    url: str | None = None,
    js: bool = False,
) -> str:
    args = argparse.Namespace(app=app, url=url, json=js, traceback=False)
    assert cmd_cron_list(args) == 0
    return capsys.readouterr().out


def test_cron_list(cron_app: str, capsys: pytest.CaptureFixture[str]) -> None:
    from jobq.backends import open_backend

    now = datetime.now(UTC)
    with_app = cron_list(capsys, app="cronapp:app")
    lines = with_app.splitlines()
    assert lines[0].split() == [
        *("NAME", "CRON", "TIMEZONE", "TASK", "MISSED", "LAST", "TICK", "NEXT", "TICK")
    ]
    assert lines[1].split()[:3] == ["nightly", "30", "2"]
    assert "Europe/Berlin" in lines[1] and "reports.send" in lines[1] and " skip " in lines[1]
    assert lines[2].startswith("often") and "catch_up:4" in lines[2]
    b = open_backend(cron_app)
    p = Periodic("often", "*/5 * * * *", "t")
    last = Cron.parse("*/5 * * * *").last_at_or_before(now)
    assert last is not None
    b.enqueue_tick("often", last, p.build(last))
    b.enqueue_tick("gone", T0, p.build(T0))  # a schedule no longer in the app
    b.close()
    doc = json.loads(cron_list(capsys, app="cronapp:app", js=True))
    assert [e["name"] for e in doc] == ["gone", "nightly", "often"]
    gone, nightly, often = doc
    assert gone["registered"] is False and gone["cron"] is None
    assert gone["last_tick"] == T0.isoformat()
    assert nightly["cron"] == "30 2 * * *" and nightly["timezone"] == "Europe/Berlin"
    assert nightly["last_tick"] is None and nightly["missed"] == "skip"
    next_nightly = datetime.fromisoformat(nightly["next_tick"])
    assert next_nightly > now and next_nightly - now <= timedelta(days=1, hours=1)
    assert often["last_tick"] == last.isoformat() and often["catch_up_limit"] == 4
    assert datetime.fromisoformat(often["next_tick"]) == last + 5 * MIN
    table = cron_list(capsys, app="cronapp:app")
    assert "(not in this app)" in table
    # --url only: the store's schedules, and a hint
    by_url = cron_list(capsys, url=cron_app)
    assert "often" in by_url and "gone" in by_url and "nightly" not in by_url
    assert "pass --app MODULE:APP" in by_url


def test_cron_list_empty(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = cron_list(capsys, url=f"sqlite:///{tmp_path}/empty.db")
    assert out.startswith("no periodic schedules (schedules are defined in code")
    assert json.loads(cron_list(capsys, url=f"sqlite:///{tmp_path}/empty.db", js=True)) == []


def test_cron_entries_next_tick_after_a_future_last() -> None:
    p = every5()
    (entry,) = cron_entries({"every5": p}, {"every5": T0 + 10 * MIN}, T0)
    assert entry["next_tick"] == T0 + 15 * MIN
