"""Job stores. :func:`open_backend` picks one by URL scheme; nothing else names a concrete one."""

from __future__ import annotations

from urllib.parse import urlsplit

from jobq.backends.base import Backend, JobFilter, Lease, NewJob, Outcome, OutcomeKind
from jobq.exceptions import ConfigurationError

__all__ = [
    "Backend",
    "JobFilter",
    "Lease",
    "NewJob",
    "Outcome",
    "OutcomeKind",
    "check_url",
    "open_backend",
    "redact_url",
]


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, safe to print and log."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def check_url(url: object) -> str:
    """Validate a job store URL without opening it; returns its scheme."""
    if not isinstance(url, str) or not url:
        raise ConfigurationError(
            f"job store URL must be a non-empty string like 'sqlite:///jobs.db', got {url!r}"
        )
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        from jobq.backends.sqlite import parse_sqlite_url

        parse_sqlite_url(url)
    elif scheme in ("postgresql", "postgres"):
        try:
            from jobq.backends.postgres import parse_postgres_url
        except ImportError:
            raise ConfigurationError(
                "PostgreSQL support needs psycopg 3 and psycopg_pool: pip install 'jobq[postgres]'"
            ) from None
        parse_postgres_url(url)
    elif scheme != "memory":
        raise ConfigurationError(
            f"unsupported job store URL {redact_url(url)!r}: use 'sqlite:///path/to/jobs.db', "
            "'postgresql://user@host/db' or 'memory://'"
        )
    return scheme


def open_backend(url: str) -> Backend:
    """Open the job store named by ``url``: ``sqlite:///path.db``, ``postgresql://...`` or
    ``memory://``."""
    scheme = check_url(url)
    if scheme == "memory":
        from jobq.backends.memory import MemoryBackend

        return MemoryBackend(url)
    if scheme == "sqlite":
        from jobq.backends.sqlite import SQLiteBackend

        return SQLiteBackend(url)
    if scheme in ("postgresql", "postgres"):
        from jobq.backends.postgres import PostgresBackend

        return PostgresBackend(url)
    raise AssertionError(f"check_url accepted an unknown scheme {scheme!r}")
