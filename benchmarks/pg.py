"""The PostgreSQL server the PostgreSQL suite runs on: fresh databases, settings, settling.

Every system gets a database of its own for every workload (``jobq_bench_<system>_<pid>``),
created through the admin URL (``--pg-url``) and dropped afterwards, also when the workload
fails, so no system ever sees another's tables.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import psycopg
from psycopg import sql

from benchmarks.common import Store

#: Read from the server and shown under the PostgreSQL table.
SERVER_SETTINGS = ("server_version", "synchronous_commit", "fsync", "full_page_writes")
_DB_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_OURS = re.compile(r"jobq_bench_[a-z0-9_]+_(\d+)")
#: How long to keep trying to reach the server (it may be restarting, e.g. by someone's test).
_CONNECT_PATIENCE_SECONDS = 30.0


def database_url(admin_url: str, dbname: str) -> str:
    """``admin_url`` with its database replaced by ``dbname``."""
    return urlsplit(admin_url)._replace(path=f"/{dbname}").geturl()


def database_name(system: str) -> str:
    """The name of ``system``'s benchmark database in this run."""
    name = f"jobq_bench_{system}_{os.getpid()}".lower()
    if not _DB_NAME.fullmatch(name):
        raise ValueError(f"not a usable database name: {name!r}")
    return name


def _admin(url: str) -> psycopg.Connection[tuple[object, ...]]:
    """An autocommit connection; retried for a while if the server is (re)starting."""
    deadline = time.monotonic() + _CONNECT_PATIENCE_SECONDS
    while True:
        try:
            return psycopg.connect(url, autocommit=True, connect_timeout=10)
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def server_settings(admin_url: str) -> dict[str, str]:
    """The durability-relevant settings as the server reports them (``SHOW ...``)."""
    with _admin(admin_url) as conn:
        return {name: _show(conn, name) for name in SERVER_SETTINGS}


def _show(conn: psycopg.Connection[tuple[object, ...]], name: str) -> str:
    row = conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchone()
    assert row is not None
    return str(row[0])


def _drop(conn: psycopg.Connection[tuple[object, ...]], dbname: str) -> None:
    # FORCE: a worker that was killed may leave a backend behind for a moment.
    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def drop_stale_databases(admin_url: str) -> list[str]:
    """Drop benchmark databases left by runs that died before their cleanup (pid not alive)."""
    with _admin(admin_url) as conn:
        names = [str(row[0]) for row in conn.execute("SELECT datname FROM pg_database")]
        stale = [
            name
            for name in names
            if (m := _OURS.fullmatch(name)) and int(m[1]) != os.getpid() and not _alive(int(m[1]))
        ]
        for name in stale:
            _drop(conn, name)
    return stale


@contextmanager
def fresh_database(admin_url: str, system: str) -> Iterator[Store]:
    """A new, empty database for ``system``, dropped on leaving (also on failure)."""
    dbname = database_name(system)
    with _admin(admin_url) as conn:
        _drop(conn, dbname)  # a leftover of a crashed run with the same pid
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    url = database_url(admin_url, dbname)
    try:
        yield Store(locator=url, settle=lambda: settle(url), analyze=lambda: analyze(url))
    finally:
        with _admin(admin_url) as conn:
            _drop(conn, dbname)


def settle(url: str) -> None:
    """After a backlog was inserted: ``VACUUM (ANALYZE)`` the database, then ``CHECKPOINT``.

    A backlog that has been sitting in a live database has been vacuumed and analysed by
    autovacuum; doing it here, for every system alike, keeps autovacuum and a checkpoint out of
    the timed drain (and keeps the planner from working with the statistics of an empty table).
    """
    with _admin(url) as conn:
        conn.execute("VACUUM (ANALYZE)")
        conn.execute("CHECKPOINT")


def analyze(url: str) -> None:
    """``ANALYZE`` the database: planner statistics for the tables just filled; then
    ``CHECKPOINT``, so that the pages the enqueues dirtied are written now, not by the
    checkpointer in the middle of the timed drain (whichever system drains next).

    A fresh table has no statistics, and a planner that believes it is empty can pick a plan
    that scans the whole queue per claim (procrastinate's does).  A queue table in real use has
    been analysed by autovacuum long ago.
    """
    with _admin(url) as conn:
        conn.execute("ANALYZE")
        conn.execute("CHECKPOINT")


def durability_problems(url: str) -> list[str]:
    """What would make ``url``'s database less durable than the server default.

    Checks the settings a new session gets (``synchronous_commit``, ``fsync``), per-database or
    per-role overrides (``ALTER DATABASE/ROLE ... SET``), and unlogged tables.
    """
    problems: list[str] = []
    with _admin(url) as conn:
        for name, wanted in (("synchronous_commit", "on"), ("fsync", "on")):
            value = _show(conn, name)
            if value != wanted:
                problems.append(f"{name}={value}")
        overrides = conn.execute(
            """
            SELECT array_to_string(setconfig, ', ')
            FROM pg_db_role_setting s
            LEFT JOIN pg_database d ON d.oid = s.setdatabase
            WHERE (d.datname = current_database() OR s.setdatabase = 0)
              AND array_to_string(setconfig, ',') ~ '(synchronous_commit|fsync)'
            """
        ).fetchall()
        problems += [f"override: {row[0]}" for row in overrides]
        unlogged = conn.execute(
            """
            SELECT c.relname FROM pg_class c
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind = 'r' AND c.relpersistence <> 'p'
              AND n.nspname NOT IN ('pg_catalog', 'information_schema')
              AND n.nspname NOT LIKE 'pg_temp%'
            """
        ).fetchall()
        problems += [f"unlogged table {row[0]}" for row in unlogged]
    return problems


def require_durable(url: str, system: str) -> None:
    """Raise unless ``url``'s database runs with the server's durable defaults."""
    problems = durability_problems(url)
    if problems:
        raise RuntimeError(f"{system} is not durable like the others: {', '.join(problems)}")
