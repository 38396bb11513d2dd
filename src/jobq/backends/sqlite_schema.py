"""Versioned schema of the SQLite backend. The version lives in ``PRAGMA user_version``.

Each entry of :data:`MIGRATIONS` moves the schema one version up; a new database runs them all.
Never edit a released migration: append a new one.
"""

from __future__ import annotations

MIGRATIONS: list[list[str]] = [
    # 1: the jobs table and the indexes of the hot paths (all partial, so they hold only the
    # rows a hot path can want).
    [
        """
        CREATE TABLE jobq_jobs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            queue TEXT NOT NULL,
            task TEXT NOT NULL,
            args TEXT NOT NULL,
            kwargs TEXT NOT NULL,
            priority INTEGER NOT NULL,
            eff_priority INTEGER NOT NULL,          -- priority plus aging boost
            deadline INTEGER,                        -- microseconds since epoch, UTC
            deadline_key INTEGER NOT NULL,           -- deadline, or 2**62 when none
            run_at INTEGER NOT NULL,
            attempt INTEGER NOT NULL DEFAULT 0,
            max_attempts INTEGER NOT NULL,
            timeout INTEGER,                         -- microseconds
            unique_key TEXT,
            tags TEXT NOT NULL DEFAULT '[]',
            state TEXT NOT NULL,
            worker_id TEXT,
            lease_token TEXT,
            leased_until INTEGER,
            result TEXT,
            errors TEXT NOT NULL DEFAULT '[]',
            created_at INTEGER NOT NULL,
            started_at INTEGER,
            finished_at INTEGER
        )
        """,
        """
        CREATE INDEX jobq_jobs_claim ON jobq_jobs
            (queue, eff_priority DESC, deadline_key, run_at, id) WHERE state = 'available'
        """,
        "CREATE INDEX jobq_jobs_due ON jobq_jobs (run_at) WHERE state = 'scheduled'",
        "CREATE INDEX jobq_jobs_lease ON jobq_jobs (leased_until) WHERE state = 'running'",
        """
        CREATE UNIQUE INDEX jobq_jobs_unique ON jobq_jobs (unique_key)
            WHERE unique_key IS NOT NULL
              AND state IN ('scheduled', 'blocked', 'available', 'running')
        """,
        """
        CREATE INDEX jobq_jobs_finished ON jobq_jobs (finished_at)
            WHERE state IN ('completed', 'dead', 'cancelled', 'expired')
        """,
        """
        CREATE TABLE jobq_meta (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL
        )
        """,
    ],
]

MIGRATIONS.append(
    # 2: the registry of worker processes (who is alive, for `jobq status` and the dashboard).
    [
        """
        CREATE TABLE jobq_workers (
            id TEXT PRIMARY KEY,
            host TEXT NOT NULL,
            pid INTEGER NOT NULL,
            queues TEXT NOT NULL,                    -- JSON list
            threads INTEGER NOT NULL,
            started_at INTEGER NOT NULL,
            heartbeat_at INTEGER NOT NULL,
            jobs_run INTEGER NOT NULL DEFAULT 0
        )
        """,
    ]
)

SCHEMA_VERSION = len(MIGRATIONS)
