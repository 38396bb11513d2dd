"""Shared fixtures. ``backend_factory`` opens every backend of the conformance suite."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from jobq.backends import Backend, NewJob, open_backend

BACKENDS = ["memory", "sqlite", "postgres"]
#: The PostgreSQL server the tests use; each test gets a schema of its own, dropped afterwards.
PG_URL = os.environ.get("JOBQ_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def postgres_or_skip() -> str:
    """The test server's URL; skips without a server, but fails under CI (CI=true)."""
    try:
        import psycopg

        psycopg.connect(PG_URL, connect_timeout=3).close()
    except Exception as exc:
        message = f"PostgreSQL not reachable at {PG_URL}: {exc}"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message + " (CI=true: a missing server is a failure, not a skip)")
        pytest.skip(message)
    return PG_URL


@contextmanager
def fresh_schema() -> Iterator[str]:
    """A job store URL on its own new schema of the test server; the schema is dropped after."""
    import psycopg

    base = postgres_or_skip()
    schema = f"jobq_t_{uuid.uuid4().hex[:12]}"
    try:
        yield f"{base}?schema={schema}"
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


T0 = datetime(2030, 1, 1, tzinfo=UTC)


class Clock:
    """Injected time for backend calls: tests move it, nothing sleeps."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=BACKENDS)
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    kind = request.param
    if kind == "memory":
        yield "memory://"
    elif kind == "sqlite":
        yield f"sqlite:///{tmp_path}/jobs.db"
    else:
        with fresh_schema() as url:
            yield url


@pytest.fixture
def open_store(backend_url: str) -> Iterator[Callable[[], Backend]]:
    """Opens the backend under test; a second call gives a second handle on the same store
    (another connection for SQLite, the same object for memory)."""
    opened: list[Backend] = []
    first: list[Backend] = []

    def open_() -> Backend:
        if backend_url.startswith("memory") and first:
            return first[0]
        b = open_backend(backend_url)
        opened.append(b)
        if not first:
            first.append(b)
        return b

    yield open_
    for b in opened:
        b.close()


@pytest.fixture
def backend(open_store: Callable[[], Backend]) -> Backend:
    return open_store()


def new_job(task: str = "t", queue: str = "default", **kw: object) -> NewJob:
    fields: dict[str, object] = {
        "queue": queue,
        "task": task,
        "args_json": "[]",
        "kwargs_json": "{}",
        "priority": 0,
        "max_attempts": 3,
    }
    fields.update(kw)
    return NewJob(**fields)  # type: ignore[arg-type]


@pytest.fixture
def app_url(backend_url: str) -> str:
    return backend_url


def pytest_report_header() -> str:
    return f"jobq conformance backends: {', '.join(BACKENDS)}; CI={os.environ.get('CI', '')}"
