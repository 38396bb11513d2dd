"""What only the SQLite backend has: durability settings, open errors, schema, query plans."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

import jobq
from jobq.backends.sqlite import SQLiteBackend
from jobq.backends.sqlite_schema import SCHEMA_VERSION


def test_durable_defaults(tmp_path: Path) -> None:
    b = SQLiteBackend(f"sqlite:///{tmp_path}/j.db")
    conn = b._conn()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert b.schema_version() == SCHEMA_VERSION
    b.close()
    fast = SQLiteBackend(f"sqlite:///{tmp_path}/j.db?synchronous=normal")
    assert fast._conn().execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    fast.close()


def test_relative_and_absolute_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    rel = SQLiteBackend("sqlite:///rel.db")
    assert (tmp_path / "rel.db").exists()
    rel.close()
    abs_ = SQLiteBackend(f"sqlite:///{tmp_path}/abs.db")
    assert abs_.path == f"{tmp_path}/abs.db"
    abs_.close()


def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(jobq.DatabaseOpenError, match="does not exist"):
        jobq.App(f"sqlite:///{tmp_path}/no/such/dir/j.db").open()


def test_path_under_a_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    with pytest.raises(jobq.DatabaseOpenError):
        jobq.App(f"sqlite:///{tmp_path}/afile/j.db").open()


def test_file_that_is_not_a_database(tmp_path: Path) -> None:
    (tmp_path / "garbage.db").write_bytes(b"this is not a sqlite file" * 100)
    with pytest.raises(jobq.DatabaseOpenError, match=r"garbage\.db"):
        jobq.App(f"sqlite:///{tmp_path}/garbage.db").open()


def test_filesystem_without_wal_fails_loudly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(SQLiteBackend, "_enable_wal", lambda self, conn: "delete")
    with pytest.raises(jobq.DatabaseOpenError, match="cannot use WAL"):
        jobq.App(f"sqlite:///{tmp_path}/j.db").open()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    SQLiteBackend(f"sqlite:///{path}").close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(jobq.SchemaVersionError, match="upgrade jobq"):
        SQLiteBackend(f"sqlite:///{path}")


def test_reopening_does_not_migrate_again(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/j.db"
    app = jobq.App(url)
    job = app.enqueue("t", args=[1])
    app.close()
    again = jobq.App(url)
    assert again.get_job(job.id).args == [1]
    assert again.backend.schema_version() == SCHEMA_VERSION  # type: ignore[attr-defined]
    again.close()


def test_claim_walks_the_claim_index(tmp_path: Path) -> None:
    b = SQLiteBackend(f"sqlite:///{tmp_path}/j.db")
    plan = (
        b._conn()
        .execute(
            "EXPLAIN QUERY PLAN SELECT id FROM jobq_jobs WHERE state = 'available' AND queue = 'q' "
            "ORDER BY eff_priority DESC, deadline_key, run_at, id LIMIT 10"
        )
        .fetchall()
    )
    text = " ".join(str(row[-1]) for row in plan)
    assert "jobq_jobs_claim" in text and "TEMP B-TREE" not in text
    b.close()


def test_undecodable_stored_errors_do_not_break_reading(tmp_path: Path) -> None:
    app = jobq.App(f"sqlite:///{tmp_path}/j.db")
    job = app.enqueue("t")
    conn = sqlite3.connect(tmp_path / "j.db")
    conn.execute("UPDATE jobq_jobs SET errors = 'not json' WHERE id = ?", (job.id,))
    conn.commit()
    conn.close()
    assert app.get_job(job.id).errors[0].type == "CorruptErrors"
    app.close()


def _sqlite_schema(path: Path) -> list[tuple[str, str, str]]:
    conn = sqlite3.connect(path)
    rows = conn.execute(
        "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY 2"
    ).fetchall()
    conn.close()
    return [(t, n, " ".join((s or "").split())) for t, n, s in rows]


def test_fresh_schema_equals_one_migrated_from_every_earlier_version(tmp_path: Path) -> None:
    from jobq.backends.sqlite_schema import MIGRATIONS

    fresh = tmp_path / "fresh.db"
    SQLiteBackend(f"sqlite:///{fresh}").close()
    want = _sqlite_schema(fresh)
    for start in range(1, SCHEMA_VERSION):
        old = tmp_path / f"from_{start}.db"
        conn = sqlite3.connect(old)
        for number in range(start):
            for statement in MIGRATIONS[number]:
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {start}")
        conn.commit()
        conn.close()
        migrated = SQLiteBackend(f"sqlite:///{old}")
        assert migrated.schema_version() == SCHEMA_VERSION
        migrated.close()
        assert _sqlite_schema(old) == want
