"""``python -m benchmarks``: BENCHMARK.md workloads 1-3, jobq and huey side by side, one run."""

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
from pathlib import Path
from typing import Any

from benchmarks import workloads
from benchmarks.common import (
    METRICS,
    ROOT,
    WORKER_THREADS,
    System,
    format_table,
    metric_value,
    ratio,
)

#: name -> module defining ``SYSTEM``; the first is the numerator of the ratios.
SYSTEMS = {"jobq": "benchmarks.jobq_sqlite", "huey": "benchmarks.huey_sqlite"}
DEFAULTS = {"n": 10_000, "bulk_n": 100_000, "latency_jobs": 500}
QUICK = {"n": 2_000, "bulk_n": 20_000, "latency_jobs": 200}
WORKLOADS = ("drain", "bulk", "latency")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
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
    p.add_argument("--only", choices=sorted(SYSTEMS), help="run one system only")
    p.add_argument(
        "--quick", action="store_true", help="smoke run: N=2000, bulk 20000, 200 latency jobs"
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="give up on a workload after this many seconds (default 300)",
    )
    p.add_argument(
        "--tmp-dir",
        type=Path,
        default=None,
        help="where the temporary databases go (default: the system temp dir; "
        "must be a real disk, not tmpfs, for fsync to mean anything)",
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


def run_workload(
    results: dict[str, Any],
    name: str,
    system: System,
    fn: Callable[[System, Path], dict[str, Any]],
    tmp_dir: Path | None,
) -> None:
    """Run one workload for one system in a fresh temporary directory; record any error."""
    print(f"  {system.name}: {name} ...", end=" ", flush=True)
    try:
        with tempfile.TemporaryDirectory(
            prefix=f"bench-{system.name}-{name}-", dir=tmp_dir
        ) as workdir:
            outcome = fn(system, Path(workdir))
    except Exception as exc:
        traceback.print_exc()
        outcome = {"error": f"{type(exc).__name__}: {exc}"}
    results[name] = outcome
    status = "error" if "error" in outcome else ("ok" if outcome.get("ok", True) else "CHECK")
    print(status, flush=True)


def notes(names: Sequence[str], results: dict[str, dict[str, Any]]) -> list[str]:
    """The lines printed under the table: durability, caveats, failed checks, worker trouble."""
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
            elif outcome.get("ok") is False:
                checks = {k: v for k, v in outcome.items() if not k.startswith("worker_log")}
                lines.append(f"{name}: {workload} CHECK FAILED: {json.dumps(checks)}")
            if outcome.get("worker_log_problems"):
                lines.append(
                    f"{name}: {workload} worker logged {outcome['worker_log_problems']} "
                    f"error/warning lines, first: {outcome['worker_log_first_problem']}"
                )
            if outcome.get("worker_stopped_cleanly") is False:
                lines.append(f"{name}: {workload} worker did not exit cleanly on SIGTERM")
    return lines


def ratios(names: Sequence[str], results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    if len(names) != 2:
        return {}
    a, b = names
    out: dict[str, Any] = {"numerator": a, "denominator": b}
    for metric in METRICS:
        out[f"{metric.workload}.{metric.key}"] = ratio(
            metric_value(results[a], metric), metric_value(results[b], metric)
        )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    names = [args.only] if args.only else list(SYSTEMS)
    tmp_dir = (args.tmp_dir or Path(tempfile.gettempdir())).resolve()
    results: dict[str, dict[str, Any]] = {}
    systems: list[System] = []
    for name in names:
        loaded = load_system(SYSTEMS[name])
        if isinstance(loaded, str):
            print(f"{name}: cannot load {SYSTEMS[name]}: {loaded}", file=sys.stderr)
            results[name] = {"error": loaded}
            continue
        systems.append(loaded)
        results[name] = {
            "version": loaded.version,
            "durability": loaded.durability,
            "durability_note": loaded.durability_note,
            "notes": list(loaded.notes),
        }

    print(
        f"drain N={args.n}, bulk N={args.bulk_n}, latency {args.latency_jobs} jobs at "
        f"{args.rate:g}/s after {args.idle:g}s idle; temp dir {tmp_dir} "
        f"({filesystem_of(tmp_dir)})",
        flush=True,
    )
    plan: dict[str, Callable[[System, Path], dict[str, Any]]] = {
        "drain": lambda s, d: workloads.drain(s, args.n, d, args.timeout),
        "bulk": lambda s, d: workloads.bulk(s, args.bulk_n, d),
        "latency": lambda s, d: workloads.latency(
            s, args.latency_jobs, args.rate, args.idle, d, args.timeout
        ),
    }
    # Workload by workload, systems alternating, so slow drifts of the machine hit both alike.
    for workload in WORKLOADS:
        for system in systems:
            run_workload(results[system.name], workload, system, plan[workload], tmp_dir)

    title = (
        f"{' vs '.join(names)} (SQLite), one run on {os.cpu_count()} CPUs; only the ratios "
        f"mean anything.  drain N={args.n}, bulk N={args.bulk_n}, latency "
        f"{args.latency_jobs} jobs @ {args.rate:g}/s"
    )
    table = format_table(names, results, title)
    print()
    print(table)
    print("\n".join(notes(names, results)))

    report = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "tmp_fs": filesystem_of(tmp_dir),
        },
        "params": {
            "n": args.n,
            "bulk_n": args.bulk_n,
            "latency_jobs": args.latency_jobs,
            "rate_per_s": args.rate,
            "idle_s": args.idle,
            "worker_threads": WORKER_THREADS,
            "quick": args.quick,
        },
        "systems": results,
        "ratios": ratios(names, results),
        "table": table,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nresults written to {args.json}")
    failed = any(
        "error" in res or any("error" in res.get(w, {}) for w in WORKLOADS)
        for res in results.values()
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
