"""The fast ``__init__`` of the hot-path records: the same object as the dataclass's own."""

from __future__ import annotations

import dataclasses
import pickle
from datetime import UTC, datetime, timedelta

import pytest

from jobq.backends.base import NewJob
from jobq.fastinit import fast_init
from jobq.job import AttemptError, JobRecord
from jobq.states import JobState

Fast = fast_init(
    dataclasses.make_dataclass("Fast", [("a", int), ("b", str, "x")], frozen=True, slots=True)
)

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def full_record() -> dict[str, object]:
    return {
        "id": 7,
        "queue": "emails",
        "task": "send",
        "args_json": "[1]",
        "kwargs_json": '{"a": 2}',
        "priority": 3,
        "deadline": NOW,
        "run_at": NOW,
        "attempt": 1,
        "max_attempts": 5,
        "timeout": timedelta(seconds=9),
        "unique_key": "k",
        "tags": ("t",),
        "state": JobState.RUNNING,
        "worker_id": "w",
        "lease_token": "tok",
        "leased_until": NOW,
        "result_json": "null",
        "errors": (AttemptError(1, NOW, "E", "m"),),
        "created_at": NOW,
        "started_at": NOW,
        "finished_at": None,
        "concurrency_key": "c",
        "rate_key": "r",
        "depends_on": (1, 2),
        "allow_failed": True,
        "progress": 0.5,
        "progress_message": "half",
        "secret": ("0",),
        "lost": 2,
    }


def test_every_field_is_set_by_keyword_and_by_position() -> None:
    values = full_record()
    by_kw = JobRecord(**values)  # type: ignore[arg-type]
    by_pos = JobRecord(*values.values())  # type: ignore[arg-type]
    assert [f.name for f in dataclasses.fields(JobRecord)] == list(values)
    for name, value in values.items():
        assert getattr(by_kw, name) == value
        assert getattr(by_pos, name) == value
    assert by_kw == by_pos and hash(by_kw) == hash(by_pos)
    assert pickle.loads(pickle.dumps(by_kw)) == by_kw


def test_defaults_apply_and_the_record_stays_frozen() -> None:
    values = full_record()
    for name in ("concurrency_key", "rate_key", "depends_on", "allow_failed", "progress"):
        del values[name]
    r = JobRecord(**values)  # type: ignore[arg-type]
    assert (r.concurrency_key, r.rate_key, r.depends_on, r.allow_failed, r.progress) == (
        None,
        None,
        (),
        False,
        None,
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.state = JobState.COMPLETED  # type: ignore[misc]
    assert dataclasses.replace(r, attempt=4).attempt == 4
    nj = NewJob("q", "t", "[]", "{}", 0, 3)
    assert (nj.on_conflict, nj.tags, nj.secret) == ("skip", (), ())


def test_missing_and_unknown_arguments_raise_like_the_generated_init() -> None:
    with pytest.raises(TypeError, match="missing"):
        NewJob("q", "t")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
        NewJob("q", "t", "[]", "{}", 0, 3, colour="red")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="multiple values"):
        Fast(1, a=2)


def test_a_class_it_cannot_handle_is_refused_at_definition() -> None:
    with pytest.raises(TypeError, match="slots=True"):
        fast_init(dataclasses.make_dataclass("NoSlots", [("a", int)], frozen=True))
    with pytest.raises(TypeError, match="plain fields"):
        fast_init(
            dataclasses.make_dataclass(
                "Factory",
                [("a", list, dataclasses.field(default_factory=list))],
                frozen=True,
                slots=True,
            )
        )

    @dataclasses.dataclass(frozen=True, slots=True)
    class Post:
        a: int

        def __post_init__(self) -> None:
            pass

    with pytest.raises(TypeError, match="__post_init__"):
        fast_init(Post)
