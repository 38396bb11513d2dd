"""Big batches of plain jobs go into PostgreSQL with COPY: the rows, the records returned, the
notifications and the refusals are those of the one-statement path."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import jobq
from jobq.backends import postgres as pg
from jobq.backends.base import NewJob
from jobq.backends.postgres import PostgresBackend
from jobq.job import JobRecord
from jobq.states import JobState
from tests.conftest import fresh_schema, new_job

T0 = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
N = pg.COPY_MIN + 37


@pytest.fixture
def backend() -> Iterator[PostgresBackend]:
    with fresh_schema() as url:
        b = PostgresBackend(url)
        yield b
        b.close()


@pytest.fixture
def copies(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many jobs each COPY wrote (the path is taken only for big plain batches)."""
    calls: list[int] = []
    real = PostgresBackend._enqueue_copy

    def spy(self: PostgresBackend, jobs: Any, now: Any) -> Any:
        calls.append(len(jobs))
        return real(self, jobs, now)

    monkeypatch.setattr(PostgresBackend, "_enqueue_copy", spy)
    return calls


def varied(i: int) -> NewJob:
    """Every column the plain path writes, with text that needs escaping in COPY."""
    odd = i % 2 == 1
    return new_job(
        task=f"task.{i % 3}",
        queue=("a", "b", "c")[i % 3],
        args_json=f'[{i}, "tab\\there \\\\ \\"q\\" {{x,y}}", null]',
        kwargs_json='{"k": "new\\nline"}' if odd else "{}",
        priority=i % 7 - 3,
        max_attempts=1 + i % 5,
        timeout=timedelta(seconds=i % 4 + 0.5) if i % 4 else None,
        delay=timedelta(minutes=1) if i % 5 == 0 else None,
        run_at=T0 - timedelta(seconds=i) if i % 11 == 0 else None,
        deadline=T0 + timedelta(hours=1, microseconds=i) if i % 3 == 0 else None,
        tags=("plain", 'quote"d', "back\\slash", "com,ma", "{brace}", "") if odd else (),
        concurrency_key=f"customer-{i % 4}" if i % 6 == 0 else None,
        concurrency_limit=2 if i % 6 == 0 else None,
        rate_key="api" if i % 10 == 0 else None,
        rate_limit=5 if i % 10 == 0 else None,
        rate_period=timedelta(seconds=1) if i % 10 == 0 else None,
        secret=("0",) if i % 9 == 0 else (),
    )


def comparable(r: JobRecord) -> dict[str, Any]:
    d = dataclasses.asdict(r)
    del d["id"]
    return d


def test_a_big_batch_is_copied_and_reads_back_as_the_statement_path_writes_it(
    backend: PostgresBackend, copies: list[int]
) -> None:
    jobs = [varied(i) for i in range(N)]
    copied = backend.enqueue_many(jobs, now=T0)
    assert copies == [N]
    # the same jobs through the one-statement path (batches under COPY_MIN)
    chunk = pg.COPY_MIN - 1
    stated = [
        r
        for start in range(0, N, chunk)
        for r in backend.enqueue_many(jobs[start : start + chunk], now=T0)
    ]
    assert copies == [N]
    ids = [r.id for r in copied]
    assert ids == sorted(ids) and len(set(ids)) == N  # list order, as the statement path
    for a, b in zip(copied, stated, strict=True):
        assert comparable(a) == comparable(b)
        stored_a, stored_b = backend.get(a.id), backend.get(b.id)
        assert stored_a is not None and stored_b is not None
        assert stored_a == a  # the returned record is the stored row
        assert comparable(stored_a) == comparable(stored_b)
    states = {r.state for r in copied}
    assert states == {JobState.AVAILABLE, JobState.SCHEDULED}


def test_copied_limited_jobs_keep_their_limits(backend: PostgresBackend, copies: list[int]) -> None:
    backend.enqueue_many(
        [new_job(concurrency_key="k", concurrency_limit=2) for _ in range(N)], now=T0
    )
    assert copies == [N]
    claimed = backend.claim(["default"], 50, worker_id="w", lease=timedelta(minutes=1), now=T0)
    assert len(claimed) == 2 and all(r.concurrency_key == "k" for r in claimed)


def test_a_queue_with_a_max_depth_refuses_the_whole_batch_and_writes_nothing(
    backend: PostgresBackend, copies: list[int]
) -> None:
    backend.set_queue("default", max_depth=N - 1)
    with pytest.raises(jobq.QueueFull):
        backend.enqueue_many([new_job() for _ in range(N)], now=T0)
    assert backend.stats() == {}
    backend.set_queue("default", max_depth=N)
    assert len(backend.enqueue_many([new_job() for _ in range(N)], now=T0)) == N
    assert backend.stats()["default"][JobState.AVAILABLE] == N


def test_unique_keys_take_the_statement_path(backend: PostgresBackend, copies: list[int]) -> None:
    jobs = [new_job(unique_key=f"u{i % (N - 5)}") for i in range(N)]
    records = backend.enqueue_many(jobs, now=T0)
    assert copies == []
    assert len({r.id for r in records}) == N - 5  # the repeats stand for their holders


def test_a_copied_batch_notifies_the_other_processes_listening() -> None:
    with fresh_schema() as url:
        listener = PostgresBackend(url)
        woken = threading.Event()
        unsubscribe = listener.subscribe(woken.set)
        producer = PostgresBackend(url)
        try:
            assert woken.wait(60), "the listener did not start"  # it reports once, listening
            woken.clear()
            producer.enqueue_many([new_job() for _ in range(N)])
            assert woken.wait(60), "no notification reached the listening backend"
        finally:
            unsubscribe()
            producer.close()
            listener.close()
