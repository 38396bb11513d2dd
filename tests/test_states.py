"""The transition table is the one written in DESIGN §2."""

from __future__ import annotations

import pytest

from jobq.exceptions import InvalidTransition
from jobq.states import TERMINAL_STATES, TRANSITIONS, Action, JobState, allowed, check

S = JobState

# (from, to) pairs DESIGN §2 allows; None is "a new job".
EXPECTED = {
    (None, S.SCHEDULED),
    (None, S.AVAILABLE),
    (None, S.BLOCKED),
    (S.SCHEDULED, S.AVAILABLE),
    (S.SCHEDULED, S.CANCELLED),
    (S.SCHEDULED, S.EXPIRED),
    (S.BLOCKED, S.CANCELLED),
    (S.BLOCKED, S.AVAILABLE),  # dependency resolution
    (S.BLOCKED, S.SCHEDULED),  # dependency resolution, run_at still ahead
    (S.SCHEDULED, S.SCHEDULED),  # unique_key on_conflict="replace" (not started yet)
    (S.AVAILABLE, S.AVAILABLE),
    (S.AVAILABLE, S.SCHEDULED),
    (S.AVAILABLE, S.RUNNING),
    (S.AVAILABLE, S.CANCELLED),
    (S.AVAILABLE, S.EXPIRED),
    (S.RUNNING, S.COMPLETED),
    (S.RUNNING, S.SCHEDULED),
    (S.RUNNING, S.AVAILABLE),
    (S.RUNNING, S.DEAD),
    (S.RUNNING, S.CANCELLED),
    (S.RUNNING, S.EXPIRED),
    (S.COMPLETED, S.AVAILABLE),
    (S.DEAD, S.AVAILABLE),
    (S.CANCELLED, S.AVAILABLE),
    (S.EXPIRED, S.AVAILABLE),
}


def test_table_allows_exactly_the_designed_moves() -> None:
    everything = {(a, b) for a in [None, *JobState] for b in JobState}
    got = {(a, b) for a, b in everything if allowed(a, b)}
    assert got == EXPECTED


def test_terminal_states_leave_only_by_manual_retry() -> None:
    for action, t in TRANSITIONS.items():
        if t.sources & TERMINAL_STATES:
            assert action is Action.MANUAL_RETRY


def test_check_refuses_moves_outside_the_table() -> None:
    check(Action.CLAIM, S.AVAILABLE, S.RUNNING)
    with pytest.raises(InvalidTransition, match="claim cannot move a job from completed"):
        check(Action.CLAIM, S.COMPLETED, S.RUNNING)
    with pytest.raises(InvalidTransition):
        check(Action.COMPLETE, S.RUNNING, S.DEAD)
