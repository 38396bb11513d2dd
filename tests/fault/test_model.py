"""A model-based test of the Backend protocol: Hypothesis drives enqueue, claim, heartbeat,
complete, fail, manual retry, cancel, rescue, promote and the passing of time against every
backend, and a plain model predicts each answer and each row.

Invariants checked after every step (DESIGN §2-3): every job is in exactly one state, the one
the model predicts; each change of state is one the transition table allows; attempts never
go down and never exceed ``max_attempts``; finished states change only through a manual retry;
every claim issues a fresh lease token, and only the newest token of a running job is honoured
(stale heartbeats and outcomes change nothing), so a job has at most one live lease.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from jobq.backends import Backend, JobFilter, Lease, Outcome, OutcomeKind, open_backend
from jobq.exceptions import InvalidTransition
from jobq.job import AttemptError
from jobq.states import ACTIVE_STATES, TERMINAL_STATES, JobState, allowed
from tests.conftest import Clock, fresh_schema, new_job
from tests.fault.harness import record, size

LEASE = timedelta(seconds=10)
S = JobState


@dataclass
class ModelJob:
    id: int
    priority: int
    max_attempts: int
    run_at: datetime
    state: JobState
    attempt: int = 0
    token: str | None = None
    leased_until: datetime | None = None
    tokens: set[str] = field(default_factory=set)  # every lease token it was ever given


def make_machine(
    open_fresh: Callable[[], Backend], stats: Counter[str]
) -> type[RuleBasedStateMachine]:
    """A state machine class whose every run starts on an empty store from ``open_fresh``."""

    class QueueMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.b = open_fresh()
            self.clock = Clock()
            self.jobs: dict[int, ModelJob] = {}
            self.leases: list[Lease] = []  # every lease ever issued, stale ones included
            self.seen: dict[int, tuple[JobState, int]] = {}
            stats["runs"] += 1

        def teardown(self) -> None:
            self.b.close()

        @property
        def now(self) -> datetime:
            return self.clock.now

        def live(self, lease: Lease) -> bool:
            job = self.jobs[lease.job_id]
            return job.state is S.RUNNING and job.token == lease.token

        # -- rules -------------------------------------------------------------------------

        @initialize(n=st.integers(1, 6), max_attempts=st.integers(1, 3))
        def start_with_jobs(self, n: int, max_attempts: int) -> None:
            self.enqueue(n, 0, max_attempts, 0)

        @rule(
            n=st.integers(1, 3),
            delay=st.sampled_from([0, 0, 5, 20]),
            max_attempts=st.integers(1, 3),
            priority=st.integers(0, 1),
        )
        def enqueue(self, n: int, delay: int, max_attempts: int, priority: int) -> None:
            d = timedelta(seconds=delay) if delay else None
            recs = self.b.enqueue_many(
                [new_job(priority=priority, max_attempts=max_attempts, delay=d)] * n,
                now=self.now,
            )
            assert len(recs) == n and len({r.id for r in recs}) == n
            for r in recs:
                assert r.id not in self.jobs and r.attempt == 0
                state = S.SCHEDULED if delay else S.AVAILABLE
                assert r.state is state
                self.jobs[r.id] = ModelJob(
                    r.id, priority, max_attempts, self.now + (d or timedelta(0)), state
                )
            stats["enqueue"] += n

        @rule(limit=st.integers(1, 4))
        def claim(self, limit: int) -> None:
            ready = sorted(
                (j for j in self.jobs.values() if j.state is S.AVAILABLE),
                key=lambda j: (-j.priority, j.run_at, j.id),
            )
            got = self.b.claim(["default"], limit, worker_id="w", lease=LEASE, now=self.now)
            assert [r.id for r in got] == [j.id for j in ready[:limit]], "claim order"
            for r in got:
                job = self.jobs[r.id]
                assert r.state is S.RUNNING and r.lease_token is not None
                assert r.lease_token not in job.tokens, "a claim reused a lease token"
                job.state, job.attempt, job.token = S.RUNNING, job.attempt + 1, r.lease_token
                job.leased_until = self.now + LEASE
                job.tokens.add(r.lease_token)
                assert r.attempt == job.attempt
                self.leases.append(Lease(r.id, r.lease_token))
            stats["claimed"] += len(got)

        @precondition(lambda self: self.leases)
        @rule(data=st.data())
        def heartbeat(self, data: st.DataObject) -> None:
            leases = data.draw(st.lists(st.sampled_from(self.leases), max_size=4, unique=True))
            held = self.b.heartbeat(leases, lease=LEASE, now=self.now)
            expected = {x.job_id for x in leases if self.live(x)}
            assert held == expected, "heartbeat fencing"
            for job_id in held:
                self.jobs[job_id].leased_until = self.now + LEASE
            stats["stale heartbeats refused"] += sum(not self.live(x) for x in leases)

        def _outcome(self, outcome: Outcome) -> bool:
            live = self.live(outcome.lease)
            done = self.b.record_outcomes([outcome], now=self.now)
            assert done == ({outcome.lease.job_id} if live else set()), "outcome fencing"
            stats["stale outcomes refused" if not live else f"outcome {outcome.kind}"] += 1
            return live

        @precondition(lambda self: self.leases)
        @rule(data=st.data())
        def complete(self, data: st.DataObject) -> None:
            lease = data.draw(st.sampled_from(self.leases))
            if self._outcome(Outcome(lease, OutcomeKind.COMPLETED, result_json="1")):
                self.jobs[lease.job_id].state = S.COMPLETED

        @precondition(lambda self: self.leases)
        @rule(data=st.data(), delay=st.sampled_from([0, 10]), retryable=st.booleans())
        def fail(self, data: st.DataObject, delay: int, retryable: bool) -> None:
            """A failed attempt, decided as the executor does: retried while attempts remain
            (and the error is retryable), else dead."""
            lease = data.draw(st.sampled_from(self.leases))
            job = self.jobs[lease.job_id]
            retry = retryable and job.attempt < job.max_attempts
            error = AttemptError(job.attempt, self.now, "ValueError", "boom")
            kind = OutcomeKind.RETRY if retry else OutcomeKind.DEAD
            outcome = Outcome(lease, kind, error=error, delay=timedelta(seconds=delay))
            if self._outcome(outcome):
                if retry:
                    job.run_at = self.now + timedelta(seconds=delay)
                    job.state = S.SCHEDULED if delay else S.AVAILABLE
                else:
                    job.state = S.DEAD

        @precondition(lambda self: self.jobs)
        @rule(data=st.data())
        def cancel(self, data: st.DataObject) -> None:
            job = self.jobs[data.draw(st.sampled_from(sorted(self.jobs)))]
            changed, rec = self.b.cancel(job.id, now=self.now)
            assert changed == (job.state in ACTIVE_STATES)
            if changed:
                job.state = S.CANCELLED
            assert rec.state is job.state
            stats["cancel"] += 1

        @precondition(lambda self: self.jobs)
        @rule(data=st.data())
        def manual_retry(self, data: st.DataObject) -> None:
            job = self.jobs[data.draw(st.sampled_from(sorted(self.jobs)))]
            if job.state not in TERMINAL_STATES:
                try:
                    self.b.retry(job.id, now=self.now)
                except InvalidTransition:
                    stats["retry of an active job refused"] += 1
                    return
                raise AssertionError(f"retried job {job.id} while it was {job.state}")
            rec = self.b.retry(job.id, now=self.now)
            job.state, job.run_at = S.AVAILABLE, self.now
            job.max_attempts = max(job.max_attempts, job.attempt + 1)
            assert rec.state is S.AVAILABLE and rec.max_attempts == job.max_attempts
            stats["manual retry"] += 1

        @rule()
        def rescue(self) -> None:
            expired = [
                j
                for j in self.jobs.values()
                if j.state is S.RUNNING and j.leased_until is not None and j.leased_until < self.now
            ]
            assert self.b.rescue_expired(now=self.now) == len(expired)
            for j in expired:
                j.state = S.DEAD if j.attempt >= j.max_attempts else S.AVAILABLE
            stats["rescued"] += len(expired)

        @rule()
        def promote(self) -> None:
            due = [j for j in self.jobs.values() if j.state is S.SCHEDULED and j.run_at <= self.now]
            assert self.b.promote_due(now=self.now) == len(due)
            for j in due:
                j.state = S.AVAILABLE

        @rule(seconds=st.sampled_from([0.5, 4, 11, 31]))
        def advance_time(self, seconds: float) -> None:
            self.clock.advance(seconds)

        # -- invariants --------------------------------------------------------------------

        @invariant()
        def rows_match_the_model(self) -> None:
            rows = {r.id: r for r in self.b.list_jobs(JobFilter(), limit=10_000)}
            assert rows.keys() == self.jobs.keys(), "a job appeared or vanished"
            per_state = Counter(r.state for r in rows.values())
            assert sum(per_state.values()) == len(self.jobs)  # one state per job
            for job_id, r in rows.items():
                job = self.jobs[job_id]
                assert (r.state, r.attempt, r.max_attempts) == (
                    job.state,
                    job.attempt,
                    job.max_attempts,
                ), f"job {job_id}: store {r.state}/{r.attempt}/{r.max_attempts}, model {job}"
                assert r.attempt <= r.max_attempts, "max_attempts exceeded"
                if r.state is S.RUNNING:
                    assert r.lease_token == job.token  # the one live lease
                before = self.seen.get(job_id)
                if before is not None:
                    old_state, old_attempt = before
                    assert r.attempt >= old_attempt, "attempt went down"
                    if r.state is not old_state:
                        assert allowed(old_state, r.state), f"{old_state} -> {r.state}"
                self.seen[job_id] = (r.state, r.attempt)
            stats["steps checked"] += 1

    return QueueMachine


@contextmanager
def fresh_stores(kind: str, tmp_path: Path) -> Iterator[Callable[[], Backend]]:
    """A function returning an empty store of ``kind`` on every call."""
    if kind == "memory":
        yield lambda: open_backend("memory://")
    elif kind == "sqlite":
        numbers = itertools.count()
        yield lambda: open_backend(f"sqlite:///{tmp_path}/model-{next(numbers)}.db")
    else:
        with fresh_schema() as url:
            open_backend(url).close()  # create the schema once
            import psycopg

            base, _, query = url.partition("?")
            schema = query.removeprefix("schema=")

            def open_empty() -> Backend:
                with psycopg.connect(base, autocommit=True) as conn:
                    conn.execute(f"DELETE FROM {schema}.jobq_jobs")
                return open_backend(url)

            yield open_empty


@pytest.mark.parametrize("kind", ["memory", "sqlite", "postgres"])
def test_backend_against_the_model(kind: str, tmp_path: Path) -> None:
    """Random sequences of lifecycle operations against each backend; the model predicts
    every answer and every row (see the module docstring for the invariants)."""
    stats: Counter[str] = Counter()
    examples, steps = size(60, 500), size(50, 100)
    with fresh_stores(kind, tmp_path) as open_fresh:
        machine = make_machine(open_fresh, stats)
        machine.TestCase.settings = settings(
            max_examples=examples,
            stateful_step_count=steps,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        machine.TestCase().runTest()
    record(
        f"model-based [{kind}]: runs={stats['runs']} steps={stats['steps checked']} "
        f"claimed={stats['claimed']} rescued={stats['rescued']} "
        f"stale_heartbeats_refused={stats['stale heartbeats refused']} "
        f"stale_outcomes_refused={stats['stale outcomes refused']} "
        f"manual_retries={stats['manual retry']} violations=0"
    )
