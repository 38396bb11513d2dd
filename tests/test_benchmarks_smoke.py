"""The benchmark runner works: a tiny run end to end, checked for valid output, never for speed.

jobq alone on SQLite always runs. The second test adds one cheap peer (huey on SQLite) and the
chart, which need the peers' environment (``benchmarks/.peers-venv``, made from
``benchmarks/requirements-peers.txt`` on first use, about half a minute here); it is skipped,
saying why, when that environment cannot be made (no package index reachable).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
TINY = [
    "--suite",
    "sqlite",
    "--n",
    "200",
    "--bulk-n",
    "1000",
    "--latency-jobs",
    "20",
    "--idle",
    "0.1",
    "--backlog-small",
    "200",
    "--backlog",
    "1000",
    "--retries",
    "0",
    "--timeout",
    "120",
]

pytestmark = pytest.mark.slow


def run_bench(tmp_path: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], Any]:
    out = tmp_path / "latest.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", *TINY, "--json", str(out), *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done, json.loads(out.read_text())


def check_system(report: Any, suite: str, name: str) -> None:
    system = report["suites"][suite]["systems"][name]
    assert "error" not in system, system
    for workload in ("drain", "latency", "backlog"):
        assert system[workload].get("ok") is True, (name, workload, system[workload])
    assert system["drain"]["drain_per_s"] > 0
    assert system["latency"]["p50_ms"] >= 0


def test_runner_jobq_only(tmp_path: Path) -> None:
    done, report = run_bench(tmp_path, "--only", "jobq", "--no-chart")
    assert list(report["suites"]) == ["sqlite"]
    check_system(report, "sqlite", "jobq")
    assert report["suites"]["sqlite"]["systems"]["jobq"]["bulk"]["ok"] is True
    assert report["summary"]["rows"] == []  # no peer, no ratios
    assert "1 drain: drain/s" in done.stdout


def test_runner_with_one_peer_and_chart(tmp_path: Path) -> None:
    try:
        from benchmarks import peers_env

        peers_env.ensure(quiet=True)
    except Exception as exc:  # no index reachable: the runner itself is covered above
        pytest.skip(f"the peers' environment cannot be made here: {exc}")
    chart = tmp_path / "latest.png"
    done, report = run_bench(tmp_path, "--only", "jobq", "--only", "huey", "--chart", str(chart))
    check_system(report, "sqlite", "jobq")
    check_system(report, "sqlite", "huey")
    (row,) = report["summary"]["rows"]
    assert row["peer"] == "huey" and row["advantage"]["drain"] is not None
    assert "jobq/huey" in done.stdout
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
