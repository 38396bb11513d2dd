"""``python -m benchmarks``: four workloads (drain, bulk, latency, backlog), jobq beside peers.

Three suites: SQLite (jobq vs huey's SqliteHuey), PostgreSQL (jobq vs pgqueuer and
procrastinate) and Redis (jobq on PostgreSQL vs huey's RedisHuey, dramatiq, rq, Celery and
arq). Each prints one table with a ``jobq/<peer>`` ratio column per peer; the run ends with one
summary table of every peer, written as JSON and drawn as a PNG chart. The peers run from an
environment of their own (``benchmarks/.peers-venv``, made on first use from
``benchmarks/requirements-peers.txt``); jobq runs from the interpreter that runs this.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from benchmarks import ceilings, client, peers_env, summary, workloads
from benchmarks.common import (
    ROOT,
    WORKER_THREADS,
    Metric,
    Store,
    StoreFactory,
    SystemInfo,
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
    # jobq has no Redis backend: the Redis-backed peers meet jobq on PostgreSQL, its
    # scale-out store, measured again in this suite so that it alternates with them.
    "redis": {
        "jobq": "benchmarks.jobq_postgres",
        "huey-redis": "benchmarks.huey_redis",
        "dramatiq": "benchmarks.dramatiq_redis",
        "rq": "benchmarks.rq_redis",
        "celery": "benchmarks.celery_redis",
        "arq": "benchmarks.arq_redis",
    },
}
SUITE_TITLES = {"sqlite": "SQLite", "postgres": "PostgreSQL", "redis": "Redis"}
DEFAULTS = {"n": 10_000, "bulk_n": 100_000, "latency_jobs": 500, "backlog": 1_000_000}
QUICK = {"n": 2_000, "bulk_n": 20_000, "latency_jobs": 200, "backlog": 100_000}
#: Workload 4's small backlog, and the number of completions timed in both of its runs.
BACKLOG_SMALL = 10_000
WORKLOADS = ("drain", "bulk", "latency", "backlog")
#: Workload 4 (a million jobs queued) is run on the databases only.
SUITE_WORKLOADS = {"sqlite": WORKLOADS, "postgres": WORKLOADS, "redis": WORKLOADS[:3]}
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
#: The Redis database the benchmark may empty (FLUSHDB) as it likes: never any other.
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"
CHART = ROOT / "benchmarks" / "results" / "latest.png"
DOCS = ROOT / "docs" / "bench"

Plan = dict[str, Callable[[SystemInfo, Path], dict[str, Any]]]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument(
        "--suite",
        choices=[*SUITES, "all"],
        default="all",
        help="which suite to run (default all: sqlite, postgres, then redis)",
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
        help="backlog growth: the big backlog (default 1000000, --quick 100000), timed "
        "against --backlog-small queued",
    )
    p.add_argument(
        "--backlog-small",
        type=int,
        default=BACKLOG_SMALL,
        help=f"backlog growth: the small backlog, and the completions timed in both runs "
        f"(default {BACKLOG_SMALL})",
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
        help="run only this workload (repeatable; default all four; Redis: the first three)",
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
        "--redis-url",
        default=DEFAULT_REDIS_URL,
        help="the Redis database the Redis-backed peers use; it is emptied (FLUSHDB) before "
        f"and after every workload, so give one nothing else uses (default {DEFAULT_REDIS_URL})",
    )
    p.add_argument(
        "--peers-python",
        type=Path,
        help="run the peers with this interpreter instead of the peers' own environment "
        "(benchmarks/.peers-venv, made on first use from benchmarks/requirements-peers.txt)",
    )
    p.add_argument(
        "--json",
        type=Path,
        default=ROOT / "benchmarks" / "results" / "latest.json",
        help="write the results here (default benchmarks/results/latest.json)",
    )
    p.add_argument(
        "--chart",
        type=Path,
        default=CHART,
        help="draw the summary here as a PNG (default benchmarks/results/latest.png; needs "
        "the peers' environment, which has matplotlib)",
    )
    p.add_argument(
        "--ceilings",
        choices=("full", "quick", "off"),
        help="measure what the store and jobq's exchange allow on this machine (the bounds "
        "of the targets; benchmarks.ceilings) after the SQLite and PostgreSQL suites "
        "(default full, --quick: quick)",
    )
    p.add_argument("--no-chart", action="store_true", help="do not draw the chart")
    p.add_argument(
        "--save-docs",
        action="store_true",
        help="also copy the chart and the JSON to docs/bench/latest.png and latest.json "
        "(what the README shows)",
    )
    args = p.parse_args(argv)
    sizes = QUICK if args.quick else DEFAULTS
    if args.ceilings is None:
        args.ceilings = "quick" if args.quick else "full"
    for key, value in sizes.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if not args.rate > 0:  # also NaN
        p.error(f"--rate must be a positive number of enqueues per second, not {args.rate:g}")
    if args.backlog_small < 2:
        p.error("--backlog-small must be at least 2")
    if args.backlog < args.backlog_small:
        p.error(f"--backlog must be at least --backlog-small ({args.backlog_small})")
    return args


def is_jobq(module: str) -> bool:
    return module.startswith("benchmarks.jobq_")


class Interpreters:
    """Which python runs which system: jobq this one, the peers theirs (made when first
    needed, so a jobq-only run never builds the peers' environment)."""

    def __init__(self, peers_python: Path | None) -> None:
        self._peers = str(peers_python) if peers_python is not None else None
        self.peers_error: str | None = None

    def peers(self) -> str | None:
        if self._peers is None and self.peers_error is None:
            try:
                self._peers = str(peers_env.ensure(quiet=True))
            except Exception as exc:
                self.peers_error = f"cannot make the peers' environment: {exc}"
        return self._peers

    def for_module(self, module: str) -> str | None:
        return sys.executable if is_jobq(module) else self.peers()


def load_system(module: str, interpreters: Interpreters) -> SystemInfo | str:
    """The module's ``SYSTEM`` as its own interpreter describes it, or why it cannot be."""
    python = interpreters.for_module(module)
    if python is None:
        return interpreters.peers_error or "no interpreter"
    try:
        return client.describe(module, python)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


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


def open_store(pg_url: str, redis_url: str) -> StoreFactory:
    """Fresh stores: a file in the workload's temp dir (SQLite), a new database (PostgreSQL),
    or the benchmark's own Redis database, emptied."""

    def factory(system: SystemInfo, label: str, workdir: Path) -> AbstractContextManager[Store]:
        if system.store == "postgres":
            from benchmarks import pg  # needs psycopg, which the SQLite suite does not

            return pg.fresh_database(pg_url, system.name)
        if system.store == "redis":
            from benchmarks import redis_store

            return redis_store.fresh_database(redis_url)
        return sqlite_store(label, workdir)

    return factory


def run_workload(
    results: dict[str, Any],
    name: str,
    system: SystemInfo,
    fn: Callable[[SystemInfo, Path], dict[str, Any]],
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


def run_suite(
    suite: str, args: argparse.Namespace, tmp_dir: Path, interpreters: Interpreters
) -> dict[str, Any]:
    """Run every selected workload for every selected system of ``suite``; print its table."""
    names = [name for name in SUITES[suite] if not args.only or name in args.only]
    results: dict[str, dict[str, Any]] = {}
    systems: list[SystemInfo] = []
    for name in names:
        loaded = load_system(SUITES[suite][name], interpreters)
        if isinstance(loaded, str):
            print(f"{name}: cannot load {SUITES[suite][name]}: {loaded}", file=sys.stderr)
            results[name] = {"error": loaded}
            continue
        systems.append(loaded)
        results[name] = {
            "version": loaded.version,
            "store": loaded.store,
            "durability": loaded.durability,
            "durability_note": loaded.durability_note,
            "notes": list(loaded.notes),
        }

    where: dict[str, Any] = {}
    server_lines: list[str] = []
    where_texts: list[str] = []
    stores = {system.store for system in systems}
    if "postgres" in stores:
        try:
            from benchmarks import pg

            settings = pg.server_settings(args.pg_url)
            stale = pg.drop_stale_databases(args.pg_url)
            if stale:
                print(f"dropped databases left by earlier runs: {', '.join(stale)}")
        except Exception as exc:
            settings = {"error": f"{type(exc).__name__}: {exc}"}
            for system in [s for s in systems if s.store == "postgres"]:
                results[system.name] = {"error": f"PostgreSQL server: {settings['error']}"}
            systems = [s for s in systems if s.store != "postgres"]
        where.update({"server": _redact(args.pg_url), "settings": settings})
        line = ", ".join(f"{k}={v}" for k, v in settings.items())
        server_lines.append(f"PostgreSQL server, as SHOW reports it: {line}")
        where_texts.append(f"server {_redact(args.pg_url)}: {line}")
    if "redis" in stores:
        from benchmarks import redis_store

        try:
            redis_settings = redis_store.server_settings(args.redis_url)
        except Exception as exc:
            redis_settings = {"error": f"{type(exc).__name__}: {exc}"}
            for system in [s for s in systems if s.store == "redis"]:
                results[system.name] = {"error": f"Redis server: {redis_settings['error']}"}
            systems = [s for s in systems if s.store != "redis"]
        else:
            words = redis_store.durability_words(redis_settings)
            for system in systems:
                if system.store == "redis":
                    results[system.name]["durability"] = words
        where.update({"redis": _redact(args.redis_url), "redis_settings": redis_settings})
        line = ", ".join(f"{k}={v!r}" for k, v in redis_settings.items())
        disk = (
            " -- keeps nothing on disk: a restart of Redis loses every queued job"
            if redis_store.keeps_nothing_on_disk(redis_settings)
            else ""
        )
        server_lines.append(f"Redis server {_redact(args.redis_url)}: {line}{disk}")
        where_texts.append(f"Redis {_redact(args.redis_url)}")
    if "sqlite" in stores:
        where.update({"tmp_dir": str(tmp_dir), "tmp_fs": filesystem_of(tmp_dir)})
        where_texts.append(f"temp dir {tmp_dir} ({where['tmp_fs']})")

    small = args.backlog_small
    chosen = [w for w in SUITE_WORKLOADS[suite] if not args.workload or w in args.workload]
    print(
        f"\n== {SUITE_TITLES[suite]}: {', '.join(names)} ==\n"
        f"drain N={args.n}, bulk N={args.bulk_n}, latency {args.latency_jobs} jobs at "
        f"{args.rate:g}/s after {args.idle:g}s idle, backlog {small} vs "
        f"{args.backlog}; {'; '.join(where_texts)}",
        flush=True,
    )
    stores_of = open_store(args.pg_url, args.redis_url)
    plan: Plan = {
        "drain": lambda s, d: workloads.drain(s, stores_of, args.n, d, args.timeout),
        "bulk": lambda s, d: workloads.bulk(s, stores_of, args.bulk_n, d),
        "latency": lambda s, d: workloads.latency(
            s, stores_of, args.latency_jobs, args.rate, args.idle, d, args.timeout
        ),
        "backlog": lambda s, d: workloads.backlog(
            s, stores_of, small, args.backlog, d, args.timeout
        ),
    }
    # Workload by workload, systems alternating, so slow drifts of the machine hit all alike.
    for workload in chosen:
        for system in systems:
            run_workload(
                results[system.name], workload, system, plan[workload], tmp_dir, args.retries
            )

    rows = [m for m in metrics(small, args.backlog) if m.workload in chosen]
    title = (
        f"{' vs '.join(names)} ({SUITE_TITLES[suite]}), one run on {os.cpu_count()} CPUs; "
        f"only the ratios mean anything.  drain N={args.n}, bulk N={args.bulk_n}, latency "
        f"{args.latency_jobs} jobs @ {args.rate:g}/s"
        + (
            f", backlog {small:,} vs {args.backlog:,} queued ({small:,} completions timed)"
            if "backlog" in chosen
            else ""
        )
    )
    if suite == "redis":
        title += "; jobq runs on PostgreSQL (durable), the others on Redis"
    table = format_table(names, results, title, rows)
    footer = server_lines + notes(names, results)
    print()
    print(table)
    print("\n".join(footer))
    found = measure_ceilings(suite, args, tmp_dir) if "jobq" in names else {}
    return {
        **where,
        **found,
        "workloads": chosen,
        "systems": results,
        "ratios": ratios(names, results, rows) if names and names[0] == "jobq" else {},
        "table": table,
        "notes": footer,
    }


def measure_ceilings(suite: str, args: argparse.Namespace, tmp_dir: Path) -> dict[str, Any]:
    """``{"ceilings": figures}`` of the suite's store (SQLite, PostgreSQL), printed; ``{}`` when
    the suite has none or ``--ceilings off``; ``{"ceilings_error": why}`` when it failed."""
    if args.ceilings == "off" or suite not in ("sqlite", "postgres"):
        return {}
    quick = args.ceilings == "quick"
    try:
        if suite == "postgres":
            from benchmarks import pg

            with pg.fresh_database(args.pg_url, "ceilings") as store:
                figures = ceilings.run(suite, store.locator, quick, args.rate)
        else:
            with tempfile.TemporaryDirectory(prefix="bench-ceilings-", dir=tmp_dir) as workdir:
                figures = ceilings.run(suite, str(Path(workdir) / "ceilings.db"), quick, args.rate)
    except Exception as exc:
        why = f"{type(exc).__name__}: {exc}"
        print(f"ceilings not measured: {why}")
        return {"ceilings_error": why}
    print("\n".join(ceilings.describe(figures)))
    return {"ceilings": figures}


def _redact(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")).geturl()


def draw_chart(report_path: Path, chart: Path, python: str | None) -> str | None:
    """Draw the summary of ``report_path`` as a PNG with matplotlib (in the peers'
    environment); returns why not, if it could not."""
    if python is None:
        return "no peers' environment (matplotlib lives there)"
    done = subprocess.run(
        [python, "-m", "benchmarks.chart", str(report_path), str(chart)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        return (done.stderr.strip().splitlines() or ["matplotlib failed"])[-1]
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    tmp_dir = (args.tmp_dir or Path(tempfile.gettempdir())).resolve()
    suites = list(SUITES) if args.suite == "all" else [args.suite]
    interpreters = Interpreters(args.peers_python)
    reports: dict[str, dict[str, Any]] = {}
    for suite in suites:
        selected = [name for name in SUITES[suite] if not args.only or name in args.only]
        if not selected or (suite == "redis" and selected == ["jobq"]):
            continue  # nothing of it asked for (the Redis suite's jobq alone is PostgreSQL's)
        reports[suite] = run_suite(suite, args, tmp_dir, interpreters)

    rows = summary.summary_rows(reports)
    targets = summary.check_targets(reports, args.bulk_n)
    summary_table = summary.format_summary(rows, os.cpu_count())
    if rows:
        print()
        print(summary_table)
    if targets:
        print()
        print(summary.format_targets(targets))
    elapsed = time.monotonic() - started
    print(f"\nthe whole run took {elapsed / 60:.1f} minutes")

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
            "backlog_small": args.backlog_small,
            "backlog_big": args.backlog,
            "worker_threads": WORKER_THREADS,
            "quick": args.quick,
        },
        "elapsed_s": elapsed,
        "suites": reports,
        "summary": {"rows": rows, "table": summary_table, "targets": targets},
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"results written to {args.json}")
    if not args.no_chart and rows:
        why = draw_chart(args.json, args.chart, interpreters.peers())
        print(f"chart not drawn: {why}" if why else f"chart drawn to {args.chart}")
        if args.save_docs and why is None:
            DOCS.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(args.chart, DOCS / "latest.png")
    if args.save_docs:
        DOCS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(args.json, DOCS / "latest.json")
        print(f"copied to {DOCS.relative_to(ROOT)}/")
    failed = any(
        "error" in res or any("error" in res.get(w, {}) for w in WORKLOADS)
        for suite in reports.values()
        for res in suite["systems"].values()
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
