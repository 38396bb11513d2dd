"""The Backend contract (jobq/backends/base.py), run unchanged against every backend.

Time is injected through ``now=``: nothing here sleeps.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta

import pytest

from jobq.backends import Backend, JobFilter, Lease, Outcome, OutcomeKind
from jobq.backends.base import WorkerInfo
from jobq.exceptions import InvalidTransition, JobNotFound, UniqueConflict
from jobq.job import AttemptError, JobRecord
from jobq.states import TERMINAL_STATES, JobState
from tests.conftest import Clock, new_job

LEASE = timedelta(seconds=30)


def claim(
    backend: Backend,
    clock: Clock,
    n: int = 10,
    queues: tuple[str, ...] = ("default",),
    **kw: object,
) -> list[JobRecord]:
    return backend.claim(queues, n, worker_id="w1", lease=LEASE, now=clock.now, **kw)  # type: ignore[arg-type]


def lease_of(r: JobRecord) -> Lease:
    assert r.lease_token is not None
    return Lease(r.id, r.lease_token)


def err(attempt: int, clock: Clock, msg: str = "boom") -> AttemptError:
    return AttemptError(attempt, clock.now, "ValueError", msg, "Traceback...")


# -- enqueue -----------------------------------------------------------------------------------


def test_enqueue_returns_records_in_order(backend: Backend, clock: Clock) -> None:
    recs = backend.enqueue_many(
        [new_job("a", args_json="[1]"), new_job("b", kwargs_json='{"x":2}')], now=clock.now
    )
    assert [r.task for r in recs] == ["a", "b"]
    assert recs[0].id < recs[1].id
    assert all(r.state is JobState.AVAILABLE and r.attempt == 0 for r in recs)
    assert recs[0].args == [1] and recs[1].kwargs == {"x": 2}
    assert recs[0].run_at == clock.now and recs[0].created_at == clock.now
    stored = backend.get(recs[1].id)
    assert stored == recs[1]


def test_enqueue_future_job_is_scheduled(backend: Backend, clock: Clock) -> None:
    (r,) = backend.enqueue_many([new_job(delay=timedelta(seconds=5))], now=clock.now)
    assert r.state is JobState.SCHEDULED
    assert r.run_at == clock.now + timedelta(seconds=5)
    (r2,) = backend.enqueue_many([new_job(run_at=clock.now + timedelta(hours=1))], now=clock.now)
    assert r2.state is JobState.SCHEDULED
    assert backend.next_due() == r.run_at


def test_enqueue_empty_is_a_no_op(backend: Backend, clock: Clock) -> None:
    assert backend.enqueue_many([], now=clock.now) == []
    assert backend.stats() == {}


def test_ids_are_not_reused_after_pruning(backend: Backend, clock: Clock) -> None:
    (r,) = backend.enqueue_many([new_job()], now=clock.now)
    backend.cancel(r.id, now=clock.now)
    assert backend.prune(older_than=timedelta(0), states=TERMINAL_STATES, now=clock.advance(1)) == 1
    (r2,) = backend.enqueue_many([new_job()], now=clock.now)
    assert r2.id > r.id


# -- claim and order ---------------------------------------------------------------------------


def test_claim_order_priority_deadline_run_at_id(backend: Backend, clock: Clock) -> None:
    t = clock.now
    jobs = [
        new_job("low"),
        new_job("high", priority=5),
        new_job("high-late-deadline", priority=5, deadline=t + timedelta(hours=2)),
        new_job("high-early-deadline", priority=5, deadline=t + timedelta(hours=1)),
        new_job("low-second"),
        new_job("low-earlier-run-at", run_at=t - timedelta(seconds=10)),
    ]
    backend.enqueue_many(jobs, now=t)
    order = [r.task for r in claim(backend, clock, 10)]
    assert order == [
        "high-early-deadline",
        "high-late-deadline",
        "high",
        "low-earlier-run-at",
        "low",
        "low-second",
    ]


def test_claim_in_several_batches_keeps_order(backend: Backend, clock: Clock) -> None:
    backend.enqueue_many(
        [new_job(f"p{p}", priority=p) for p in (3, 1, 4, 1, 5, 9, 2, 6)], now=clock.now
    )
    got: list[str] = []
    while batch := claim(backend, clock, 3):
        got += [r.task for r in batch]
    assert got == ["p9", "p6", "p5", "p4", "p3", "p2", "p1", "p1"]


def test_claim_leases_each_job_with_fresh_token(backend: Backend, clock: Clock) -> None:
    backend.enqueue_many([new_job() for _ in range(5)], now=clock.now)
    recs = claim(backend, clock, 3)
    assert len(recs) == 3
    assert all(r.state is JobState.RUNNING and r.attempt == 1 for r in recs)
    assert all(r.worker_id == "w1" and r.leased_until == clock.now + LEASE for r in recs)
    assert all(r.started_at == clock.now for r in recs)
    assert len({r.lease_token for r in recs}) == 3
    assert len(claim(backend, clock, 10)) == 2
    assert claim(backend, clock, 10) == []


def test_claim_serves_only_given_queues(backend: Backend, clock: Clock) -> None:
    backend.enqueue_many(
        [
            new_job("a", queue="a"),
            new_job("b", queue="b", priority=9),
            new_job("c", queue="c", priority=5),
        ],
        now=clock.now,
    )
    assert [r.task for r in claim(backend, clock, 10, ("a", "c"))] == ["c", "a"]
    assert [r.task for r in claim(backend, clock, 10, ("zzz",))] == []


def test_claim_queue_order_drains_first_queue_first(backend: Backend, clock: Clock) -> None:
    backend.enqueue_many(
        [new_job("a1", queue="a"), new_job("b1", queue="b", priority=9), new_job("a2", queue="a")],
        now=clock.now,
    )
    recs = claim(backend, clock, 2, ("a", "b"), queue_order=True)
    assert [r.task for r in recs] == ["a1", "a2"]


def test_claim_with_zero_limit_claims_nothing(backend: Backend, clock: Clock) -> None:
    backend.enqueue_many([new_job()], now=clock.now)
    assert claim(backend, clock, 0) == []
    assert backend.stats() == {"default": {JobState.AVAILABLE: 1}}


def test_scheduled_job_is_not_claimed_until_promoted(backend: Backend, clock: Clock) -> None:
    (r,) = backend.enqueue_many([new_job(delay=timedelta(seconds=10))], now=clock.now)
    assert claim(backend, clock) == []
    assert backend.promote_due(now=clock.advance(9)) == 0
    assert backend.promote_due(now=clock.advance(1)) == 1
    assert backend.get(r.id).state is JobState.AVAILABLE  # type: ignore[union-attr]
    assert [x.id for x in claim(backend, clock)] == [r.id]
    assert backend.next_due() is None


def test_aging_lifts_long_waiting_jobs_bounded(backend: Backend, clock: Clock) -> None:
    backend.enqueue_many([new_job("old", priority=0)], now=clock.now)
    clock.advance(300)
    backend.enqueue_many(
        [new_job("new-p2", priority=2), new_job("new-p9", priority=9)], now=clock.now
    )
    assert backend.age(every=timedelta(seconds=100), max_boost=3, now=clock.now) == 1
    order = [r.task for r in claim(backend, clock, 10)]
    assert order == ["new-p9", "old", "new-p2"]
    # bounded: a very old job gains at most max_boost
    backend.enqueue_many([new_job("ancient", priority=0)], now=clock.now)
    backend.enqueue_many([new_job("p4", priority=4)], now=clock.now)
    backend.age(every=timedelta(seconds=1), max_boost=3, now=clock.advance(10_000))
    assert [r.task for r in claim(backend, clock, 10)] == ["p4", "ancient"]


# -- heartbeat and fencing ---------------------------------------------------------------------


def test_heartbeat_extends_only_matching_leases(backend: Backend, clock: Clock) -> None:
    backend.enqueue_many([new_job(), new_job()], now=clock.now)
    a, b = claim(backend, clock, 2)
    held = backend.heartbeat(
        [lease_of(a), Lease(b.id, "not-the-token")], lease=LEASE, now=clock.advance(10)
    )
    assert held == {a.id}
    assert backend.get(a.id).leased_until == clock.now + LEASE  # type: ignore[union-attr]
    assert backend.get(b.id).leased_until == b.leased_until  # type: ignore[union-attr]
    assert backend.heartbeat([], lease=LEASE, now=clock.now) == set()


def test_complete_stores_result(backend: Backend, clock: Clock) -> None:
    backend.enqueue_many([new_job()], now=clock.now)
    (r,) = claim(backend, clock)
    done = backend.record_outcomes(
        [Outcome(lease_of(r), OutcomeKind.COMPLETED, result_json='{"ok":true}')],
        now=clock.advance(1),
    )
    assert done == {r.id}
    got = backend.get(r.id)
    assert got is not None and got.state is JobState.COMPLETED
    assert got.result == {"ok": True} and got.finished_at == clock.now and got.attempt == 1


def test_outcome_with_wrong_token_changes_nothing(backend: Backend, clock: Clock) -> None:
    backend.enqueue_many([new_job()], now=clock.now)
    (r,) = claim(backend, clock)
    before = backend.get(r.id)
    assert (
        backend.record_outcomes(
            [Outcome(Lease(r.id, "forged"), OutcomeKind.COMPLETED, result_json="1")], now=clock.now
        )
        == set()
    )
    assert backend.get(r.id) == before


def test_late_write_after_rescue_is_refused(backend: Backend, clock: Clock) -> None:
    (j,) = backend.enqueue_many([new_job()], now=clock.now)
    (first,) = claim(backend, clock)
    assert backend.rescue_expired(now=clock.advance(31)) == 1
    (second,) = claim(backend, clock)
    assert second.id == j.id and second.attempt == 2
    assert second.lease_token != first.lease_token
    # the first worker wakes up and reports: nothing it says takes effect
    assert backend.heartbeat([lease_of(first)], lease=LEASE, now=clock.now) == set()
    assert (
        backend.record_outcomes(
            [Outcome(lease_of(first), OutcomeKind.COMPLETED, result_json='"stale"')], now=clock.now
        )
        == set()
    )
    assert backend.release([lease_of(first)], now=clock.now) == set()
    assert backend.get(j.id).state is JobState.RUNNING  # type: ignore[union-attr]
    assert backend.record_outcomes(
        [Outcome(lease_of(second), OutcomeKind.COMPLETED, result_json='"fresh"')], now=clock.now
    ) == {j.id}
    final = backend.get(j.id)
    assert final is not None and final.result == "fresh" and final.attempt == 2


# -- outcomes ----------------------------------------------------------------------------------


def test_retry_outcome_schedules_next_attempt(backend: Backend, clock: Clock) -> None:
    backend.enqueue_many([new_job()], now=clock.now)
    (r,) = claim(backend, clock)
    backend.record_outcomes(
        [Outcome(lease_of(r), OutcomeKind.RETRY, error=err(1, clock), delay=timedelta(seconds=20))],
        now=clock.now,
    )
    got = backend.get(r.id)
    assert got is not None and got.state is JobState.SCHEDULED
    assert got.run_at == clock.now + timedelta(seconds=20)
    assert [e.message for e in got.errors] == ["boom"] and got.errors[0].attempt == 1
    assert got.errors[0].traceback == "Traceback..."
    assert claim(backend, clock) == []
    backend.promote_due(now=clock.advance(20))
    (again,) = claim(backend, clock)
    assert again.attempt == 2


def test_retry_outcome_without_delay_is_available_at_once(backend: Backend, clock: Clock) -> None:
    backend.enqueue_many([new_job()], now=clock.now)
    (r,) = claim(backend, clock)
    backend.record_outcomes(
        [Outcome(lease_of(r), OutcomeKind.RETRY, error=err(1, clock), delay=timedelta(0))],
        now=clock.now,
    )
    assert backend.get(r.id).state is JobState.AVAILABLE  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("kind", "state"),
    [
        (OutcomeKind.DEAD, JobState.DEAD),
        (OutcomeKind.CANCELLED, JobState.CANCELLED),
        (OutcomeKind.EXPIRED, JobState.EXPIRED),
    ],
)
def test_terminal_outcomes(
    backend: Backend, clock: Clock, kind: OutcomeKind, state: JobState
) -> None:
    backend.enqueue_many([new_job()], now=clock.now)
    (r,) = claim(backend, clock)
    assert backend.record_outcomes(
        [Outcome(lease_of(r), kind, error=err(1, clock))], now=clock.advance(2)
    ) == {r.id}
    got = backend.get(r.id)
    assert got is not None and got.state is state and got.finished_at == clock.now
    assert len(got.errors) == 1
    # terminal states are absorbing: no further outcome applies
    assert (
        backend.record_outcomes([Outcome(lease_of(r), OutcomeKind.COMPLETED)], now=clock.now)
        == set()
    )
    assert backend.get(r.id).state is state  # type: ignore[union-attr]


def test_snooze_does_not_use_up_an_attempt(backend: Backend, clock: Clock) -> None:
    backend.enqueue_many([new_job(max_attempts=1)], now=clock.now)
    (r,) = claim(backend, clock)
    backend.record_outcomes(
        [Outcome(lease_of(r), OutcomeKind.SNOOZED, run_at=clock.now + timedelta(minutes=5))],
        now=clock.now,
    )
    got = backend.get(r.id)
    assert got is not None and got.state is JobState.SCHEDULED
    assert got.run_at == clock.now + timedelta(minutes=5)
    assert got.max_attempts == 2 and got.errors == ()


def test_batch_of_outcomes_reports_which_applied(backend: Backend, clock: Clock) -> None:
    backend.enqueue_many([new_job() for _ in range(3)], now=clock.now)
    a, b, c = claim(backend, clock, 3)
    done = backend.record_outcomes(
        [
            Outcome(lease_of(a), OutcomeKind.COMPLETED, result_json="1"),
            Outcome(Lease(b.id, "wrong"), OutcomeKind.COMPLETED, result_json="2"),
            Outcome(lease_of(c), OutcomeKind.DEAD, error=err(1, clock)),
        ],
        now=clock.now,
    )
    assert done == {a.id, c.id}


def test_release_hands_job_back_without_using_an_attempt(backend: Backend, clock: Clock) -> None:
    backend.enqueue_many([new_job()], now=clock.now)
    (r,) = claim(backend, clock)
    assert backend.release([lease_of(r)], now=clock.now) == {r.id}
    got = backend.get(r.id)
    assert got is not None and got.state is JobState.AVAILABLE and got.attempt == 0
    (again,) = claim(backend, clock)
    assert again.attempt == 1


# -- rescue ------------------------------------------------------------------------------------


def test_rescue_returns_expired_lease_and_counts_attempt(backend: Backend, clock: Clock) -> None:
    backend.enqueue_many([new_job(max_attempts=2)], now=clock.now)
    (r,) = claim(backend, clock)
    assert backend.rescue_expired(now=clock.advance(29)) == 0
    backend.heartbeat([lease_of(r)], lease=LEASE, now=clock.now)
    assert backend.rescue_expired(now=clock.advance(29)) == 0  # renewed
    assert backend.rescue_expired(now=clock.advance(2)) == 1
    got = backend.get(r.id)
    assert got is not None and got.state is JobState.AVAILABLE and got.attempt == 1
    assert got.errors[-1].type == "WorkerLost" and "w1" in got.errors[-1].message
    # the second crash uses up the last attempt: dead, not looped forever
    (again,) = claim(backend, clock)
    assert again.attempt == 2
    assert backend.rescue_expired(now=clock.advance(31)) == 1
    dead = backend.get(r.id)
    assert dead is not None and dead.state is JobState.DEAD and len(dead.errors) == 2
    assert dead.errors[-1].type == "WorkerLost"
    assert dead.errors[-1].message.startswith("worker lost 2 times: this job may be killing")
    assert dead.finished_at == clock.now


# -- cancel and manual retry -------------------------------------------------------------------


def test_cancel_queued_and_running_jobs(backend: Backend, clock: Clock) -> None:
    a, b = backend.enqueue_many([new_job(), new_job(delay=timedelta(hours=1))], now=clock.now)
    changed, rec = backend.cancel(b.id, now=clock.now)
    assert changed and rec.state is JobState.CANCELLED
    (running,) = claim(backend, clock)
    changed, rec = backend.cancel(running.id, now=clock.now)
    assert changed and rec.state is JobState.CANCELLED
    # the worker that still runs it cannot complete it
    assert (
        backend.record_outcomes([Outcome(lease_of(running), OutcomeKind.COMPLETED)], now=clock.now)
        == set()
    )
    assert backend.heartbeat([lease_of(running)], lease=LEASE, now=clock.now) == set()
    changed, rec = backend.cancel(a.id, now=clock.now)
    assert not changed and rec.state is JobState.CANCELLED
    with pytest.raises(JobNotFound):
        backend.cancel(10_000, now=clock.now)


def test_manual_retry_of_dead_job(backend: Backend, clock: Clock) -> None:
    backend.enqueue_many([new_job(max_attempts=1)], now=clock.now)
    (r,) = claim(backend, clock)
    backend.record_outcomes(
        [Outcome(lease_of(r), OutcomeKind.DEAD, error=err(1, clock))], now=clock.now
    )
    again = backend.retry(r.id, now=clock.advance(5))
    assert again.state is JobState.AVAILABLE and again.max_attempts == 2
    assert again.attempt == 1 and again.finished_at is None and len(again.errors) == 1
    (claimed,) = claim(backend, clock)
    assert claimed.attempt == 2


def test_manual_retry_refuses_active_and_missing_jobs(backend: Backend, clock: Clock) -> None:
    (r,) = backend.enqueue_many([new_job()], now=clock.now)
    with pytest.raises(InvalidTransition, match="available"):
        backend.retry(r.id, now=clock.now)
    with pytest.raises(JobNotFound):
        backend.retry(123_456, now=clock.now)


# -- unique keys -------------------------------------------------------------------------------


def test_unique_key_returns_active_holder(backend: Backend, clock: Clock) -> None:
    (a,) = backend.enqueue_many([new_job(unique_key="order-42")], now=clock.now)
    b, c = backend.enqueue_many(
        [new_job(unique_key="order-42"), new_job(unique_key="o-43")], now=clock.now
    )
    assert b.id == a.id and c.id != a.id
    assert sum(backend.stats()["default"].values()) == 2
    (r,) = [x for x in claim(backend, clock) if x.id == a.id]
    backend.record_outcomes([Outcome(lease_of(r), OutcomeKind.COMPLETED)], now=clock.now)
    (d,) = backend.enqueue_many([new_job(unique_key="order-42")], now=clock.now)
    assert d.id != a.id
    with pytest.raises(UniqueConflict):
        backend.retry(a.id, now=clock.now)


# -- prune, listing, stats ---------------------------------------------------------------------


def test_prune_deletes_only_old_finished_jobs(backend: Backend, clock: Clock) -> None:
    a, b, c = backend.enqueue_many([new_job(), new_job(), new_job()], now=clock.now)
    backend.cancel(a.id, now=clock.now)
    clock.advance(100)
    backend.cancel(b.id, now=clock.now)
    assert (
        backend.prune(older_than=timedelta(seconds=50), states=TERMINAL_STATES, now=clock.now) == 1
    )
    assert backend.get(a.id) is None
    assert backend.get(b.id) is not None and backend.get(c.id) is not None
    assert (
        backend.prune(
            older_than=timedelta(0), states=frozenset({JobState.AVAILABLE}), now=clock.advance(1)
        )
        == 0
    )


def test_list_filter_and_page(backend: Backend, clock: Clock) -> None:
    recs = backend.enqueue_many(
        [new_job("x", queue="q1"), new_job("y", queue="q2"), new_job("x", queue="q1")],
        now=clock.now,
    )
    backend.cancel(recs[0].id, now=clock.now)
    assert [r.id for r in backend.list_jobs(JobFilter())] == [r.id for r in reversed(recs)]
    assert [r.id for r in backend.list_jobs(JobFilter(queue="q1"))] == [recs[2].id, recs[0].id]
    assert [r.id for r in backend.list_jobs(JobFilter(state=JobState.CANCELLED))] == [recs[0].id]
    assert [r.id for r in backend.list_jobs(JobFilter(task="y"))] == [recs[1].id]
    page1 = backend.list_jobs(JobFilter(), limit=2)
    page2 = backend.list_jobs(JobFilter(), limit=2, before_id=page1[-1].id)
    assert [r.id for r in page1 + page2] == [r.id for r in reversed(recs)]
    assert backend.get(999_999) is None


def test_stats_counts_per_queue_and_state(backend: Backend, clock: Clock) -> None:
    backend.enqueue_many(
        [
            new_job(queue="a"),
            new_job(queue="a"),
            new_job(queue="b"),
            new_job(queue="b", delay=timedelta(minutes=1)),
        ],
        now=clock.now,
    )
    claim(backend, clock, 1, ("a",))
    assert backend.stats() == {
        "a": {JobState.AVAILABLE: 1, JobState.RUNNING: 1},
        "b": {JobState.AVAILABLE: 1, JobState.SCHEDULED: 1},
    }


def test_another_handles_commit_is_seen(open_store: Callable[[], Backend], clock: Clock) -> None:
    """A commit by another handle (another process, in production) moves the watcher's change
    token and, where the backend can push, calls its subscribers."""
    watcher = open_store()
    producer = open_store()
    woken = threading.Event()
    unsubscribe = watcher.subscribe(woken.set)
    seen = False
    for _ in range(40):  # a push backend may still be connecting its listener at first
        before = watcher.change_token()
        producer.enqueue_many([new_job()], now=clock.now)
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline and watcher.change_token() == before:
            time.sleep(0.005)
        if watcher.change_token() != before:
            seen = True
            break
    unsubscribe()
    assert seen, "another handle's commit never moved the change token"


def test_two_handles_never_claim_the_same_job(
    open_store: Callable[[], Backend], clock: Clock
) -> None:
    a, b = open_store(), open_store()
    a.enqueue_many([new_job() for _ in range(50)], now=clock.now)
    seen: list[int] = []
    while True:
        got = a.claim(["default"], 7, worker_id="a", lease=LEASE, now=clock.now)
        got += b.claim(["default"], 7, worker_id="b", lease=LEASE, now=clock.now)
        if not got:
            break
        seen += [r.id for r in got]
    assert len(seen) == 50 and len(set(seen)) == 50


# -- worker registry ---------------------------------------------------------------------------


def test_worker_registry(open_store: Callable[[], Backend]) -> None:
    a, b = open_store(), open_store()
    now = a.now()
    info = WorkerInfo("host-1:42:abc", "host-1", 42, ("mail", "default"), 8, now, now)
    a.register_worker(info)
    a.register_worker(replace(info, id="host-2:7:def", host="host-2", pid=7))
    a.worker_heartbeat("host-1:42:abc", jobs_run=17)
    seen = {w.id: w for w in b.list_workers()}  # visible to other processes
    assert set(seen) == {"host-1:42:abc", "host-2:7:def"}
    w = seen["host-1:42:abc"]
    assert (w.host, w.pid, w.queues, w.threads, w.jobs_run) == (
        "host-1",
        42,
        ("mail", "default"),
        8,
        17,
    )
    assert w.started_at <= w.heartbeat_at
    assert w.alive(b.now(), timedelta(seconds=30))
    assert not w.alive(b.now() + timedelta(minutes=5), timedelta(seconds=30))
    a.unregister_worker("host-2:7:def")
    assert [x.id for x in b.list_workers()] == ["host-1:42:abc"]
    assert a.prune_workers(older_than=timedelta(minutes=1)) == 0
    assert a.prune_workers(older_than=timedelta(0), now=b.now() + timedelta(seconds=1)) == 1
    assert b.list_workers() == []
    a.worker_heartbeat("nobody", jobs_run=1)  # a heartbeat of an unknown worker is harmless


def test_record_and_claim_in_one_step(backend: Backend, clock: Clock) -> None:
    backend.enqueue_many([new_job(f"j{i}", priority=9 - i) for i in range(5)], now=clock.now)
    a, b = claim(backend, clock, 2)
    done, nxt = backend.record_and_claim(
        [
            Outcome(lease_of(a), OutcomeKind.COMPLETED, result_json='"a"'),
            Outcome(Lease(b.id, "stale-token"), OutcomeKind.COMPLETED, result_json='"b"'),
        ],
        ["default"],
        2,
        worker_id="w1",
        lease=LEASE,
        now=clock.now,
    )
    assert done == {a.id}  # fenced: the forged lease changed nothing
    assert [r.task for r in nxt] == ["j2", "j3"] and all(r.attempt == 1 for r in nxt)
    assert backend.get(a.id).result == "a"  # type: ignore[union-attr]
    assert backend.get(b.id).state is JobState.RUNNING  # type: ignore[union-attr]
    # nothing left to claim: the outcomes still count
    done, rest = backend.record_and_claim(
        [Outcome(lease_of(r), OutcomeKind.COMPLETED) for r in nxt],
        ["nothing-here"],
        5,
        worker_id="w1",
        lease=LEASE,
        now=clock.now,
    )
    assert done == {r.id for r in nxt} and rest == []
    # no outcomes, no room: a no-op
    assert backend.record_and_claim([], ["default"], 0, worker_id="w1", lease=LEASE) == (set(), [])
