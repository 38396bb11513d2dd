"""Job states and the one table of allowed transitions.

Every backend moves jobs only along :data:`TRANSITIONS`; backends build the ``WHERE state IN``
clauses of their statements from :func:`sources`, so the table and the SQL cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from jobq.exceptions import InvalidTransition


class JobState(StrEnum):
    """The closed set of states a job can be in (DESIGN §2)."""

    SCHEDULED = "scheduled"
    BLOCKED = "blocked"
    AVAILABLE = "available"
    RUNNING = "running"
    COMPLETED = "completed"
    DEAD = "dead"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES


def state_of(value: str) -> JobState:
    """``JobState(value)`` for a stored row, through a dict first (decoding claimed rows is a
    hot path; the enum's own lookup costs several times more). Unknown values still raise
    ``ValueError``."""
    return _BY_VALUE.get(value) or JobState(value)


_BY_VALUE: dict[str, JobState] = {s.value: s for s in JobState}


TERMINAL_STATES = frozenset(
    {JobState.COMPLETED, JobState.DEAD, JobState.CANCELLED, JobState.EXPIRED}
)
ACTIVE_STATES = frozenset(
    {JobState.SCHEDULED, JobState.BLOCKED, JobState.AVAILABLE, JobState.RUNNING}
)


class Action(StrEnum):
    """Who moves a job: each lifecycle operation of the backend is one action."""

    ENQUEUE = "enqueue"
    PROMOTE = "promote"  # scheduled job became due
    CLAIM = "claim"
    COMPLETE = "complete"
    RETRY = "retry"  # the attempt failed and will be retried later
    DISCARD = "discard"  # the attempt failed for the last time (or cannot run): dead
    SNOOZE = "snooze"  # the task asked to run again later, not counted as a failure
    CANCEL = "cancel"  # cancel API, or the task raised Cancel
    EXPIRE = "expire"  # deadline passed before the job started
    RESCUE = "rescue"  # its lease expired: back to available, or dead when out of attempts
    RELEASE = "release"  # a stopping worker hands back a job it had not finished
    MANUAL_RETRY = "manual_retry"  # a person or API call re-runs a finished job
    UNBLOCK = "unblock"  # every dependency of a blocked job resolved
    REPLACE = "replace"  # an enqueue with on_conflict="replace" rewrote a job not yet started


@dataclass(frozen=True, slots=True)
class Transition:
    sources: frozenset[JobState]
    targets: frozenset[JobState]


def _t(sources: set[JobState], targets: set[JobState]) -> Transition:
    return Transition(frozenset(sources), frozenset(targets))


S = JobState
TRANSITIONS: dict[Action, Transition] = {
    Action.ENQUEUE: _t(set(), {S.SCHEDULED, S.AVAILABLE, S.BLOCKED}),
    Action.PROMOTE: _t({S.SCHEDULED}, {S.AVAILABLE}),
    Action.CLAIM: _t({S.AVAILABLE}, {S.RUNNING}),
    Action.COMPLETE: _t({S.RUNNING}, {S.COMPLETED}),
    Action.RETRY: _t({S.RUNNING}, {S.SCHEDULED, S.AVAILABLE}),
    Action.DISCARD: _t({S.RUNNING}, {S.DEAD}),
    Action.SNOOZE: _t({S.RUNNING}, {S.SCHEDULED, S.AVAILABLE}),
    Action.CANCEL: _t({S.SCHEDULED, S.BLOCKED, S.AVAILABLE, S.RUNNING}, {S.CANCELLED}),
    Action.EXPIRE: _t({S.RUNNING, S.AVAILABLE, S.SCHEDULED}, {S.EXPIRED}),
    Action.RESCUE: _t({S.RUNNING}, {S.AVAILABLE, S.DEAD}),
    Action.RELEASE: _t({S.RUNNING}, {S.AVAILABLE}),
    Action.MANUAL_RETRY: _t(set(TERMINAL_STATES), {S.AVAILABLE}),
    Action.UNBLOCK: _t({S.BLOCKED}, {S.AVAILABLE, S.SCHEDULED}),
    Action.REPLACE: _t({S.SCHEDULED, S.AVAILABLE}, {S.SCHEDULED, S.AVAILABLE}),
}
del S


def sources(action: Action) -> frozenset[JobState]:
    """States a job may be in for ``action`` to apply to it."""
    return TRANSITIONS[action].sources


def allowed(source: JobState | None, target: JobState) -> bool:
    """Whether any action moves a job from ``source`` (None: a new job) to ``target``."""
    for t in TRANSITIONS.values():
        if target in t.targets and (
            (source is None and not t.sources) or (source is not None and source in t.sources)
        ):
            return True
    return False


def check(action: Action, source: JobState | None, target: JobState) -> None:
    """Raise :class:`InvalidTransition` unless ``action`` may move ``source`` to ``target``."""
    t = TRANSITIONS[action]
    ok_source = (source is None and not t.sources) or (source in t.sources)
    if not ok_source or target not in t.targets:
        raise InvalidTransition(
            f"{action.value} cannot move a job from {source.value if source else 'nothing'} "
            f"to {target.value}"
        )


def state_list_sql(states: frozenset[JobState] | set[JobState]) -> str:
    """``'a','b'`` for an ``IN (...)`` clause; states are enum values, never user input."""
    return ",".join(f"'{s.value}'" for s in sorted(states))
