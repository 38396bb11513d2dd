"""Bad input is refused at enqueue with a clear jobq error, and nothing is written."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

import jobq
from jobq.payload import check_json


@pytest.fixture
def app(app_url: str) -> Any:
    a = jobq.App(app_url)
    yield a
    a.close()


def _nothing_written(app: jobq.App) -> None:
    assert app.stats() == {}


@pytest.mark.parametrize(
    "bad",
    [
        {1, 2},
        b"bytes",
        datetime.now(UTC),
        Decimal("1.5"),
        object(),
        (1, 2),
        [1, (2, 3)],
        {1: "int key"},
        math.nan,
        math.inf,
        [-math.inf],
        "nul\x00char",
        "lone \ud800 surrogate",
        {"k\x00": 1},
    ],
)
def test_non_json_arguments_are_refused(app: jobq.App, bad: object) -> None:
    @app.task
    def f(x: object) -> None: ...

    with pytest.raises(jobq.PayloadError) as info:
        f.enqueue(bad)
    assert "args" in str(info.value)
    _nothing_written(app)


def test_deep_nesting_is_refused_without_recursion_error(app: jobq.App) -> None:
    deep: Any = []
    for _ in range(10_000):
        deep = [deep]
    with pytest.raises(jobq.PayloadError, match="nested"):
        app.enqueue("t", args=[deep])
    _nothing_written(app)


def test_payload_size_limit(app_url: str) -> None:
    app = jobq.App(app_url, max_payload_bytes=1000)
    with pytest.raises(jobq.PayloadError, match="over the limit of 1,000"):
        app.enqueue("t", args=["x" * 2000])
    with pytest.raises(jobq.PayloadError, match="over the limit"):
        app.enqueue("t", args=["x" * 600], kwargs={"y": "z" * 600})
    _nothing_written(app)
    app.close()


def test_exact_json_round_trips(app: jobq.App) -> None:
    value = {
        "s": "ünïcödé ✓ 😀",
        "n": [0, -1, 2**80, 1.5, -0.0, 1e308],
        "b": [True, False],
        "none": None,
        "nested": {"a": [{"b": []}]},
    }
    job = app.enqueue("t", args=[value], kwargs={"k": value})
    again = app.get_job(job.id)
    assert again.args == [value] and again.kwargs == {"k": value}
    check_json(value, "value")


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"delay": -1}, "delay must be zero or positive"),
        ({"delay": timedelta(seconds=-5)}, "delay must be zero or positive"),
        ({"delay": "soon"}, "delay must be a timedelta"),
        ({"delay": math.nan}, "finite"),
        ({"run_at": datetime(2030, 1, 1)}, "naive datetime"),
        ({"deadline": datetime(2030, 1, 1)}, "naive datetime"),
        ({"run_at": "2030-01-01"}, "must be a datetime"),
        ({"delay": 5, "run_at": datetime(2030, 1, 1, tzinfo=UTC)}, "not both"),
        ({"priority": 1.5}, "priority must be an int"),
        ({"priority": "9"}, "priority must be an int"),
        ({"priority": True}, "priority must be an int"),
        ({"priority": 10**9}, "out of range"),
        ({"queue": ""}, "invalid queue name ''"),
        ({"queue": "has space"}, "invalid queue name"),
        ({"queue": "q'; DROP TABLE jobq_jobs; --"}, "invalid queue name"),
        ({"queue": "x" * 129}, "invalid queue name"),
        ({"queue": 7}, "invalid queue name"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"timeout": 0}, "timeout must be positive"),
        ({"unique_key": ""}, "unique_key"),
        ({"tags": "one-string"}, "tags"),
    ],
)
def test_bad_options_are_refused(app: jobq.App, options: dict[str, Any], match: str) -> None:
    @app.task
    def f() -> None: ...

    with pytest.raises(jobq.InvalidJobError, match=match):
        f.options(**options).enqueue()
    with pytest.raises(jobq.InvalidJobError, match=match):
        app.enqueue("by.name", **options)
    _nothing_written(app)


def test_enqueue_many_with_one_bad_item_writes_nothing(app: jobq.App) -> None:
    @app.task
    def f(x: object) -> None: ...

    with pytest.raises(jobq.PayloadError, match=r"args\[0\]"):
        f.enqueue_many([(1,), (2,), ({3},), (4,)])
    with pytest.raises(jobq.InvalidJobError, match="enqueue_many item 1"):
        f.enqueue_many([(1,), 2])  # type: ignore[list-item]
    _nothing_written(app)
    jobs = f.enqueue_many([(1,), {"x": 2}])
    assert [j.args for j in jobs] == [[1], []] and jobs[1].kwargs == {"x": 2}


def test_enqueue_by_unregistered_name_still_validates(app: jobq.App) -> None:
    job = app.enqueue("elsewhere.send", args=[1], queue="mail", priority=3)
    assert job.task == "elsewhere.send" and job.queue == "mail" and job.priority == 3
    with pytest.raises(jobq.InvalidJobError, match="invalid task name"):
        app.enqueue("", args=[])
    with pytest.raises(jobq.InvalidJobError, match="invalid task name"):
        app.enqueue("os.system; rm", args=[])
    with pytest.raises(jobq.PayloadError):
        app.enqueue("elsewhere.send", args="not-a-list")  # type: ignore[arg-type]


def test_registered_task_defaults_apply_to_enqueue_by_name(app: jobq.App) -> None:
    @app.task(name="mail.send", queue="mail", priority=4, max_attempts=7)
    def send() -> None: ...

    job = app.enqueue("mail.send")
    assert (job.queue, job.priority, job.max_attempts) == ("mail", 4, 7)


def test_bad_task_configuration_fails_at_decoration(app: jobq.App) -> None:
    with pytest.raises(jobq.ConfigurationError, match="invalid queue name"):
        app.task(queue="bad queue")(lambda: None)
    with pytest.raises(jobq.ConfigurationError, match="max_attempts"):
        app.task(max_attempts=0)(lambda: None)
    with pytest.raises(jobq.ConfigurationError, match="delay"):
        app.task(retry="fast")(lambda: None)  # type: ignore[arg-type]

    @app.task(name="dup")
    def one() -> None: ...

    with pytest.raises(jobq.ConfigurationError, match="already registered"):

        @app.task(name="dup")
        def two() -> None: ...


def test_app_without_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.delenv("JOBQ_URL", raising=False)
    with pytest.raises(jobq.ConfigurationError, match="JOBQ_URL"):
        jobq.App()
    monkeypatch.setenv("JOBQ_URL", f"sqlite:///{tmp_path}/env.db")
    app = jobq.App()
    assert app.enqueue("t").id == 1
    app.close()


@pytest.mark.parametrize(
    "url",
    [
        "redis://localhost",
        "nonsense",
        "",
        "sqlite:///:memory:",
        "sqlite:///x.db?synchronous=off",
        "sqlite:///x.db?foo=1",
    ],
)
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(jobq.ConfigurationError):
        jobq.App(url).open()


def test_bad_url_fails_when_the_app_is_built_not_at_first_use() -> None:
    with pytest.raises(jobq.ConfigurationError, match="unsupported job store URL"):
        jobq.App("postgres-typo://x")
    with pytest.raises(jobq.ConfigurationError, match="names no database file"):
        jobq.App("sqlite://")
