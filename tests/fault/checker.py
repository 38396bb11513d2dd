"""Reconciles what ran (the side log) with what the store says after a full drain.

It reports, per run:

* **lost**: a job that did not end in the state it should have (or vanished), or a completed
  job whose stored result is not the one its last recorded attempt returned;
* **extra runs**: attempts beyond the one that counted, each with the reason its process gave
  it up (killed mid-run; killed after it ended but before its outcome was recorded; paused past
  its lease; cut off from the database past its lease) — or *unexplained*, a failure unless the
  test allows that reason;
* **overlapping leases**: two attempts of one job running at once while the older one's lease
  was not known to have run out (its process was neither paused nor cut off);
* **terminal changes**: a finished job whose row changed afterwards (from
  :class:`~tests.fault.harness.TerminalWatcher`);
* attempts over ``max_attempts``, and one lease token started twice.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from tests.fault.harness import Event, Row

KILLED_MID_RUN = "killed mid-run"
KILLED_BEFORE_ACK = "killed after it ended, before its outcome was recorded"
PAUSED = "paused past its lease"
CUT_OFF = "cut off from the database past its lease"
UNEXPLAINED = "unexplained"


@dataclass
class Deaths:
    """What happened to the processes that ran attempts."""

    killed: Mapping[int, float] = field(default_factory=dict)  # pid -> when it died
    paused: Mapping[int, tuple[float, float]] = field(default_factory=dict)  # pid -> window
    cut_off: Mapping[int, set[int]] = field(default_factory=dict)  # pid -> job ids


@dataclass
class Report:
    name: str
    jobs: int
    seconds: float = 0.0
    kills: int = 0
    restarts: int = 0
    extra: Counter[str] = field(default_factory=Counter)
    lost: list[str] = field(default_factory=list)
    unexplained: list[str] = field(default_factory=list)
    overlaps: list[str] = field(default_factory=list)
    overlaps_explained: int = 0
    terminal_changed: list[str] = field(default_factory=list)
    over_max: list[str] = field(default_factory=list)
    twice: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def extra_runs(self) -> int:
        return sum(self.extra.values())

    def problems(self) -> list[str]:
        out = [f"lost: {x}" for x in self.lost]
        out += [f"unexplained extra run: {x}" for x in self.unexplained]
        out += [f"overlapping leases: {x}" for x in self.overlaps]
        out += [f"terminal state changed: {x}" for x in self.terminal_changed]
        out += [f"over max_attempts: {x}" for x in self.over_max]
        out += [f"attempt started twice: {x}" for x in self.twice]
        return out

    def line(self) -> str:
        why = ", ".join(f"{n} {reason}" for reason, n in self.extra.most_common())
        parts = [
            f"jobs={self.jobs}",
            f"kills={self.kills}",
            f"restarts={self.restarts}",
            f"lost={len(self.lost)}",
            f"extra_runs={self.extra_runs}" + (f" ({why})" if why else ""),
            f"overlaps={len(self.overlaps)}"
            + (
                f" (+{self.overlaps_explained} stale past lease)" if self.overlaps_explained else ""
            ),
            f"terminal_changed={len(self.terminal_changed)}",
            *self.notes,
            f"{self.seconds:.1f}s",
        ]
        return f"{self.name}: " + " ".join(parts)

    def check(self) -> None:
        problems = self.problems()
        assert not problems, f"{self.line()}\n" + "\n".join(problems[:30])


def reconcile(
    name: str,
    expected: Mapping[int, str],
    rows: Mapping[int, Row],
    events: Iterable[Event],
    deaths: Deaths,
    *,
    terminal_changes: Iterable[str] = (),
    allowed: Iterable[str] = (KILLED_MID_RUN, KILLED_BEFORE_ACK),
    runs_expected: Mapping[int, int] | None = None,
) -> Report:
    """Check a drained run. ``expected`` maps each job id to the state it must end in;
    ``runs_expected`` the number of runs a job must have (default 1: more are extra runs)."""
    report = Report(name, len(expected), terminal_changed=list(terminal_changes))
    allowed = set(allowed)
    starts: dict[int, dict[str, Event]] = defaultdict(dict)
    ends: dict[tuple[int, str], Event] = {}
    for e in events:
        if e.kind == "start":
            if e.token in starts[e.job_id]:
                report.twice.append(f"job {e.job_id} token {e.token}")
            starts[e.job_id][e.token] = e
        else:
            ends[(e.job_id, e.token)] = e

    for job_id, want in expected.items():
        row = rows.get(job_id)
        if row is None:
            report.lost.append(f"job {job_id} has no row")
            continue
        if row.state != want:
            report.lost.append(f"job {job_id} ({row.task}) is {row.state}, expected {want}")
        if row.attempt > row.max_attempts:
            report.over_max.append(f"job {job_id}: attempt {row.attempt} > {row.max_attempts}")
        if want == "completed" and row.state == "completed":
            _check_result(report, row, ends)
        runs = sorted(starts.get(job_id, {}).values(), key=lambda e: e.at)
        n_expected = (runs_expected or {}).get(job_id, 1)
        if len(runs) < n_expected and want == "completed":
            report.lost.append(f"job {job_id} ran {len(runs)} times, expected {n_expected}")
        # every attempt but the one that counted must have a reason to have been given up
        counted = {row.token} if n_expected == 1 else {e.token for e in runs}
        for e in runs:
            if e.token in counted:
                continue
            reason = _why_given_up(e, ends.get((job_id, e.token)), deaths)
            report.extra[reason] += 1
            if reason not in allowed:
                report.unexplained.append(
                    f"job {job_id} attempt {e.attempt} (token {e.token}, pid {e.pid}): {reason}"
                )
        _check_overlaps(report, runs, ends, deaths)
    return report


def _check_result(report: Report, row: Row, ends: Mapping[tuple[int, str], Event]) -> None:
    """The stored result must be the one the attempt holding the final lease returned."""
    if (row.id, row.token or "") not in ends:
        if row.task in ("work", "echo", "length"):
            report.lost.append(f"job {row.id}: completed, but its last attempt never ended")
        return
    value = row.result_value()
    if isinstance(value, dict) and "token" in value and value["token"] != row.token:
        report.lost.append(
            f"job {row.id}: result written by attempt {value['token']}, lease {row.token}"
        )


def _why_given_up(start: Event, end: Event | None, deaths: Deaths) -> str:
    died = deaths.killed.get(start.pid)
    if died is not None and died >= start.at:
        return KILLED_MID_RUN if end is None or end.at > died else KILLED_BEFORE_ACK
    if start.pid in deaths.paused:
        return PAUSED
    if start.job_id in deaths.cut_off.get(start.pid, set()):
        return CUT_OFF
    return UNEXPLAINED


def _check_overlaps(
    report: Report, runs: list[Event], ends: Mapping[tuple[int, str], Event], deaths: Deaths
) -> None:
    """Two attempts of one job must not run at once, unless the older one's lease ran out
    while its process could not renew it (paused, or cut off from the database)."""
    spans = []
    for e in runs:
        end = ends.get((e.job_id, e.token))
        stop = end.at if end else deaths.killed.get(e.pid, math.inf)
        spans.append((e.at, stop, e))
    for i, (a0, a1, a) in enumerate(spans):
        for b0, _, b in spans[i + 1 :]:
            if b0 < a1:
                if a.pid in deaths.paused or a.job_id in deaths.cut_off.get(a.pid, set()):
                    report.overlaps_explained += 1
                else:
                    report.overlaps.append(
                        f"job {a.job_id}: token {a.token} (pid {a.pid}, {a0:.3f}..{a1:.3f}) and "
                        f"token {b.token} (pid {b.pid}, from {b0:.3f})"
                    )
