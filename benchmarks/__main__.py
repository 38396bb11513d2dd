"""``python -m benchmarks``: four workloads (drain, bulk, latency, backlog), jobq beside peers.

Two suites: SQLite (jobq vs huey's SqliteHuey) and PostgreSQL (jobq vs pgqueuer and
procrastinate).  Each prints one table with a ``jobq/<peer>`` ratio column per peer.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import os
import platform
import sys
import tempfile
import traceback
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from benchmarks import workloads
from benchmarks.common import (
    ROOT,
    WORKER_THREADS,
    Metric,
    Store,
    StoreFactory,
    System,
    format_table,
    metric_value,
    metrics,
    ratio,
    sqlite_store,
)

#: suite -> system name -> module defining ``SYSTEM``; jobq first: it is the numerator.
SUITES: dict[str, dict[str, str]] = {
    "sqlite": {"jobq": "benchmarks.jobq_sqlite", "huey": "benchmarks.huey_sqlite"},
    "postgres": {
        "jobq": "benchmarks.jobq_postgres",
        "pgqueuer": "benchmarks.pgqueuer_postgres",
        "procrastinate": "benchmarks.procrastinate_postgres",
    },
}
SUITE_TITLES = {"sqlite": "SQLite", "postgres": "PostgreSQL"}
DEFAULTS = {"n": 10_000, "bulk_n": 100_000, "latency_jobs": 500, "backlog": 1_000_000}
QUICK = {"n": 2_000, "bulk_n": 20_000, "latency_jobs": 200, "backlog": 100_000}
#: Workload 4's small backlog, and the number of completions timed in both of its runs.
BACKLOG_SMALL = 10_000
WORKLOADS = ("drain", "bulk", "latency", "backlog")
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"

Plan = dict[str, Callable[[System, Path], dict[str, Any]]]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument(
        "--suite",
        choices=[*SUITES, "all"],
        default="all",
        help="which suite to run (default all: sqlite, then postgres)",
    )
    p.add_argument("--n", type=int, help="drain: jobs enqueued one by one (default 10000)")
    p.add_argument("--bulk-n", type=int, help="bulk: jobs in the one call (default 100000)")
    p.add_argument("--latency-jobs", type=int, help="latency: jobs to enqueue (default 500)")
    p.add_argument("--rate", type=float, default=200.0, help="latency: enqueues/s (default 200)")
    p.add_argument(
        "--idle",
        type=float,
        default=2.0,
        help="latency: seconds the worker sits idle before the first job (default 2)",
    )
    p.add_argument(
        "--backlog",
        type=int,
        help=f"backlog growth: the big backlog (default 1000000, --quick 100000), timed "
        f"against {BACKLOG_SMALL} queued",
    )
    p.add_argument(
        "--only",
        action="append",
        choices=sorted({name for systems in SUITES.values() for name in systems}),
        help="run only this system (repeatable); ratios need jobq among them",
    )
    p.add_argument(
        "--workload",
        action="append",
        choices=WORKLOADS,
        help="run only this workload (repeatable; default all four)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: N=2000, bulk 20000, 200 latency jobs, backlog 100000",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="give up waiting for a worker after this many seconds (default 300)",
    )
    p.add_argument(
        "--retries",
        type=int,
        default=1,
        help="run a workload that failed again, from scratch, up to this many times (default 1)",
    )
    p.add_argument(
        "--tmp-dir",
        type=Path,
        default=None,
        help="where the temporary databases go (default: the system temp dir; "
        "must be a real disk, not tmpfs, for fsync to mean anything)",
    )
    p.add_argument(
        "--pg-url",
        default=DEFAULT_PG_URL,
        help="PostgreSQL server to create the benchmark databases on (any database the user "
        f"can connect to; default {DEFAULT_PG_URL})",
    )
    p.add_argument(
        "--json",
        type=Path,
        default=ROOT / "benchmarks" / "results" / "latest.json",
        help="write the results here (default benchmarks/results/latest.json)",
    )
    args = p.parse_args(argv)
    sizes = QUICK if args.quick else DEFAULTS
    for key, value in sizes.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.backlog < BACKLOG_SMALL:
        p.error(f"--backlog must be at least {BACKLOG_SMALL}")
    return args


def load_system(module: str) -> System | str:
    """The module's ``SYSTEM``, or why it cannot be loaded."""
    try:
        system: System = importlib.import_module(module).SYSTEM
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return system


def filesystem_of(path: Path) -> str:
    """The filesystem type ``path`` lives on (Linux), e.g. ``ext4`` or ``tmpfs``."""
    best, fstype = "", "?"
    try:
        with open("/proc/mounts") as mounts:
            for line in mounts:
                fields = line.split()
                mount = fields[1]
                if str(path).startswith(mount) and len(mount) > len(best):
                    best, fstype = mount, fields[2]
    except OSError:
        pass
    return fstype


def open_store(pg_url: str) -> StoreFactory:
    """Fresh stores: a file in the workload's temp dir (SQLite), or a new database."""

    def factory(system: System, label: str, workdir: Path) -> AbstractContextManager[Store]:
        if system.suite == "postgres":
            from benchmarks import pg  # needs psycopg, which the SQLite suite does not

            return pg.fresh_database(pg_url, system.name)
        return sqlite_store(label, workdir)

    return factory


def run_workload(
    results: dict[str, Any],
    name: str,
    system: System,
    fn: Callable[[System, Path], dict[str, Any]],
    tmp_dir: Path | None,
    retries: int,
) -> None:
    """Run one workload for one system in a fresh temporary directory; record any error.

    A workload that raised is run again, from scratch, up to ``retries`` times (the shared
    PostgreSQL server may be restarted under it); the errors are kept in ``failed_attempts``.
    """
    failed: list[str] = []
    for _ in range(retries + 1):
        print(f"  {system.name}: {name} ...", end=" ", flush=True)
        try:
            with tempfile.TemporaryDirectory(
                prefix=f"bench-{system.name}-{name}-", dir=tmp_dir
            ) as workdir:
                outcome = fn(system, Path(workdir))
        except Exception as exc:
            traceback.print_exc()
            outcome = {"error": f"{type(exc).__name__}: {exc}"}
            failed.append(outcome["error"])
        status = "error" if "error" in outcome else ("ok" if outcome.get("ok", True) else "CHECK")
        print(status, flush=True)
        if "error" not in outcome:
            break
    if failed and "error" not in outcome:
        outcome["failed_attempts"] = failed
    results[name] = outcome


def _backlog_note(name: str, outcome: dict[str, Any]) -> list[str]:
    runs = outcome.get("runs")
    if not runs:
        return []
    small, big = runs["small"], runs["big"]
    lines = [
        f"{name}: backlog via {outcome['api']}: {big['size']:,} in at "
        f"{big['insert_per_s']:,.0f} jobs/s, settled in {big['settle_s']:.1f}s; first job "
        f"{big['first_completion_after_s']:.2f}s after worker start "
        f"({small['first_completion_after_s']:.2f}s with {small['size']:,} queued)"
    ]
    for run in (small, big):
        if run["unaccounted_after_stop"]:
            lines.append(
                f"{name}: backlog {run['size']:,}: after SIGTERM, ran {run['ran']:,} + "
                f"pending {run['pending_after']:,} != {run['size']:,} queued"
            )
    return lines


def notes(names: Sequence[str], results: dict[str, dict[str, Any]]) -> list[str]:
    """The lines printed under a table: durability, caveats, failed checks, worker trouble."""
    lines: list[str] = []
    for name in names:
        res = results[name]
        if "error" in res:
            lines.append(f"{name}: unavailable: {res['error']}")
            continue
        lines.append(f"{name} {res['version']}: {res['durability_note']}")
        if res.get("bulk", {}).get("api"):
            lines.append(f"{name}: bulk via {res['bulk']['api']}")
        lines += [f"{name}: {note}" for note in res["notes"]]
        for workload in WORKLOADS:
            outcome = res.get(workload, {})
            if "error" in outcome:
                lines.append(f"{name}: {workload} failed: {outcome['error']}")
                continue
            if workload == "backlog":
                lines += _backlog_note(name, outcome)
            if outcome.get("ok") is False:
                checks = {
                    k: v
                    for k, v in outcome.items()
                    if not k.startswith("worker_log") and k != "runs"
                }
                lines.append(f"{name}: {workload} CHECK FAILED: {json.dumps(checks)}")
            if outcome.get("worker_log_problems"):
                lines.append(
                    f"{name}: {workload} worker logged {outcome['worker_log_problems']} "
                    f"error/warning lines, first: {outcome['worker_log_first_problem']}"
                )
            for error in outcome.get("failed_attempts", []):
                first_line = error.splitlines()[0] if error else ""
                lines.append(f"{name}: {workload} failed once and was run again: {first_line}")
            if outcome.get("worker_stopped_cleanly") is False:
                lines.append(f"{name}: {workload} worker did not exit cleanly on SIGTERM")
    return lines


def ratios(
    names: Sequence[str], results: dict[str, dict[str, Any]], rows: Sequence[Metric]
) -> dict[str, Any]:
    """``{"jobq/peer": {"workload.metric": ratio}}`` for every peer."""
    first, peers = names[0], names[1:]
    return {
        f"{first}/{peer}": {
            f"{m.workload}.{m.key}": ratio(
                metric_value(results[first], m), metric_value(results[peer], m)
            )
            for m in rows
        }
        for peer in peers
    }


def run_suite(suite: str, args: argparse.Namespace, tmp_dir: Path) -> dict[str, Any]:
    """Run every selected workload for every selected system of ``suite``; print its table."""
    names = [name for name in SUITES[suite] if not args.only or name in args.only]
    results: dict[str, dict[str, Any]] = {}
    systems: list[System] = []
    for name in names:
        loaded = load_system(SUITES[suite][name])
        if isinstance(loaded, str):
            print(f"{name}: cannot load {SUITES[suite][name]}: {loaded}", file=sys.stderr)
            results[name] = {"error": loaded}
            continue
        systems.append(loaded)
        results[name] = {
            "version": loaded.version,
            "durability": loaded.durability,
            "durability_note": loaded.durability_note,
            "notes": list(loaded.notes),
        }

    where: dict[str, Any]
    server_line = ""
    if suite == "postgres":
        try:
            from benchmarks import pg

            settings = pg.server_settings(args.pg_url)
            stale = pg.drop_stale_databases(args.pg_url)
            if stale:
                print(f"dropped databases left by earlier runs: {', '.join(stale)}")
        except Exception as exc:
            settings = {"error": f"{type(exc).__name__}: {exc}"}
            for system in systems:
                results[system.name] = {"error": f"PostgreSQL server: {settings['error']}"}
            systems = []
        where = {"server": _redact(args.pg_url), "settings": settings}
        server_line = ", ".join(f"{k}={v}" for k, v in settings.items())
        where_text = f"server {_redact(args.pg_url)}: {server_line}"
    else:
        where = {"tmp_dir": str(tmp_dir), "tmp_fs": filesystem_of(tmp_dir)}
        where_text = f"temp dir {tmp_dir} ({where['tmp_fs']})"

    print(
        f"\n== {SUITE_TITLES[suite]}: {', '.join(names)} ==\n"
        f"drain N={args.n}, bulk N={args.bulk_n}, latency {args.latency_jobs} jobs at "
        f"{args.rate:g}/s after {args.idle:g}s idle, backlog {BACKLOG_SMALL} vs "
        f"{args.backlog}; {where_text}",
        flush=True,
    )
    stores = open_store(args.pg_url)
    plan: Plan = {
        "drain": lambda s, d: workloads.drain(s, stores, args.n, d, args.timeout),
        "bulk": lambda s, d: workloads.bulk(s, stores, args.bulk_n, d),
        "latency": lambda s, d: workloads.latency(
            s, stores, args.latency_jobs, args.rate, args.idle, d, args.timeout
        ),
        "backlog": lambda s, d: workloads.backlog(
            s, stores, BACKLOG_SMALL, args.backlog, d, args.timeout
        ),
    }
    # Workload by workload, systems alternating, so slow drifts of the machine hit all alike.
    for workload in WORKLOADS:
        if args.workload and workload not in args.workload:
            continue
        for system in systems:
            run_workload(
                results[system.name], workload, system, plan[workload], tmp_dir, args.retries
            )

    rows = metrics(BACKLOG_SMALL, args.backlog)
    title = (
        f"{' vs '.join(names)} ({SUITE_TITLES[suite]}), one run on {os.cpu_count()} CPUs; "
        f"only the ratios mean anything.  drain N={args.n}, bulk N={args.bulk_n}, latency "
        f"{args.latency_jobs} jobs @ {args.rate:g}/s, backlog {BACKLOG_SMALL:,} vs "
        f"{args.backlog:,} queued ({BACKLOG_SMALL:,} completions timed)"
    )
    table = format_table(names, results, title, rows)
    footer = notes(names, results)
    if server_line:
        footer.insert(0, f"PostgreSQL server, as SHOW reports it: {server_line}")
    print()
    print(table)
    print("\n".join(footer))
    return {
        **where,
        "systems": results,
        "ratios": ratios(names, results, rows) if names and names[0] == "jobq" else {},
        "table": table,
        "notes": footer,
    }


def _redact(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")).geturl()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    tmp_dir = (args.tmp_dir or Path(tempfile.gettempdir())).resolve()
    suites = list(SUITES) if args.suite == "all" else [args.suite]
    reports: dict[str, dict[str, Any]] = {}
    for suite in suites:
        if args.only and not any(name in SUITES[suite] for name in args.only):
            continue
        reports[suite] = run_suite(suite, args, tmp_dir)

    report = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "tmp_fs": filesystem_of(tmp_dir),
        },
        "params": {
            "suites": list(reports),
            "n": args.n,
            "bulk_n": args.bulk_n,
            "latency_jobs": args.latency_jobs,
            "rate_per_s": args.rate,
            "idle_s": args.idle,
            "backlog_small": BACKLOG_SMALL,
            "backlog_big": args.backlog,
            "worker_threads": WORKER_THREADS,
            "quick": args.quick,
        },
        "suites": reports,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nresults written to {args.json}")
    failed = any(
        "error" in res or any("error" in res.get(w, {}) for w in WORKLOADS)
        for suite in reports.values()
        for res in suite["systems"].values()
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
