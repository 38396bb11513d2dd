"""The run's summary: every peer of every suite against jobq in one table, and the targets.

Each suite's first system is jobq (on SQLite, on PostgreSQL, and on PostgreSQL again for the
Redis-backed peers); a peer is compared with the jobq of its own suite, measured in the same
run, alternating with it.

The summary shows **how many times better jobq did**: jobq / peer for rates (higher is
better), peer / jobq for latencies (lower is better), and jobq's backlog ratio over the peer's.
Above 1 jobq is ahead, below 1 the peer is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from benchmarks.ceilings import EXCHANGE_BATCH, STORE_BATCH

STORE_TITLES = {"sqlite": "SQLite", "postgres": "PostgreSQL", "redis": "Redis"}


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    workload: str
    metric: str
    higher_is_better: bool


COLUMNS = (
    Column("enqueue", "enqueue/s", "drain", "enqueue_per_s", True),
    Column("drain", "drain/s", "drain", "drain_per_s", True),
    Column("bulk", "bulk jobs/s", "bulk", "jobs_per_s", True),
    Column("p50", "latency p50", "latency", "p50_ms", False),
    Column("p99", "latency p99", "latency", "p99_ms", False),
    Column("backlog", "1M/10k drain", "backlog", "big_over_small", True),
)


def _value(system: dict[str, Any], workload: str, metric: str) -> float | None:
    value = system.get(workload, {}).get(metric)
    return float(value) if isinstance(value, int | float) else None


def advantage(jobq: float | None, peer: float | None, higher_is_better: bool) -> float | None:
    """How many times better jobq did than the peer (>1: jobq ahead)."""
    if jobq is None or peer is None or jobq <= 0 or peer <= 0:
        return None
    return jobq / peer if higher_is_better else peer / jobq


def summary_rows(reports: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per peer of every suite that ran jobq: its store, durability, and jobq's
    advantage over it per column."""
    rows: list[dict[str, Any]] = []
    for suite, report in reports.items():
        systems: dict[str, dict[str, Any]] = report.get("systems", {})
        jobq = systems.get("jobq")
        if jobq is None or "error" in jobq:
            continue
        for name, peer in systems.items():
            if name == "jobq":
                continue
            row: dict[str, Any] = {
                "peer": name,
                "suite": suite,
                "store": STORE_TITLES.get(peer.get("store", suite), suite),
                "jobq_store": STORE_TITLES.get(jobq.get("store", suite), suite),
                "durability": peer.get("durability", "-"),
                "error": peer.get("error"),
                "advantage": {},
                "jobq": {},
                "value": {},
            }
            for col in COLUMNS:
                j = _value(jobq, col.workload, col.metric)
                v = _value(peer, col.workload, col.metric)
                row["jobq"][col.key] = j
                row["value"][col.key] = v
                row["advantage"][col.key] = advantage(j, v, col.higher_is_better)
            rows.append(row)
    return rows


def _cell(row: dict[str, Any], col: Column) -> str:
    adv = row["advantage"].get(col.key)
    if adv is not None:
        return f"{adv:.2f}x"
    if row.get("error"):
        return "unavailable"
    return "n/a" if row["value"].get(col.key) is None else "-"


def format_summary(rows: Sequence[dict[str, Any]], cpus: int | None) -> str:
    """The summary table, one line per peer."""
    header = ["peer (store: durability)", "jobq on", *(c.label for c in COLUMNS)]
    lines = [
        [
            f"{r['peer']} ({r['store']}: {r['durability']})",
            r["jobq_store"],
            *(_cell(r, c) for c in COLUMNS),
        ]
        for r in rows
    ]
    widths = [max(len(x[i]) for x in [header, *lines]) for i in range(len(header))]

    def fmt(cells: Sequence[str]) -> str:
        rest = (c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([cells[0].ljust(widths[0]), *rest]).rstrip()

    rule = "-" * len(fmt(header))
    title = (
        f"jobq vs every peer, one run on {cpus} CPUs: how many times better jobq did "
        "(>1: jobq ahead; rates jobq/peer, latencies peer/jobq, backlog ratio jobq/peer)"
    )
    return "\n".join([title, rule, fmt(header), rule, *(fmt(x) for x in lines), rule])


# --------------------------------------------------------------------------------------------
# Targets


def _target(
    name: str,
    value: float | None,
    goal: float,
    at_least: bool,
    unit: str = "x",
    bound: str | None = None,
) -> dict[str, Any]:
    met = None if value is None else (value >= goal if at_least else value <= goal)
    return {
        "target": name,
        "value": value,
        "goal": f"{'>=' if at_least else '<='} {goal:g}{unit}",
        "met": met,
        "bound": bound,
    }


# What bounds a target, from the ceilings measured in the same run (benchmarks.ceilings).


def _drain_bound(needed: float | None, ceilings: dict[str, float] | None) -> str | None:
    if needed is None or not ceilings:
        return None
    return (
        f"needs {needed:,.0f} jobs/s; jobq's exchange back to back with no job run does "
        f"{ceilings['exchange_per_s']:,.0f}/s at a worker's batch ({EXCHANGE_BATCH}) and "
        f"{ceilings['exchange_64_per_s']:,.0f}/s at {STORE_BATCH}; the store alone, "
        f"{STORE_BATCH} a batch: "
        f"{ceilings['store_claim_complete_per_s']:,.0f}/s"
    )


def _enqueue_bound(needed: float | None, ceilings: dict[str, float] | None) -> str | None:
    if needed is None or not ceilings:
        return None
    return (
        f"needs {needed:,.0f} enqueues/s, one durable commit each; a one-row insert and its "
        f"commit alone: {ceilings['durable_commit_per_s']:,.0f}/s"
    )


def _bulk_bound(ceilings: dict[str, float] | None) -> str | None:
    if not ceilings:
        return None
    build, store = ceilings["build_jobs_per_s"], ceilings["store_jobs_per_s"]
    return (
        f"building the jobs in Python: {build:,.0f}/s; the backend storing them prebuilt: "
        f"{store:,.0f}/s; the two in a row: {1 / (1 / build + 1 / store):,.0f}/s"
    )


def _paced_commit(ceilings: dict[str, float], metric: str = "p50_ms") -> tuple[float, str]:
    """The durable commit's time the latency path waits for (``metric``: p50_ms or p99_ms), and
    what it is: at the latency workload's pace when the ceilings have it, else back to back."""
    if "paced_commit_ms_p50" in ceilings:
        key = "paced_commit_ms_p99" if metric == "p99_ms" else "paced_commit_ms_p50"
        return ceilings[key], f"at {ceilings['pace_per_s']:g}/s"
    return ceilings["commit_ms_p50"], "back to back"


def _latency_bound(ceilings: dict[str, float] | None, suite: str) -> str | None:
    if not ceilings:
        return None
    commit, pace = _paced_commit(ceilings)
    trip = ceilings.get("paced_round_trip_ms_p50", ceilings.get("round_trip_ms_p50"))
    if suite == "postgres":  # a claim that records no outcomes does not wait for its flush
        parts = f"the enqueue's durable commit: {commit:.2f} ms {pace} (the claim's does not wait)"
    else:
        parts = f"two durable commits (the enqueue's, the claim's): {2 * commit:.2f} ms {pace}"
    if trip is not None:
        parts += f", and more round trips of {trip:.2f} ms each"
    return f"the path holds {parts}; the rest is the wake-up and hand-off in Python"


def _latency_peer_bound(
    peer: str, durability: str, peer_ms: float, metric: str, ceilings: dict[str, float] | None
) -> str | None:
    """What a missed "best peer's latency / jobq's" target runs into: jobq's path holds at
    least its store's durable commit and, on PostgreSQL, the claim's round trip."""
    if not ceilings:
        return None
    commit, pace = _paced_commit(ceilings, metric)
    floor = f"a durable one-row commit alone, {pace}: {commit:.2f} ms"
    trip = ceilings.get("paced_round_trip_ms_p50")
    if trip is not None:
        floor += f", plus the claim's round trip {trip:.2f} ms: {commit + trip:.2f} ms"
    stored = f" ({durability})" if durability else ""
    return f"{peer}{stored}: {metric[:3]} {peer_ms:.2f} ms in all; jobq's path holds {floor}"


def check_targets(reports: dict[str, dict[str, Any]], bulk_n: int) -> list[dict[str, Any]]:
    """The speed targets this run can judge, with the value it measured for each."""
    out: list[dict[str, Any]] = []

    def system(suite: str, name: str) -> dict[str, Any]:
        s: dict[str, Any] = reports.get(suite, {}).get("systems", {}).get(name, {})
        return s

    def ceilings(suite: str) -> dict[str, float] | None:
        found: dict[str, float] | None = reports.get(suite, {}).get("ceilings")
        return found

    def needed(suite: str, peer: str, metric: str, goal: float) -> float | None:
        value = _value(system(suite, peer), "drain", metric)
        return None if value is None else goal * value

    def rate_ratio(suite: str, peer: str, metric: str) -> float | None:
        return advantage(
            _value(system(suite, "jobq"), "drain", metric),
            _value(system(suite, peer), "drain", metric),
            True,
        )

    for suite, peer, goal in (("sqlite", "huey", 15), ("postgres", "pgqueuer", 8)):
        if peer in reports.get(suite, {}).get("systems", {}):
            out.append(
                _target(
                    f"drain {suite}: jobq/{peer}",
                    rate_ratio(suite, peer, "drain_per_s"),
                    goal,
                    True,
                    bound=_drain_bound(needed(suite, peer, "drain_per_s", goal), ceilings(suite)),
                )
            )
    if "procrastinate" in reports.get("postgres", {}).get("systems", {}):
        out.append(
            _target(
                "drain postgres: jobq/procrastinate",
                rate_ratio("postgres", "procrastinate", "drain_per_s"),
                20,
                True,
                bound=_drain_bound(
                    needed("postgres", "procrastinate", "drain_per_s", 20), ceilings("postgres")
                ),
            )
        )
    redis = reports.get("redis", {}).get("systems", {})
    best = [
        v
        for name, s in redis.items()
        if name != "jobq" and (v := _value(s, "drain", "drain_per_s")) is not None
    ]
    if best:
        out.append(
            _target(
                "drain postgres: jobq / best Redis-backed peer",
                advantage(_value(redis.get("jobq", {}), "drain", "drain_per_s"), max(best), True),
                2,
                True,
                bound=_drain_bound(2 * max(best), ceilings("postgres")),
            )
        )
    for suite, peer in (("sqlite", "huey"), ("postgres", "pgqueuer")):
        if peer in reports.get(suite, {}).get("systems", {}):
            out.append(
                _target(
                    f"single enqueue {suite}: jobq/{peer}",
                    rate_ratio(suite, peer, "enqueue_per_s"),
                    1.5,
                    True,
                    bound=_enqueue_bound(
                        needed(suite, peer, "enqueue_per_s", 1.5), ceilings(suite)
                    ),
                )
            )
    for suite, goal in (("sqlite", 100_000), ("postgres", 50_000)):
        value = _value(system(suite, "jobq"), "bulk", "jobs_per_s")
        if value is not None:
            out.append(
                _target(
                    f"bulk {bulk_n:,} {suite}: jobq jobs/s",
                    value,
                    goal,
                    True,
                    " jobs/s",
                    _bulk_bound(ceilings(suite)),
                )
            )
    for suite, p50 in (("sqlite", 2.0), ("postgres", 1.0)):
        jobq = system(suite, "jobq")
        if "latency" not in jobq:
            continue
        out.append(
            _target(
                f"latency {suite}: jobq p50",
                _value(jobq, "latency", "p50_ms"),
                p50,
                False,
                " ms",
                _latency_bound(ceilings(suite), suite),
            )
        )
        out.append(
            _target(
                f"latency {suite}: jobq p99", _value(jobq, "latency", "p99_ms"), 5.0, False, " ms"
            )
        )
    for suite, report in reports.items():
        systems = report.get("systems", {})
        jobq = systems.get("jobq", {})
        for metric in ("p50_ms", "p99_ms"):
            peers = [
                (v, name)
                for name, s in systems.items()
                if name != "jobq" and (v := _value(s, "latency", metric)) is not None
            ]
            if peers and _value(jobq, "latency", metric) is not None:
                best_ms, best = min(peers)
                out.append(
                    _target(
                        f"latency {suite}: best peer's {metric[:3]} / jobq's",
                        advantage(_value(jobq, "latency", metric), best_ms, False),
                        1.0,
                        True,
                        bound=_latency_peer_bound(
                            best,
                            str(systems[best].get("durability", "")),
                            best_ms,
                            metric,
                            ceilings(str(jobq.get("store", suite))),
                        ),
                    )
                )
    for suite in ("sqlite", "postgres"):
        backlog = system(suite, "jobq").get("backlog", {})
        if "big_over_small" in backlog:
            out.append(
                _target(
                    f"backlog {suite}: jobq drain {backlog['big']:,} / {backlog['small']:,} queued",
                    _value(system(suite, "jobq"), "backlog", "big_over_small"),
                    0.8,
                    True,
                )
            )
            rss = backlog.get("runs", {}).get("big", {}).get("worker_rss_mb")
            if rss is not None:
                out.append(
                    _target(
                        f"memory {suite}: jobq worker RSS with {backlog['big']:,} queued",
                        float(rss),
                        100,
                        False,
                        " MB",
                    )
                )
    return out


def format_targets(targets: Sequence[dict[str, Any]]) -> str:
    lines = ["targets (issue 7; ratios within this run):"]
    width = max(len(t["target"]) for t in targets)
    for t in targets:
        value = t["value"]
        shown = "-" if value is None else (f"{value:,.0f}" if value >= 1000 else f"{value:.2f}")
        verdict = {True: "met", False: "MISSED", None: "?"}[t["met"]]
        lines.append(f"  {t['target'].ljust(width)}  {shown:>9}  {t['goal']:<16} {verdict}")
        if t["met"] is False and t.get("bound"):
            lines.append(f"      bound: {t['bound']}")
    return "\n".join(lines)
