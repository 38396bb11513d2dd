"""Lost jobs on every backend: ``rescue_expired`` counts each rescue in ``lost``, and ``claim`` /
``record_and_claim`` take at most ``max_lost`` jobs that were lost before (see
``jobq/backends/base.py``). Workers claim with ``max_lost=1`` (``0`` while they hold a lost job),
so a job that kills its worker cannot take the same batch-mates down with it every time."""

from __future__ import annotations

from typing import Any

from jobq.backends import Backend, Lease, Outcome, OutcomeKind
from jobq.job import JobRecord
from jobq.states import JobState
from tests.conformance.test_flow_control import LEASE, claim, lease_of
from tests.conftest import Clock, new_job


def enqueue(backend: Backend, clock: Clock, n: int, **kw: Any) -> list[int]:
    return [
        r.id
        for r in backend.enqueue_many(
            [new_job(max_attempts=5, **kw) for _ in range(n)], now=clock.now
        )
    ]


def lose(backend: Backend, clock: Clock, n: int, **kw: Any) -> list[int]:
    """``n`` new jobs, claimed by a worker that then vanishes: rescued, available again."""
    ids = enqueue(backend, clock, n, **kw)
    queues = (str(kw.get("queue", "default")),)
    assert sorted(r.id for r in claim(backend, clock, n, queues=queues, worker="gone")) == ids
    clock.advance(LEASE.total_seconds() + 1)
    assert backend.rescue_expired(now=clock.now) == n
    return ids


def ids_of(records: list[JobRecord]) -> list[int]:
    return [r.id for r in records]


def test_new_jobs_were_never_lost(backend: Backend, clock: Clock) -> None:
    (job_id,) = enqueue(backend, clock, 1)
    record = backend.get(job_id)
    assert record is not None and record.lost == 0
    (got,) = claim(backend, clock, 1)
    assert got.lost == 0


def test_each_rescue_adds_one_to_lost(backend: Backend, clock: Clock) -> None:
    (job_id,) = lose(backend, clock, 1)
    record = backend.get(job_id)
    assert record is not None
    assert (record.state, record.lost, record.attempt) == (JobState.AVAILABLE, 1, 1)
    (again,) = claim(backend, clock, 1)
    assert (again.id, again.lost) == (job_id, 1)  # a claim shows the count
    clock.advance(LEASE.total_seconds() + 1)
    assert backend.rescue_expired(now=clock.now) == 1
    record = backend.get(job_id)
    assert record is not None and record.lost == 2
    # an outcome leaves the count as it was
    (third,) = claim(backend, clock, 1)
    backend.record_outcomes([Outcome(lease_of(third), OutcomeKind.COMPLETED)], now=clock.now)
    record = backend.get(job_id)
    assert record is not None and (record.state, record.lost) == (JobState.COMPLETED, 2)


def test_a_job_parked_dead_by_a_rescue_counts_it_too(backend: Backend, clock: Clock) -> None:
    (record,) = backend.enqueue_many([new_job(max_attempts=1)], now=clock.now)
    claim(backend, clock, 1)
    clock.advance(LEASE.total_seconds() + 1)
    assert backend.rescue_expired(now=clock.now) == 1
    after = backend.get(record.id)
    assert after is not None and (after.state, after.lost) == (JobState.DEAD, 1)


def test_max_lost_none_claims_as_before(backend: Backend, clock: Clock) -> None:
    lost = lose(backend, clock, 3)
    fresh = enqueue(backend, clock, 2)
    got = claim(backend, clock, 10, max_lost=None)
    assert ids_of(got) == lost + fresh  # claim order: same priority, earlier run_at first
    assert [r.lost for r in got] == [1, 1, 1, 0, 0]


def test_max_lost_zero_leaves_lost_jobs_for_others(backend: Backend, clock: Clock) -> None:
    lost = lose(backend, clock, 2)
    fresh = enqueue(backend, clock, 2)
    assert ids_of(claim(backend, clock, 10, max_lost=0)) == fresh
    assert claim(backend, clock, 10, max_lost=0) == []
    for job_id in lost:
        record = backend.get(job_id)
        assert record is not None and record.state is JobState.AVAILABLE
    # the jobs left behind are still there, in order, for a claim that may take them
    assert ids_of(claim(backend, clock, 10, worker="w2")) == lost


def test_max_lost_one_takes_at_most_one_lost_job(backend: Backend, clock: Clock) -> None:
    lost = lose(backend, clock, 3)
    fresh = enqueue(backend, clock, 2)
    got = claim(backend, clock, 10, max_lost=1)
    # the first lost job in claim order, and every job never lost
    assert ids_of(got) == [lost[0], *fresh]
    assert ids_of(claim(backend, clock, 10, max_lost=1)) == [lost[1]]
    assert ids_of(claim(backend, clock, 10, max_lost=2)) == [lost[2]]


def test_max_lost_counts_within_the_claim_limit(backend: Backend, clock: Clock) -> None:
    lost = lose(backend, clock, 2)
    fresh = enqueue(backend, clock, 2)
    # the lost job is first in claim order, so a claim of one takes it
    assert ids_of(claim(backend, clock, 1, max_lost=1)) == [lost[0]]
    assert ids_of(claim(backend, clock, 2, max_lost=1)) == [lost[1], fresh[0]]


def test_max_lost_holds_across_queues(backend: Backend, clock: Clock) -> None:
    a = lose(backend, clock, 2, queue="a")
    b = lose(backend, clock, 2, queue="b")
    got = claim(backend, clock, 10, queues=("a", "b"), max_lost=1)
    assert ids_of(got) == [a[0]]
    got = claim(backend, clock, 10, queues=("b", "a"), max_lost=1, queue_order=True)
    assert ids_of(got) == [b[0]]
    got = claim(backend, clock, 10, queues=("a", "b"), max_lost=None)
    assert ids_of(got) == [a[1], b[1]]


def test_record_and_claim_honours_max_lost(backend: Backend, clock: Clock) -> None:
    lost = lose(backend, clock, 2)
    (done_job,) = enqueue(backend, clock, 1)
    fresh = enqueue(backend, clock, 2)
    # claim order puts the lost jobs first: take done_job alone through max_lost=0
    (running,) = claim(backend, clock, 1, max_lost=0)
    assert running.id == done_job
    outcome = Outcome(lease_of(running), OutcomeKind.COMPLETED)
    done, got = backend.record_and_claim(
        [outcome], ["default"], 10, worker_id="w1", lease=LEASE, now=clock.now, max_lost=0
    )
    assert done == {done_job} and ids_of(got) == fresh
    done, got = backend.record_and_claim(
        [], ["default"], 10, worker_id="w1", lease=LEASE, now=clock.now, max_lost=1
    )
    assert done == set() and ids_of(got) == [lost[0]]
    late = Outcome(Lease(got[0].id, got[0].lease_token or ""), OutcomeKind.COMPLETED)
    done, got = backend.record_and_claim(
        [late], ["default"], 10, worker_id="w1", lease=LEASE, now=clock.now, max_lost=None
    )
    assert done == {lost[0]} and ids_of(got) == [lost[1]]
