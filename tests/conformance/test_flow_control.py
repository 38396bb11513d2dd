"""Flow control on every backend: unique jobs, dependencies, concurrency and rate limits, paused
queues, backpressure, progress, bulk operator actions, periodic ticks and distributed locks.

This is the executable reading of the flow-control part of ``jobq/backends/base.py``. Where the
docstrings left a choice open, the decision is written next to the test that pins it (look for
"Decision:"). Time is injected through ``now=``: nothing here sleeps to synchronise.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest

from jobq.backends import Backend, JobFilter, Lease, Outcome, OutcomeKind
from jobq.backends.base import QueueSettings
from jobq.exceptions import (
    DependencyError,
    InvalidTransition,
    QueueFull,
    UniqueConflict,
)
from jobq.job import AttemptError, JobRecord
from jobq.states import TERMINAL_STATES, JobState
from tests.conftest import Clock, new_job

LEASE = timedelta(seconds=30)
MINUTE = timedelta(minutes=1)


def claim(
    backend: Backend,
    clock: Clock,
    n: int = 10,
    queues: tuple[str, ...] = ("default",),
    worker: str = "w1",
    **kw: Any,
) -> list[JobRecord]:
    return backend.claim(queues, n, worker_id=worker, lease=LEASE, now=clock.now, **kw)


def lease_of(r: JobRecord) -> Lease:
    assert r.lease_token is not None
    return Lease(r.id, r.lease_token)


def finish(
    backend: Backend, clock: Clock, r: JobRecord, kind: OutcomeKind = OutcomeKind.COMPLETED
) -> None:
    error = None
    if kind is not OutcomeKind.COMPLETED:
        error = AttemptError(r.attempt, clock.now, "ValueError", "boom")
    assert backend.record_outcomes([Outcome(lease_of(r), kind, error=error)], now=clock.now) == {
        r.id
    }


def state(backend: Backend, job_id: int) -> JobState:
    r = backend.get(job_id)
    assert r is not None, f"job {job_id} is gone"
    return r.state


def record(backend: Backend, job_id: int) -> JobRecord:
    r = backend.get(job_id)
    assert r is not None, f"job {job_id} is gone"
    return r


def count(backend: Backend) -> int:
    return sum(sum(c.values()) for c in backend.stats().values())


def running_with(backend: Backend, key: str) -> int:
    return sum(
        1
        for r in backend.list_jobs(JobFilter(state=JobState.RUNNING), limit=10_000)
        if r.concurrency_key == key
    )


def assert_dependency_failed(r: JobRecord, dep_id: int, dep_state: str) -> None:
    assert r.state is JobState.CANCELLED
    err = r.last_error
    assert err is not None and err.type == "DependencyFailed"
    assert f"dependency {dep_id} ended {dep_state}" in err.message
    assert r.finished_at is not None


def race(n: int, fn: Callable[[int], Any]) -> list[Any]:
    """Run ``fn(i)`` for i in range(n) on n threads released together; re-raise any error."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait(timeout=120)
            results[i] = fn(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    assert not any(t.is_alive() for t in threads), "a racing thread hung"
    if errors:
        raise errors[0]
    return results


# == unique jobs ===============================================================================


def test_unique_skip_returns_the_holder(backend: Backend, clock: Clock) -> None:
    (a,) = backend.enqueue_many([new_job(unique_key="k", on_conflict="skip")], now=clock.now)
    (b,) = backend.enqueue_many(
        [new_job("other", unique_key="k", on_conflict="skip", args_json="[9]")], now=clock.now
    )
    assert b.id == a.id and b.task == "t" and b.args == []
    assert count(backend) == 1


def test_unique_skip_inside_one_batch(backend: Backend, clock: Clock) -> None:
    a, b, c = backend.enqueue_many(
        [new_job(unique_key="k"), new_job(unique_key="k"), new_job(unique_key="other")],
        now=clock.now,
    )
    assert a.id == b.id != c.id
    assert count(backend) == 2


@pytest.mark.parametrize("holder_state", ["available", "scheduled"])
def test_unique_replace_rewrites_a_job_not_yet_started(
    backend: Backend, clock: Clock, holder_state: str
) -> None:
    delay = timedelta(hours=1) if holder_state == "scheduled" else None
    (a,) = backend.enqueue_many(
        [new_job(unique_key="k", args_json="[1]", priority=1, tags=("old",), delay=delay)],
        now=clock.now,
    )
    assert a.state.value == holder_state
    deadline = clock.now + timedelta(days=1)
    (b,) = backend.enqueue_many(
        [
            new_job(
                unique_key="k",
                on_conflict="replace",
                args_json="[2]",
                kwargs_json='{"x":1}',
                priority=7,
                max_attempts=9,
                timeout=timedelta(seconds=42),
                deadline=deadline,
                tags=("new",),
            )
        ],
        now=clock.advance(1),
    )
    assert b.id == a.id
    assert b.state is JobState.AVAILABLE and b.run_at == clock.now
    assert (b.args, b.kwargs, b.priority, b.max_attempts) == ([2], {"x": 1}, 7, 9)
    assert (b.timeout, b.deadline, b.tags) == (timedelta(seconds=42), deadline, ("new",))
    assert record(backend, a.id) == b
    assert count(backend) == 1
    # replaced the other way round: an available job pushed into the future becomes scheduled
    (c,) = backend.enqueue_many(
        [new_job(unique_key="k", on_conflict="replace", run_at=clock.now + MINUTE)],
        now=clock.now,
    )
    assert c.id == a.id and c.state is JobState.SCHEDULED and c.run_at == clock.now + MINUTE
    assert claim(backend, clock) == []
    backend.promote_due(now=clock.advance(60))
    assert [r.id for r in claim(backend, clock)] == [a.id]


def test_unique_replace_takes_the_new_priority_in_claim_order(
    backend: Backend, clock: Clock
) -> None:
    backend.enqueue_many([new_job("a", priority=5), new_job("b", unique_key="k")], now=clock.now)
    backend.enqueue_many(
        [new_job("b", unique_key="k", on_conflict="replace", priority=9)], now=clock.now
    )
    assert [r.task for r in claim(backend, clock)] == ["b", "a"]


def test_unique_replace_refuses_running_and_blocked_holders(backend: Backend, clock: Clock) -> None:
    (dep,) = backend.enqueue_many([new_job("dep", queue="other")], now=clock.now)
    (run, blk) = backend.enqueue_many(
        [new_job(unique_key="run"), new_job(unique_key="blk", depends_on=(dep.id,))],
        now=clock.now,
    )
    (claimed,) = claim(backend, clock)
    assert claimed.id == run.id and state(backend, blk.id) is JobState.BLOCKED
    before = count(backend)
    for key, holder_state in (("run", "running"), ("blk", "blocked")):
        with pytest.raises(UniqueConflict, match=holder_state) as exc:
            backend.enqueue_many(
                [new_job("fresh"), new_job(unique_key=key, on_conflict="replace")],
                now=clock.now,
            )
        assert repr(key) in str(exc.value)
    # the whole call was refused: the unrelated first job was not written either
    assert count(backend) == before
    assert record(backend, run.id).args_json == "[]" and state(backend, run.id) is JobState.RUNNING


@pytest.mark.parametrize("holder", ["available", "scheduled", "running", "blocked"])
def test_unique_raise_refuses_the_whole_call(backend: Backend, clock: Clock, holder: str) -> None:
    (dep,) = backend.enqueue_many([new_job("dep", queue="other")], now=clock.now)
    kw: dict[str, Any] = {}
    if holder == "scheduled":
        kw["delay"] = MINUTE
    if holder == "blocked":
        kw["depends_on"] = (dep.id,)
    (a,) = backend.enqueue_many([new_job(unique_key="k", **kw)], now=clock.now)
    if holder == "running":
        claim(backend, clock)
    assert state(backend, a.id).value == holder
    before = backend.stats()
    with pytest.raises(UniqueConflict, match=f"held by job {a.id}"):
        backend.enqueue_many(
            [new_job("first"), new_job(unique_key="k", on_conflict="raise"), new_job("last")],
            now=clock.now,
        )
    assert backend.stats() == before


def test_unique_raise_against_an_earlier_job_of_the_same_call(
    backend: Backend, clock: Clock
) -> None:
    with pytest.raises(UniqueConflict):
        backend.enqueue_many(
            [new_job(unique_key="k"), new_job(unique_key="k", on_conflict="raise")],
            now=clock.now,
        )
    assert count(backend) == 0


def test_unique_key_is_free_again_once_the_holder_finished(backend: Backend, clock: Clock) -> None:
    for kind in (OutcomeKind.COMPLETED, OutcomeKind.DEAD):
        (a,) = backend.enqueue_many([new_job(unique_key="k")], now=clock.now)
        (r,) = claim(backend, clock)
        finish(backend, clock, r, kind)
        for how in ("skip", "raise", "replace"):
            (b,) = backend.enqueue_many(
                [new_job(unique_key="k", on_conflict=how)], now=clock.advance(1)
            )
            assert b.id != a.id and b.state is JobState.AVAILABLE
            backend.cancel(b.id, now=clock.now)


def test_unique_window_conflicts_with_finished_jobs(backend: Backend, clock: Clock) -> None:
    (a,) = backend.enqueue_many([new_job(unique_key="k", unique_window=MINUTE)], now=clock.now)
    (r,) = claim(backend, clock)
    finish(backend, clock, r)
    clock.advance(30)
    # skip: the finished job created within the window comes back
    (b,) = backend.enqueue_many([new_job(unique_key="k", unique_window=MINUTE)], now=clock.now)
    assert b.id == a.id and b.state is JobState.COMPLETED
    # raise and replace: refused, nothing written
    with pytest.raises(UniqueConflict, match=f"held by job {a.id}"):
        backend.enqueue_many(
            [new_job(unique_key="k", unique_window=MINUTE, on_conflict="raise")], now=clock.now
        )
    with pytest.raises(UniqueConflict, match="completed"):
        backend.enqueue_many(
            [new_job(unique_key="k", unique_window=MINUTE, on_conflict="replace")], now=clock.now
        )
    # without a window, a finished job does not hold its key
    (c,) = backend.enqueue_many([new_job(unique_key="k")], now=clock.now)
    assert c.id != a.id
    backend.cancel(c.id, now=clock.now)
    assert count(backend) == 2


def test_unique_window_is_half_open(backend: Backend, clock: Clock) -> None:
    """Decision: "created within the window" means created_at > now - window; a job created
    exactly one window ago no longer conflicts."""
    start = clock.now
    (a,) = backend.enqueue_many([new_job(unique_key="k")], now=start)
    backend.cancel(a.id, now=start)
    (b,) = backend.enqueue_many(
        [new_job(unique_key="k", unique_window=MINUTE)],
        now=start + MINUTE - timedelta(microseconds=1),
    )
    assert b.id == a.id
    (c,) = backend.enqueue_many([new_job(unique_key="k", unique_window=MINUTE)], now=start + MINUTE)
    assert c.id != a.id and c.state is JobState.AVAILABLE


def test_unique_window_skip_prefers_the_active_holder(backend: Backend, clock: Clock) -> None:
    """Decision: when several jobs hold the key, skip returns the active one; with none active,
    the newest job created within the window."""
    (a,) = backend.enqueue_many([new_job(unique_key="k")], now=clock.now)
    backend.cancel(a.id, now=clock.advance(1))
    (b,) = backend.enqueue_many([new_job(unique_key="k")], now=clock.advance(1))
    assert b.id != a.id
    (c,) = backend.enqueue_many([new_job(unique_key="k", unique_window=MINUTE)], now=clock.now)
    assert c.id == b.id
    backend.cancel(b.id, now=clock.advance(1))
    (d,) = backend.enqueue_many([new_job(unique_key="k", unique_window=MINUTE)], now=clock.now)
    assert d.id == b.id


def test_two_handles_racing_on_one_unique_key_create_one_job(
    open_store: Callable[[], Backend], clock: Clock
) -> None:
    handles = [open_store(), open_store()]
    for round_ in range(8):
        key = f"order-{round_}"
        recs = race(
            2,
            lambda i, key=key: handles[i].enqueue_many(  # type: ignore[misc]
                [new_job(unique_key=key)], now=clock.now
            )[0],
        )
        assert recs[0].id == recs[1].id, f"round {round_}: two jobs for one unique key"
    assert count(handles[0]) == 8


def test_two_handles_racing_with_raise_one_wins(
    open_store: Callable[[], Backend], clock: Clock
) -> None:
    handles = [open_store(), open_store()]
    for round_ in range(6):
        key = f"k{round_}"

        def attempt(i: int, key: str = key) -> str:
            try:
                handles[i].enqueue_many(
                    [new_job(unique_key=key, on_conflict="raise")], now=clock.now
                )
            except UniqueConflict:
                return "refused"
            return "created"

        assert sorted(race(2, attempt)) == ["created", "refused"]
    assert count(handles[0]) == 6


def test_retry_many_skips_jobs_whose_unique_key_is_held(backend: Backend, clock: Clock) -> None:
    a, b = backend.enqueue_many([new_job(unique_key="k"), new_job(unique_key="j")], now=clock.now)
    backend.cancel(a.id, now=clock.now)
    backend.cancel(b.id, now=clock.now)
    (c,) = backend.enqueue_many([new_job(unique_key="k")], now=clock.now)
    assert backend.retry_many(JobFilter(state=JobState.CANCELLED), now=clock.now) == 1
    assert state(backend, a.id) is JobState.CANCELLED
    assert state(backend, b.id) is JobState.AVAILABLE
    assert state(backend, c.id) is JobState.AVAILABLE


# == dependencies ==============================================================================


def test_dependent_waits_blocked_and_unblocks_when_dependency_completes(
    backend: Backend, clock: Clock
) -> None:
    (a,) = backend.enqueue_many([new_job("a")], now=clock.now)
    (b,) = backend.enqueue_many([new_job("b", depends_on=(a.id,))], now=clock.now)
    assert b.state is JobState.BLOCKED and b.depends_on == (a.id,)
    assert backend.promote_due(now=clock.advance(3600)) == 0
    assert backend.next_due() is None
    (r,) = claim(backend, clock)
    assert r.id == a.id
    assert claim(backend, clock) == []
    finish(backend, clock, r)
    assert state(backend, b.id) is JobState.AVAILABLE
    assert [x.id for x in claim(backend, clock)] == [b.id]


def test_unblocked_job_with_future_run_at_is_scheduled(backend: Backend, clock: Clock) -> None:
    (a,) = backend.enqueue_many([new_job("a")], now=clock.now)
    (b,) = backend.enqueue_many(
        [new_job("b", depends_on=(a.id,), run_at=clock.now + timedelta(hours=1))], now=clock.now
    )
    assert b.state is JobState.BLOCKED
    (r,) = claim(backend, clock)
    finish(backend, clock, r)
    assert state(backend, b.id) is JobState.SCHEDULED
    assert backend.next_due() == b.run_at
    assert claim(backend, clock) == []
    backend.promote_due(now=clock.advance(3600))
    assert [x.id for x in claim(backend, clock)] == [b.id]


def test_job_waits_for_all_of_its_dependencies(backend: Backend, clock: Clock) -> None:
    a1, a2 = backend.enqueue_many([new_job("a1"), new_job("a2")], now=clock.now)
    (b,) = backend.enqueue_many([new_job("b", depends_on=(a2.id, a1.id, a2.id))], now=clock.now)
    # Decision: a record's depends_on holds the dependency ids ascending, without duplicates.
    assert b.depends_on == (a1.id, a2.id)
    r1, r2 = claim(backend, clock, 2)
    finish(backend, clock, r1)
    assert state(backend, b.id) is JobState.BLOCKED
    finish(backend, clock, r2)
    assert state(backend, b.id) is JobState.AVAILABLE


def test_depends_on_batch_links_jobs_of_one_call(backend: Backend, clock: Clock) -> None:
    (x,) = backend.enqueue_many([new_job("x")], now=clock.now)
    a, b, c = backend.enqueue_many(
        [
            new_job("a"),
            new_job("b", depends_on_batch=(0,)),
            new_job("c", depends_on=(x.id,), depends_on_batch=(0, 1)),
        ],
        now=clock.now,
    )
    assert a.state is JobState.AVAILABLE
    assert b.state is JobState.BLOCKED and b.depends_on == (a.id,)
    assert c.state is JobState.BLOCKED and c.depends_on == (x.id, a.id, b.id)
    got = {r.task: r for r in claim(backend, clock)}
    assert set(got) == {"a", "x"}
    finish(backend, clock, got["a"])
    (rb,) = claim(backend, clock)
    assert rb.task == "b" and state(backend, c.id) is JobState.BLOCKED
    finish(backend, clock, rb)
    finish(backend, clock, got["x"])
    assert state(backend, c.id) is JobState.AVAILABLE


def test_depends_on_batch_index_of_a_skipped_unique_job_means_its_holder(
    backend: Backend, clock: Clock
) -> None:
    """Decision: a batch index names the record returned at that position, which for a unique
    job skipped in favour of its holder is the holder."""
    (h,) = backend.enqueue_many([new_job("h", unique_key="k")], now=clock.now)
    a, b = backend.enqueue_many(
        [new_job("h", unique_key="k"), new_job("b", depends_on_batch=(0,))], now=clock.now
    )
    assert a.id == h.id and b.depends_on == (h.id,) and b.state is JobState.BLOCKED


def test_unknown_dependency_is_refused_with_nothing_written(backend: Backend, clock: Clock) -> None:
    (a,) = backend.enqueue_many([new_job("a")], now=clock.now)
    before = backend.stats()
    with pytest.raises(DependencyError, match="999999"):
        backend.enqueue_many(
            [new_job("ok"), new_job("bad", depends_on=(a.id, 999_999))], now=clock.now
        )
    assert backend.stats() == before


@pytest.mark.parametrize("index", [1, 2, -1])
def test_depends_on_batch_refuses_self_forward_and_negative_indexes(
    backend: Backend, clock: Clock, index: int
) -> None:
    with pytest.raises(DependencyError, match="earlier in the same call"):
        backend.enqueue_many(
            [new_job("a"), new_job("b", depends_on_batch=(index,)), new_job("c")], now=clock.now
        )
    assert count(backend) == 0


def test_completed_dependency_counts_as_resolved_at_enqueue(backend: Backend, clock: Clock) -> None:
    (a,) = backend.enqueue_many([new_job("a")], now=clock.now)
    (r,) = claim(backend, clock)
    finish(backend, clock, r)
    b, c = backend.enqueue_many(
        [
            new_job("b", depends_on=(a.id,)),
            new_job("c", depends_on=(a.id,), run_at=clock.now + MINUTE),
        ],
        now=clock.now,
    )
    assert b.state is JobState.AVAILABLE and b.depends_on == (a.id,)
    assert c.state is JobState.SCHEDULED


@pytest.mark.parametrize("dep_end", ["dead", "cancelled", "expired"])
def test_failed_dependency_cancels_the_dependent_at_enqueue(
    backend: Backend, clock: Clock, dep_end: str
) -> None:
    (a,) = backend.enqueue_many([new_job("a")], now=clock.now)
    if dep_end == "cancelled":
        backend.cancel(a.id, now=clock.now)
    else:
        (r,) = claim(backend, clock)
        finish(backend, clock, r, OutcomeKind(dep_end))
    (live,) = backend.enqueue_many([new_job("live")], now=clock.now)
    b, c = backend.enqueue_many(
        [
            new_job("b", depends_on=(a.id, live.id)),
            new_job("c", depends_on=(a.id,), allow_failed=True),
        ],
        now=clock.advance(1),
    )
    assert_dependency_failed(b, a.id, dep_end)
    assert b.finished_at == clock.now and record(backend, b.id) == b
    assert c.state is JobState.AVAILABLE and c.allow_failed


def test_cascade_cancels_down_a_chain(backend: Backend, clock: Clock) -> None:
    a, b, c, d = backend.enqueue_many(
        [
            new_job("a"),
            new_job("b", depends_on_batch=(0,)),
            new_job("c", depends_on_batch=(1,)),
            new_job("d", depends_on_batch=(2,), allow_failed=True),
        ],
        now=clock.now,
    )
    (ra,) = claim(backend, clock)
    finish(backend, clock, ra, OutcomeKind.DEAD)
    assert_dependency_failed(record(backend, b.id), a.id, "dead")
    assert_dependency_failed(record(backend, c.id), b.id, "cancelled")
    # allow_failed: the end of the chain runs anyway
    assert state(backend, d.id) is JobState.AVAILABLE
    assert [r.id for r in claim(backend, clock)] == [d.id]


def test_allow_failed_waits_for_every_dependency_to_end(backend: Backend, clock: Clock) -> None:
    _a1, _a2, b = backend.enqueue_many(
        [new_job("a1"), new_job("a2"), new_job("b", depends_on_batch=(0, 1), allow_failed=True)],
        now=clock.now,
    )
    r1, r2 = claim(backend, clock, 2)
    finish(backend, clock, r1, OutcomeKind.DEAD)
    assert state(backend, b.id) is JobState.BLOCKED
    finish(backend, clock, r2)
    assert state(backend, b.id) is JobState.AVAILABLE


def test_one_failed_dependency_cancels_at_once(backend: Backend, clock: Clock) -> None:
    a1, a2, b = backend.enqueue_many(
        [new_job("a1"), new_job("a2", delay=MINUTE), new_job("b", depends_on_batch=(0, 1))],
        now=clock.now,
    )
    (r1,) = claim(backend, clock)
    finish(backend, clock, r1, OutcomeKind.CANCELLED)
    assert_dependency_failed(record(backend, b.id), a1.id, "cancelled")
    assert state(backend, a2.id) is JobState.SCHEDULED


def _chain(backend: Backend, clock: Clock, **dep_kw: Any) -> tuple[JobRecord, JobRecord]:
    a, b = backend.enqueue_many(
        [new_job("a", **dep_kw), new_job("b", queue="later", depends_on_batch=(0,))],
        now=clock.now,
    )
    assert b.state is JobState.BLOCKED
    return a, b


def test_resolution_through_record_and_claim(backend: Backend, clock: Clock) -> None:
    a, b = backend.enqueue_many([new_job("a"), new_job("b", depends_on_batch=(0,))], now=clock.now)
    (r,) = claim(backend, clock)
    done, got = backend.record_and_claim(
        [Outcome(lease_of(r), OutcomeKind.COMPLETED)],
        ["default"],
        5,
        worker_id="w1",
        lease=LEASE,
        now=clock.now,
    )
    assert done == {a.id} and [x.id for x in got] == [b.id]
    # and the failing direction
    a2, b2 = _chain(backend, clock)
    (r2,) = claim(backend, clock)
    done, got = backend.record_and_claim(
        [Outcome(lease_of(r2), OutcomeKind.DEAD, error=AttemptError(1, clock.now, "E", "x"))],
        ["default", "later"],
        5,
        worker_id="w1",
        lease=LEASE,
        now=clock.now,
    )
    assert done == {a2.id} and got == []
    assert_dependency_failed(record(backend, b2.id), a2.id, "dead")


@pytest.mark.parametrize("dep_state", ["available", "scheduled", "blocked", "running"])
def test_resolution_through_cancel(backend: Backend, clock: Clock, dep_state: str) -> None:
    (root,) = backend.enqueue_many([new_job("root", queue="root")], now=clock.now)
    kw: dict[str, Any] = {}
    if dep_state == "scheduled":
        kw["delay"] = MINUTE
    if dep_state == "blocked":
        kw["depends_on"] = (root.id,)
    a, b = _chain(backend, clock, **kw)
    if dep_state == "running":
        claim(backend, clock)
    assert state(backend, a.id).value == dep_state
    changed, rec = backend.cancel(a.id, now=clock.advance(1))
    assert changed and rec.state is JobState.CANCELLED
    assert_dependency_failed(record(backend, b.id), a.id, "cancelled")
    assert record(backend, b.id).finished_at == clock.now


def test_resolution_through_cancel_many(backend: Backend, clock: Clock) -> None:
    """Decision: cancel_many counts the jobs matching its filter that it cancelled; dependents
    cancelled by the cascade (here in another queue) are not counted."""
    a, b = _chain(backend, clock)
    _c, d = backend.enqueue_many(
        [new_job("c"), new_job("d", queue="later", depends_on_batch=(0,), allow_failed=True)],
        now=clock.now,
    )
    assert backend.cancel_many(JobFilter(queue="default"), now=clock.now) == 2
    assert_dependency_failed(record(backend, b.id), a.id, "cancelled")
    assert state(backend, d.id) is JobState.AVAILABLE


def test_resolution_through_rescue_to_dead(backend: Backend, clock: Clock) -> None:
    a, b = _chain(backend, clock, max_attempts=2)
    claim(backend, clock)
    assert backend.rescue_expired(now=clock.advance(31)) == 1  # back to available: no effect
    assert state(backend, b.id) is JobState.BLOCKED
    claim(backend, clock)
    assert backend.rescue_expired(now=clock.advance(31)) == 1
    assert state(backend, a.id) is JobState.DEAD
    assert_dependency_failed(record(backend, b.id), a.id, "dead")


def test_resolution_through_expiry_at_claim(backend: Backend, clock: Clock) -> None:
    """A job claimed after its deadline is recorded EXPIRED by the worker: its dependents are
    cancelled in the same transaction."""
    a, b = _chain(backend, clock, deadline=clock.now + timedelta(seconds=1))
    clock.advance(5)
    (r,) = claim(backend, clock)
    finish(backend, clock, r, OutcomeKind.EXPIRED)
    assert_dependency_failed(record(backend, b.id), a.id, "expired")


def test_resolution_through_delete(backend: Backend, clock: Clock) -> None:
    """Decision: deleting a dependency counts as cancelling it; the dependent's error says the
    dependency "ended cancelled"."""
    a, b = _chain(backend, clock)
    c, d = backend.enqueue_many(
        [new_job("c"), new_job("d", depends_on_batch=(0,), allow_failed=True)], now=clock.now
    )
    assert backend.delete(a.id, now=clock.now) is True
    assert backend.get(a.id) is None
    assert_dependency_failed(record(backend, b.id), a.id, "cancelled")
    assert backend.delete(c.id, now=clock.now) is True
    assert state(backend, d.id) is JobState.AVAILABLE


def test_deleting_a_completed_dependency_changes_nothing(backend: Backend, clock: Clock) -> None:
    a, b = backend.enqueue_many([new_job("a"), new_job("b", depends_on_batch=(0,))], now=clock.now)
    (r,) = claim(backend, clock)
    finish(backend, clock, r)
    assert backend.delete(a.id, now=clock.now) is True
    assert state(backend, b.id) is JobState.AVAILABLE
    # a dependency that is gone cannot be named any more
    with pytest.raises(DependencyError, match=str(a.id)):
        backend.enqueue_many([new_job(depends_on=(a.id,))], now=clock.now)


def test_manual_retry_of_a_dead_dependency_does_not_resurrect_dependents(
    backend: Backend, clock: Clock
) -> None:
    a, b = _chain(backend, clock)
    (r,) = claim(backend, clock)
    finish(backend, clock, r, OutcomeKind.DEAD)
    assert backend.retry(a.id, now=clock.now).state is JobState.AVAILABLE
    assert backend.retry_many(JobFilter(task="a", state=JobState.DEAD), now=clock.now) == 0
    assert state(backend, b.id) is JobState.CANCELLED
    (r2,) = claim(backend, clock)
    finish(backend, clock, r2)
    assert state(backend, b.id) is JobState.CANCELLED


def test_a_dependent_never_starts_before_its_dependencies_complete(
    open_store: Callable[[], Backend], clock: Clock
) -> None:
    """A random DAG worked off by two handles in random batch sizes: every claim only ever
    returns jobs whose dependencies all completed before it."""
    rnd = random.Random(5)
    handles = [open_store(), open_store()]
    specs = []
    for i in range(40):
        deps = tuple(sorted(rnd.sample(range(i), k=min(i, rnd.randint(0, 3)))))
        specs.append(new_job(f"j{i}", priority=rnd.randint(0, 3), depends_on_batch=deps))
    recs = handles[0].enqueue_many(specs, now=clock.now)
    deps_of = {r.id: set(r.depends_on) for r in recs}
    completed: set[int] = set()
    running: list[JobRecord] = []
    for _ in range(500):
        h = handles[rnd.randrange(2)]
        done_now = [running.pop(rnd.randrange(len(running))) for _ in range(min(len(running), 2))]
        outcomes = [Outcome(lease_of(r), OutcomeKind.COMPLETED) for r in done_now]
        if rnd.random() < 0.5:
            h.record_outcomes(outcomes, now=clock.now)
            got = claim(h, clock, rnd.randint(1, 4))
        else:
            _, got = h.record_and_claim(
                outcomes, ["default"], rnd.randint(1, 4), worker_id="w", lease=LEASE, now=clock.now
            )
        completed |= {r.id for r in done_now}
        for g in got:
            assert deps_of[g.id] <= completed, f"job {g.id} started before {deps_of[g.id]}"
        running += got
        if len(completed) == len(recs):
            break
    assert len(completed) == len(recs)


# == concurrency limits ========================================================================


def limited(n: int, key: str = "cust-1", k: int = 2, **kw: Any) -> list[Any]:
    return [new_job(f"{key}-{i}", concurrency_key=key, concurrency_limit=k, **kw) for i in range(n)]


def test_concurrency_limit_across_two_handles(
    open_store: Callable[[], Backend], clock: Clock
) -> None:
    a, b = open_store(), open_store()
    a.enqueue_many(limited(6, k=2), now=clock.now)
    first = claim(a, clock, 10, worker="a")
    assert len(first) == 2 and all(r.concurrency_key == "cust-1" for r in first)
    assert claim(b, clock, 10, worker="b") == []
    finish(b, clock, first[0])
    (nxt,) = claim(b, clock, 10, worker="b")
    assert running_with(a, "cust-1") == 2
    assert nxt.id not in {r.id for r in first}


@pytest.mark.parametrize("how", ["complete", "dead", "retry", "cancel", "release", "rescue"])
def test_limited_slot_is_freed_when_a_running_job_stops(
    backend: Backend, clock: Clock, how: str
) -> None:
    backend.enqueue_many(limited(3, k=1), now=clock.now)
    (r,) = claim(backend, clock)
    assert claim(backend, clock) == []
    if how == "complete":
        finish(backend, clock, r)
    elif how == "dead":
        finish(backend, clock, r, OutcomeKind.DEAD)
    elif how == "retry":
        backend.record_outcomes(
            [Outcome(lease_of(r), OutcomeKind.RETRY, delay=timedelta(hours=1))], now=clock.now
        )
    elif how == "cancel":
        backend.cancel(r.id, now=clock.now)
    elif how == "release":
        backend.release([lease_of(r)], now=clock.now)
    else:
        backend.rescue_expired(now=clock.advance(31))
    got = claim(backend, clock)
    assert len(got) == 1 and running_with(backend, "cust-1") == 1


def test_different_concurrency_keys_are_independent(backend: Backend, clock: Clock) -> None:
    backend.enqueue_many(limited(4, "a", k=1) + limited(4, "b", k=2), now=clock.now)
    got = claim(backend, clock, 10)
    assert sorted(r.concurrency_key or "" for r in got) == ["a", "b", "b"]


def test_unlimited_jobs_fill_the_remaining_slots(backend: Backend, clock: Clock) -> None:
    backend.enqueue_many(
        [*limited(3, k=1, priority=9), new_job("u1"), new_job("u2"), new_job("u3")],
        now=clock.now,
    )
    got = claim(backend, clock, 3)
    assert sorted(r.task for r in got) == ["cust-1-0", "u1", "u2"]
    assert [r.task for r in claim(backend, clock, 10)] == ["u3"]


def test_limited_jobs_are_taken_first(backend: Backend, clock: Clock) -> None:
    """As decided for the backends: a claim takes the limited jobs the limits allow first, then
    fills the remaining slots with unlimited jobs in claim order."""
    backend.enqueue_many([new_job("u", priority=9), *limited(2, k=1)], now=clock.now)
    assert [r.task for r in claim(backend, clock, 1)] == ["cust-1-0"]
    assert [r.task for r in claim(backend, clock, 5)] == ["u"]


def test_limited_candidates_follow_claim_order(backend: Backend, clock: Clock) -> None:
    backend.enqueue_many(
        [
            new_job("low", concurrency_key="k", concurrency_limit=1, priority=1),
            new_job("high", concurrency_key="k", concurrency_limit=1, priority=5),
        ],
        now=clock.now,
    )
    assert [r.task for r in claim(backend, clock)] == ["high"]


def test_concurrency_limit_holds_when_two_handles_claim_at_once(
    open_store: Callable[[], Backend], clock: Clock
) -> None:
    handles = [open_store(), open_store()]
    handles[0].enqueue_many(limited(40, k=3) + limited(10, "other", k=1), now=clock.now)
    for round_ in range(3):
        got = race(
            2,
            lambda i: handles[i].claim(
                ["default"], 5, worker_id=f"w{i}", lease=LEASE, now=clock.now
            ),
        )
        assert running_with(handles[0], "cust-1") <= 3
        assert running_with(handles[0], "other") <= 1
        assert sum(len(g) for g in got) == 4, f"round {round_}"  # 3 of cust-1, 1 of other
        # finish everything that runs, then race again
        for g in got:
            for r in g:
                finish(handles[0], clock, r)


def test_record_and_claim_honours_limits(backend: Backend, clock: Clock) -> None:
    backend.enqueue_many([*limited(4, k=2), *rated(3, per=1), new_job("free")], now=clock.now)
    first = claim(backend, clock, 10)
    assert sorted(r.task for r in first) == ["api-0", "cust-1-0", "cust-1-1", "free"]
    (c0,) = [r for r in first if r.task == "cust-1-0"]
    (a0,) = [r for r in first if r.task == "api-0"]
    done, got = backend.record_and_claim(
        [
            Outcome(lease_of(c0), OutcomeKind.COMPLETED),
            Outcome(lease_of(a0), OutcomeKind.COMPLETED),
        ],
        ["default"],
        10,
        worker_id="w1",
        lease=LEASE,
        now=clock.now,
    )
    assert done == {c0.id, a0.id}
    assert [r.task for r in got] == ["cust-1-2"]  # the freed slot; the rate is still used up
    assert running_with(backend, "cust-1") == 2


def test_limited_jobs_only_from_served_queues(backend: Backend, clock: Clock) -> None:
    backend.enqueue_many(limited(2, k=5, queue="elsewhere"), now=clock.now)
    assert claim(backend, clock) == []
    assert len(claim(backend, clock, 10, ("elsewhere",))) == 2


# == rate limits ===============================================================================


def rated(n: int, key: str = "api", per: int = 2, period: timedelta = MINUTE) -> list[Any]:
    return [
        new_job(f"{key}-{i}", rate_key=key, rate_limit=per, rate_period=period) for i in range(n)
    ]


def test_rate_limit_sliding_window(open_store: Callable[[], Backend], clock: Clock) -> None:
    """Decision: a start counts while started_at > now - rate_period; exactly one period after
    a start, that start has left the window."""
    a, b = open_store(), open_store()
    start = clock.now
    a.enqueue_many([*rated(6, per=2), new_job("free")], now=start)
    got = claim(a, clock, 10)
    assert sorted(r.task for r in got) == ["api-0", "api-1", "free"]
    for r in got:
        finish(a, clock, r)  # finishing does not give a start back
    assert claim(b, clock, 10) == []
    clock.now = start + timedelta(seconds=30)
    assert claim(b, clock, 10) == []
    clock.now = start + MINUTE - timedelta(microseconds=1)
    assert claim(a, clock, 10) == []
    clock.now = start + MINUTE
    first = claim(b, clock, 1)
    assert [r.task for r in first] == ["api-2"]
    clock.now = start + timedelta(seconds=90)
    assert [r.task for r in claim(a, clock, 10)] == ["api-3"]  # api-2's start still counts
    clock.now = start + MINUTE * 2
    assert [r.task for r in claim(a, clock, 10)] == ["api-4"]  # api-3 still counts
    clock.now = start + timedelta(seconds=150)
    assert [r.task for r in claim(b, clock, 10)] == ["api-5"]


def test_released_jobs_still_used_their_rate_start(backend: Backend, clock: Clock) -> None:
    backend.enqueue_many(rated(2, per=1), now=clock.now)
    (r,) = claim(backend, clock)
    backend.release([lease_of(r)], now=clock.now)
    assert claim(backend, clock) == []
    clock.advance(60)
    assert len(claim(backend, clock)) == 1


def test_rate_and_concurrency_limits_together(backend: Backend, clock: Clock) -> None:
    backend.enqueue_many(
        [
            new_job(
                f"j{i}",
                concurrency_key="c",
                concurrency_limit=1,
                rate_key="r",
                rate_limit=2,
                rate_period=MINUTE,
            )
            for i in range(4)
        ],
        now=clock.now,
    )
    (r,) = claim(backend, clock)
    finish(backend, clock, r)
    (r,) = claim(backend, clock)
    finish(backend, clock, r)
    assert claim(backend, clock) == []  # the rate is used up, though nothing runs
    clock.advance(60)
    assert len(claim(backend, clock)) == 1  # concurrency 1


def test_different_rate_keys_are_independent(backend: Backend, clock: Clock) -> None:
    backend.enqueue_many(rated(3, "a", per=1) + rated(3, "b", per=2), now=clock.now)
    assert sorted(r.rate_key or "" for r in claim(backend, clock)) == ["a", "b", "b"]


# == paused queues and backpressure ============================================================


def test_paused_queue_is_not_claimed_until_resumed(
    open_store: Callable[[], Backend], clock: Clock
) -> None:
    a, b = open_store(), open_store()
    assert a.set_queue("mail", paused=True) == QueueSettings(paused=True)
    assert b.queue_settings() == {"mail": QueueSettings(paused=True)}
    (m,) = b.enqueue_many([new_job("m", queue="mail")], now=clock.now)  # enqueue still works
    b.enqueue_many([new_job("d"), *limited(1, queue="mail")], now=clock.now)
    assert [r.task for r in claim(b, clock, 10, ("mail", "default"))] == ["d"]
    _done, got = b.record_and_claim([], ["mail"], 5, worker_id="w", lease=LEASE, now=clock.now)
    assert got == []
    assert a.set_queue("mail", paused=False) == QueueSettings()
    got = claim(b, clock, 10, ("mail",))
    assert {r.task for r in got} == {"m", "cust-1-0"} and m.id in {r.id for r in got}


def test_set_queue_changes_only_what_it_is_given(backend: Backend) -> None:
    """Decision: a queue once configured stays listed by queue_settings, with default values
    when its settings are put back."""
    assert backend.queue_settings() == {}
    assert backend.set_queue("q", max_depth=5) == QueueSettings(max_depth=5)
    assert backend.set_queue("q", paused=True) == QueueSettings(paused=True, max_depth=5)
    assert backend.set_queue("q") == QueueSettings(paused=True, max_depth=5)
    assert backend.set_queue("q", max_depth=None) == QueueSettings(paused=True)
    assert backend.set_queue("q", paused=False) == QueueSettings()
    assert backend.queue_settings() == {"q": QueueSettings()}


def test_max_depth_refuses_with_nothing_written(backend: Backend, clock: Clock) -> None:
    (dep,) = backend.enqueue_many([new_job("dep", queue="other")], now=clock.now)
    backend.set_queue("q", max_depth=3)
    backend.enqueue_many(
        [
            new_job(queue="q"),
            new_job(queue="q", delay=MINUTE),
            new_job(queue="q", depends_on=(dep.id,)),
        ],
        now=clock.now,
    )  # available, scheduled and blocked all count
    before = backend.stats()
    with pytest.raises(QueueFull, match="'q'") as exc:
        backend.enqueue_many([new_job(queue="other"), new_job(queue="q")], now=clock.now)
    assert "3" in str(exc.value)
    assert backend.stats() == before
    backend.enqueue_many([new_job(queue="other")], now=clock.now)  # other queues unaffected


def test_max_depth_refuses_a_batch_that_would_cross_it(backend: Backend, clock: Clock) -> None:
    backend.set_queue("q", max_depth=4)
    backend.enqueue_many([new_job(queue="q") for _ in range(2)], now=clock.now)
    with pytest.raises(QueueFull):
        backend.enqueue_many([new_job(queue="q") for _ in range(3)], now=clock.now)
    assert backend.stats() == {"q": {JobState.AVAILABLE: 2}}
    backend.enqueue_many([new_job(queue="q") for _ in range(2)], now=clock.now)  # exactly full
    assert backend.stats() == {"q": {JobState.AVAILABLE: 4}}


def test_running_and_finished_jobs_do_not_count_toward_max_depth(
    backend: Backend, clock: Clock
) -> None:
    backend.set_queue("default", max_depth=2)
    backend.enqueue_many([new_job(), new_job()], now=clock.now)
    with pytest.raises(QueueFull):
        backend.enqueue_many([new_job()], now=clock.now)
    a, _b = claim(backend, clock, 2)
    finish(backend, clock, a)
    backend.enqueue_many([new_job(), new_job()], now=clock.now)
    backend.set_queue("default", max_depth=None)
    backend.enqueue_many([new_job()], now=clock.now)
    backend.set_queue("default", max_depth=0)
    with pytest.raises(QueueFull):
        backend.enqueue_many([new_job(queue="default")], now=clock.now)


# == held, progress ============================================================================


def test_held_reports_leases_still_held(backend: Backend, clock: Clock) -> None:
    backend.enqueue_many([new_job() for _ in range(4)], now=clock.now)
    a, b, c, d = claim(backend, clock, 4)
    finish(backend, clock, b)
    backend.cancel(c.id, now=clock.now)
    assert backend.held([lease_of(x) for x in (a, b, c, d)] + [Lease(d.id, "forged")]) == {
        a.id,
        d.id,
    }
    assert backend.held([]) == set()
    assert backend.held([Lease(123_456, "x")]) == set()


def test_set_progress_is_fenced(backend: Backend, clock: Clock) -> None:
    (j,) = backend.enqueue_many([new_job()], now=clock.now)
    assert j.progress is None and j.progress_message is None
    assert backend.set_progress(Lease(j.id, "none-yet"), 0.5, "x") is False
    (r,) = claim(backend, clock)
    assert r.progress is None
    assert backend.set_progress(lease_of(r), 0.25, "a quarter") is True
    got = record(backend, j.id)
    assert (got.progress, got.progress_message) == (0.25, "a quarter")
    assert backend.set_progress(lease_of(r), None, "no fraction") is True
    got = record(backend, j.id)
    assert (got.progress, got.progress_message) == (None, "no fraction")
    assert backend.set_progress(lease_of(r), 1.0, None) is True
    assert backend.set_progress(Lease(j.id, "forged"), 0.1, "late") is False
    finish(backend, clock, r)
    assert backend.set_progress(lease_of(r), 0.0, "after the end") is False
    got = record(backend, j.id)
    assert (got.progress, got.progress_message) == (1.0, None)


# == bulk operator actions =====================================================================


def test_cancel_many_by_queue_state_and_task(backend: Backend, clock: Clock) -> None:
    recs = backend.enqueue_many(
        [
            new_job("a", queue="q1"),
            new_job("a", queue="q1", delay=MINUTE),
            new_job("b", queue="q1"),
            new_job("a", queue="q2"),
        ],
        now=clock.now,
    )
    assert backend.cancel_many(JobFilter(queue="q1", state=JobState.SCHEDULED), now=clock.now) == 1
    assert state(backend, recs[1].id) is JobState.CANCELLED
    (running,) = claim(backend, clock, 1, ("q2",))
    assert backend.cancel_many(JobFilter(task="a"), now=clock.now) == 2
    assert backend.held([lease_of(running)]) == set()  # a running one's lease is void
    assert (
        backend.record_outcomes([Outcome(lease_of(running), OutcomeKind.COMPLETED)], now=clock.now)
        == set()
    )
    assert [state(backend, r.id) for r in recs] == [
        JobState.CANCELLED,
        JobState.CANCELLED,
        JobState.AVAILABLE,
        JobState.CANCELLED,
    ]
    assert backend.cancel_many(JobFilter(task="a"), now=clock.now) == 0
    assert backend.cancel_many(JobFilter(state=JobState.CANCELLED), now=clock.now) == 0
    got = record(backend, recs[0].id)
    assert got.finished_at == clock.now and got.last_error is not None
    assert got.last_error.type == "Cancelled"


def test_retry_many_by_filter(backend: Backend, clock: Clock) -> None:
    recs = backend.enqueue_many([new_job("a"), new_job("a"), new_job("b")], now=clock.now)
    r0, r1, r2 = claim(backend, clock, 3)
    finish(backend, clock, r0, OutcomeKind.DEAD)
    finish(backend, clock, r1)
    finish(backend, clock, r2, OutcomeKind.DEAD)
    assert backend.retry_many(JobFilter(state=JobState.DEAD, task="a"), now=clock.now) == 1
    again = record(backend, recs[0].id)
    assert again.state is JobState.AVAILABLE and again.finished_at is None
    assert again.max_attempts == 3 and again.attempt == 1
    assert backend.retry_many(JobFilter(), now=clock.now) == 2  # all four terminal states
    assert backend.retry_many(JobFilter(), now=clock.now) == 0
    assert {state(backend, r.id) for r in recs} == {JobState.AVAILABLE}


@pytest.mark.parametrize("bad", [JobState.AVAILABLE, JobState.RUNNING, JobState.BLOCKED])
def test_retry_many_refuses_an_active_state_filter(
    backend: Backend, clock: Clock, bad: JobState
) -> None:
    """Decision: retry_many with an active state in its filter raises InvalidTransition (as
    ``retry`` of an active job does) and changes nothing."""
    backend.enqueue_many([new_job()], now=clock.now)
    with pytest.raises(InvalidTransition, match=bad.value):
        backend.retry_many(JobFilter(state=bad), now=clock.now)


def test_delete(backend: Backend, clock: Clock) -> None:
    a, b, c = backend.enqueue_many(
        [new_job(unique_key="k"), new_job(), new_job(delay=MINUTE)], now=clock.now
    )
    (r,) = claim(backend, clock, 1)
    assert r.id == a.id
    with pytest.raises(InvalidTransition, match="running"):
        backend.delete(a.id, now=clock.now)
    assert state(backend, a.id) is JobState.RUNNING
    backend.cancel(a.id, now=clock.now)
    assert backend.delete(a.id, now=clock.now) is True
    assert backend.get(a.id) is None
    assert backend.delete(a.id, now=clock.now) is False
    assert backend.delete(c.id, now=clock.now) is True
    assert backend.next_due() is None
    assert backend.delete(999_999, now=clock.now) is False
    assert [x.id for x in claim(backend, clock)] == [b.id]
    (d,) = backend.enqueue_many([new_job(unique_key="k")], now=clock.now)
    assert backend.delete(d.id, now=clock.now) is True
    (e,) = backend.enqueue_many([new_job(unique_key="k")], now=clock.now)  # the key is free
    assert e.id != d.id and count(backend) == 2


def test_prune_keeps_the_most_recent_per_state(backend: Backend, clock: Clock) -> None:
    cancelled = []
    for _ in range(4):
        (x,) = backend.enqueue_many([new_job("c")], now=clock.now)
        backend.cancel(x.id, now=clock.advance(10))
        cancelled.append(x.id)
    dead = []
    for _ in range(3):
        backend.enqueue_many([new_job("d")], now=clock.now)
        (r,) = claim(backend, clock)
        clock.advance(10)
        finish(backend, clock, r, OutcomeKind.DEAD)
        dead.append(r.id)
    (live,) = backend.enqueue_many([new_job("live")], now=clock.now)
    n = backend.prune(older_than=timedelta(0), states=TERMINAL_STATES, keep=2, now=clock.advance(1))
    assert n == 3
    left = {r.id for r in backend.list_jobs(JobFilter(), limit=100)}
    assert left == {cancelled[2], cancelled[3], dead[1], dead[2], live.id}


def test_prune_keep_counts_recent_jobs_too(backend: Backend, clock: Clock) -> None:
    """The ``keep`` most recently finished of a state are kept whether or not they are older
    than ``older_than``; of the rest, those finished before the cutoff go."""
    ids = []
    for _ in range(3):
        (x,) = backend.enqueue_many([new_job()], now=clock.now)
        backend.cancel(x.id, now=clock.now)
        ids.append(x.id)
        clock.advance(100)
    # finished at t0, t100, t200; now t300, cutoff t150: t0 and t100 are old
    n = backend.prune(
        older_than=timedelta(seconds=150), states=TERMINAL_STATES, keep=1, now=clock.now
    )
    assert n == 2 and [r.id for r in backend.list_jobs(JobFilter())] == [ids[2]]


def test_prune_keep_breaks_ties_by_id(backend: Backend, clock: Clock) -> None:
    recs = backend.enqueue_many([new_job() for _ in range(3)], now=clock.now)
    assert backend.cancel_many(JobFilter(), now=clock.now) == 3
    assert (
        backend.prune(older_than=timedelta(0), states=TERMINAL_STATES, keep=1, now=clock.advance(1))
        == 2
    )
    assert [r.id for r in backend.list_jobs(JobFilter())] == [recs[-1].id]


def test_prune_keep_respects_limit(backend: Backend, clock: Clock) -> None:
    backend.enqueue_many([new_job() for _ in range(6)], now=clock.now)
    backend.cancel_many(JobFilter(), now=clock.now)
    kw: dict[str, Any] = {"older_than": timedelta(0), "states": TERMINAL_STATES, "keep": 2}
    assert backend.prune(limit=3, now=clock.advance(1), **kw) == 3
    assert backend.prune(limit=3, now=clock.now, **kw) == 1
    assert count(backend) == 2


def test_search_filter(backend: Backend, clock: Clock) -> None:
    a, b, c, d, _ = backend.enqueue_many(
        [
            new_job(args_json='["Alice"]'),
            new_job(kwargs_json='{"customer":"ALICE-7"}'),
            new_job(args_json='["bob"]', kwargs_json='{"note":"50% off"}'),
            new_job(args_json='["a_c"]'),
            new_job(args_json='["abc"]'),
        ],
        now=clock.now,
    )
    found = backend.list_jobs(JobFilter(search="alice"))
    assert [r.id for r in found] == [b.id, a.id]
    # Decision: the search text is literal, SQL wildcards included.
    assert [r.id for r in backend.list_jobs(JobFilter(search="0%"))] == [c.id]
    assert [r.id for r in backend.list_jobs(JobFilter(search="a_c"))] == [d.id]
    assert [r.id for r in backend.list_jobs(JobFilter(search="%"))] == [c.id]
    assert backend.list_jobs(JobFilter(search="zed")) == []
    assert backend.cancel_many(JobFilter(search="ALICE"), now=clock.now) == 2
    assert backend.retry_many(JobFilter(search="alice-7"), now=clock.now) == 1
    assert state(backend, b.id) is JobState.AVAILABLE
    assert state(backend, a.id) is JobState.CANCELLED


# == periodic ticks ============================================================================


def test_enqueue_tick_once_per_tick(open_store: Callable[[], Backend], clock: Clock) -> None:
    a, b = open_store(), open_store()
    t1 = clock.now
    assert a.cron_ticks() == {}
    r = a.enqueue_tick("report", t1, new_job("report"), now=clock.now)
    assert r is not None and r.task == "report" and r.state is JobState.AVAILABLE
    assert b.enqueue_tick("report", t1, new_job("report"), now=clock.now) is None
    assert b.cron_ticks() == {"report": t1}
    t0 = t1 - MINUTE
    assert b.enqueue_tick("report", t0, new_job("report"), now=clock.now) is None  # older
    assert a.cron_ticks() == {"report": t1}
    t2 = t1 + MINUTE
    r2 = b.enqueue_tick("report", t2, new_job("report"), now=clock.now)
    assert r2 is not None and r2.id != r.id
    r3 = b.enqueue_tick("other", t0, new_job("other"), now=clock.now)  # names are independent
    assert r3 is not None
    assert a.cron_ticks() == {"report": t2, "other": t0}
    assert count(a) == 3


def test_enqueue_tick_stores_nothing_when_the_enqueue_fails(backend: Backend, clock: Clock) -> None:
    backend.set_queue("default", max_depth=0)
    with pytest.raises(QueueFull):
        backend.enqueue_tick("report", clock.now, new_job("report"), now=clock.now)
    assert backend.cron_ticks() == {}
    backend.set_queue("default", max_depth=None)
    assert backend.enqueue_tick("report", clock.now, new_job("report"), now=clock.now)


def test_two_schedulers_racing_enqueue_each_tick_once(
    open_store: Callable[[], Backend], clock: Clock
) -> None:
    handles = [open_store(), open_store()]
    start = clock.now
    for i in range(8):
        tick: datetime = start + MINUTE * i
        got = race(
            2,
            lambda h, tick=tick: handles[h].enqueue_tick(  # type: ignore[misc]
                "every-minute", tick, new_job("cron"), now=clock.now
            ),
        )
        assert sum(1 for g in got if g is not None) == 1, f"tick {i} enqueued {got}"
    assert count(handles[0]) == 8
    assert handles[1].cron_ticks() == {"every-minute": start + MINUTE * 7}


# == distributed locks =========================================================================


def test_lock_acquire_renew_release(open_store: Callable[[], Backend], clock: Clock) -> None:
    """Decision: a lock is free once now > expires_at (as a job's lease: held up to and
    including its expiry instant); the holder itself cannot acquire it again while it holds it
    (the lock is not re-entrant); renewing with the current token works even after the expiry
    as long as nobody took the lock over."""
    a, b = open_store(), open_store()
    ttl = timedelta(seconds=10)
    t1 = a.acquire_lock("import:7", "alice", ttl, now=clock.now)
    assert isinstance(t1, int)
    assert b.acquire_lock("import:7", "bob", ttl, now=clock.now) is None
    assert a.acquire_lock("import:7", "alice", ttl, now=clock.now) is None
    assert b.acquire_lock("other", "bob", ttl, now=clock.now) is not None  # names independent
    assert a.renew_lock("import:7", t1, ttl, now=clock.advance(5)) is True  # until t15
    assert b.acquire_lock("import:7", "bob", ttl, now=clock.advance(10)) is None  # at t15
    assert a.renew_lock("import:7", t1 + 1, ttl, now=clock.now) is False  # wrong token
    assert a.release_lock("import:7", t1 + 1) is False
    clock.advance(1)  # t16: expired, not yet taken over
    assert a.renew_lock("import:7", t1, ttl, now=clock.now) is True  # until t26
    assert b.acquire_lock("import:7", "bob", ttl, now=clock.now) is None
    assert a.release_lock("import:7", t1) is True
    assert a.release_lock("import:7", t1) is False
    assert a.renew_lock("import:7", t1, ttl, now=clock.now) is False
    t2 = b.acquire_lock("import:7", "bob", ttl, now=clock.now)
    assert t2 is not None and t2 > t1


def test_expired_lock_is_taken_over_with_a_larger_token(
    open_store: Callable[[], Backend], clock: Clock
) -> None:
    a, b = open_store(), open_store()
    ttl = timedelta(seconds=10)
    t1 = a.acquire_lock("L", "alice", ttl, now=clock.now)
    assert t1 is not None
    assert b.acquire_lock("L", "bob", ttl, now=clock.advance(10)) is None  # held at expiry
    t2 = b.acquire_lock("L", "bob", ttl, now=clock.advance(0.000001))
    assert t2 is not None and t2 > t1
    # the stale holder's token is refused everywhere
    assert a.renew_lock("L", t1, ttl, now=clock.now) is False
    assert a.release_lock("L", t1) is False
    assert b.renew_lock("L", t2, ttl, now=clock.now) is True
    # tokens never reset, even after release
    seen = [t1, t2]
    assert b.release_lock("L", t2) is True
    for owner in ("carol", "dave", "alice"):
        t = a.acquire_lock("L", owner, ttl, now=clock.now)
        assert t is not None and t > max(seen)
        seen.append(t)
        assert a.release_lock("L", t) is True


def test_two_handles_racing_for_one_lock(open_store: Callable[[], Backend], clock: Clock) -> None:
    handles = [open_store(), open_store()]
    ttl = timedelta(seconds=30)
    for i in range(6):
        name = f"lock-{i}"
        got = race(
            2,
            lambda h, name=name: handles[h].acquire_lock(  # type: ignore[misc]
                name, f"owner-{h}", ttl, now=clock.now
            ),
        )
        assert sum(1 for g in got if g is not None) == 1


# == new record fields =========================================================================


def test_new_record_fields_round_trip(backend: Backend, clock: Clock) -> None:
    (dep,) = backend.enqueue_many([new_job("dep")], now=clock.now)
    (j,) = backend.enqueue_many(
        [
            new_job(
                "full",
                queue="q",
                concurrency_key="cust-9",
                concurrency_limit=4,
                rate_key="api",
                rate_limit=10,
                rate_period=MINUTE,
                depends_on=(dep.id,),
                allow_failed=True,
                secret=("password", "0"),
            )
        ],
        now=clock.now,
    )
    expect = {
        "concurrency_key": "cust-9",
        "rate_key": "api",
        "depends_on": (dep.id,),
        "allow_failed": True,
        "secret": ("password", "0"),
        "progress": None,
        "progress_message": None,
    }

    def fields(r: JobRecord) -> dict[str, Any]:
        return {k: getattr(r, k) for k in expect}

    assert fields(j) == expect
    assert fields(record(backend, j.id)) == expect
    (listed,) = backend.list_jobs(JobFilter(queue="q"))
    assert listed == record(backend, j.id)
    (d,) = claim(backend, clock)
    finish(backend, clock, d)
    (claimed,) = claim(backend, clock, 1, ("q",))
    assert fields(claimed) == expect
    plain = record(backend, dep.id)
    assert (plain.concurrency_key, plain.rate_key, plain.depends_on) == (None, None, ())
    assert (plain.allow_failed, plain.secret) == (False, ())


def test_blocked_and_flow_states_in_stats(backend: Backend, clock: Clock) -> None:
    (a,) = backend.enqueue_many([new_job("a")], now=clock.now)
    backend.enqueue_many([new_job("b", depends_on=(a.id,))], now=clock.now)
    assert backend.stats() == {"default": {JobState.AVAILABLE: 1, JobState.BLOCKED: 1}}
    assert [r.task for r in backend.list_jobs(JobFilter(state=JobState.BLOCKED))] == ["b"]
