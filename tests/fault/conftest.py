"""Fixtures of the fault battery, and the summary it prints at the end of the session."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import fresh_schema
from tests.fault.harness import SOAK, SUMMARY, Fleet, Store


@contextmanager
def postgres_store() -> Iterator[Store]:
    """A schema of its own on the test server; jobq's connections carry a unique
    application_name so that a test can cut exactly those."""
    with fresh_schema() as url:
        base, _, query = url.partition("?")
        schema = query.removeprefix("schema=")
        tag = f"jobq_fault_{uuid.uuid4().hex[:8]}"
        yield Store("postgres", f"{url}&application_name={tag}", base=base, schema=schema, tag=tag)


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A fresh job store: a SQLite file, or a schema of its own on the test server."""
    if request.param == "sqlite":
        path = tmp_path / "jobs.db"
        yield Store("sqlite", f"sqlite:///{path}", path=path)
        return
    with postgres_store() as s:
        yield s


@pytest.fixture
def fleet(store: Store, tmp_path: Path) -> Iterator[Fleet]:
    """Processes on ``store``; every one still running is killed when the test ends."""
    f = Fleet(store, tmp_path)
    try:
        yield f
    finally:
        f.stop_all()


@pytest.fixture
def pg_store() -> Iterator[Store]:
    with postgres_store() as s:
        yield s


@pytest.fixture
def pg_fleet(pg_store: Store, tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(pg_store, tmp_path)
    try:
        yield f
    finally:
        f.stop_all()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line per test of the battery, after the run, marked by how the test ended."""
    if not SUMMARY:
        return
    outcome: dict[str, str] = {}
    for key in ("passed", "failed", "xfailed", "xpassed", "error"):
        for report in terminalreporter.stats.get(key, []):
            if getattr(report, "when", "call") in ("call", "setup"):
                outcome.setdefault(report.nodeid, key)
    tags = {"failed": "FAILED: ", "error": "ERROR: ", "xfailed": "xfail, known bug: "}
    size = "full (JOBQ_SOAK=1)" if SOAK else "CI"
    terminalreporter.section(f"jobq fault battery, {size} size")
    for test, line in SUMMARY:
        terminalreporter.write_line(tags.get(outcome.get(test, ""), "") + line)
