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

MIGRATIONS.append(
    # 3: flow control. New job columns (limits, dependencies, progress, secrets); the claim index
    # now holds only unlimited jobs, so limited jobs (a concurrency or rate key) never sit in the
    # regular claim's path and get an index of their own; plus the tables of dependency edges,
    # queue settings, rate-limit starts, periodic ticks and distributed locks.
    [
        "ALTER TABLE jobq_jobs ADD COLUMN concurrency_key TEXT",
        "ALTER TABLE jobq_jobs ADD COLUMN concurrency_limit INTEGER",
        "ALTER TABLE jobq_jobs ADD COLUMN rate_key TEXT",
        "ALTER TABLE jobq_jobs ADD COLUMN rate_limit INTEGER",
        "ALTER TABLE jobq_jobs ADD COLUMN rate_period INTEGER",  # microseconds
        # 1 when concurrency_key or rate_key is set: claimed through jobq_jobs_claim_limited
        "ALTER TABLE jobq_jobs ADD COLUMN limited INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE jobq_jobs ADD COLUMN depends_on TEXT NOT NULL DEFAULT '[]'",  # JSON ids
        # dependencies not resolved yet (the job is blocked while this is above zero)
        "ALTER TABLE jobq_jobs ADD COLUMN deps_pending INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE jobq_jobs ADD COLUMN allow_failed INTEGER NOT NULL DEFAULT 0",
        # 1 once a job has had dependents: only then does finishing it look for them
        "ALTER TABLE jobq_jobs ADD COLUMN has_dependents INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE jobq_jobs ADD COLUMN progress REAL",
        "ALTER TABLE jobq_jobs ADD COLUMN progress_message TEXT",
        "ALTER TABLE jobq_jobs ADD COLUMN secret TEXT NOT NULL DEFAULT '[]'",  # JSON names
        "DROP INDEX jobq_jobs_claim",
        """
        CREATE INDEX jobq_jobs_claim ON jobq_jobs
            (queue, eff_priority DESC, deadline_key, run_at, id)
            WHERE state = 'available' AND limited = 0
        """,
        """
        CREATE INDEX jobq_jobs_claim_limited ON jobq_jobs
            (queue, eff_priority DESC, deadline_key, run_at, id)
            WHERE state = 'available' AND limited = 1
        """,
        """
        CREATE INDEX jobq_jobs_running_key ON jobq_jobs (concurrency_key)
            WHERE state = 'running' AND concurrency_key IS NOT NULL
        """,
        # waiting jobs that are not available (max_depth counts these with the claim indexes)
        """
        CREATE INDEX jobq_jobs_waiting ON jobq_jobs (queue)
            WHERE state IN ('scheduled', 'blocked')
        """,
        # unique_window: same-key jobs in any state, newest first
        """
        CREATE INDEX jobq_jobs_unique_recent ON jobq_jobs (unique_key, created_at)
            WHERE unique_key IS NOT NULL
        """,
        # one row per unresolved dependency of a blocked job, found by the dependency
        """
        CREATE TABLE jobq_deps (
            dep_id INTEGER NOT NULL,
            job_id INTEGER NOT NULL,
            PRIMARY KEY (dep_id, job_id)
        ) WITHOUT ROWID
        """,
        """
        CREATE TABLE jobq_queues (
            queue TEXT PRIMARY KEY,
            paused INTEGER NOT NULL DEFAULT 0,
            max_depth INTEGER
        )
        """,
        # one row per start of a rate-limited job, kept until its window has passed
        """
        CREATE TABLE jobq_rate_starts (
            rate_key TEXT NOT NULL,
            started_at INTEGER NOT NULL,
            until INTEGER NOT NULL                   -- started_at + the job's rate_period
        )
        """,
        "CREATE INDEX jobq_rate_starts_key ON jobq_rate_starts (rate_key, until)",
        "CREATE INDEX jobq_rate_starts_until ON jobq_rate_starts (until)",
        """
        CREATE TABLE jobq_cron (
            name TEXT PRIMARY KEY,
            last_tick INTEGER NOT NULL
        )
        """,
        # token only ever grows; owner/expires_at are NULL while the lock is free
        """
        CREATE TABLE jobq_locks (
            name TEXT PRIMARY KEY,
            owner TEXT,
            token INTEGER NOT NULL,
            expires_at INTEGER
        )
        """,
    ]
)

MIGRATIONS.append(
    # 4: how many times each job was rescued from a lost worker. A claim may take at most a
    # given number of such jobs (a worker holds one at a time, so a job that kills its worker
    # cannot take the same batch-mates down with it on every attempt); they have an index of
    # their own so that looking for one costs an index probe, not a walk of the backlog.
    [
        "ALTER TABLE jobq_jobs ADD COLUMN lost INTEGER NOT NULL DEFAULT 0",
        """
        CREATE INDEX jobq_jobs_claim_lost ON jobq_jobs
            (queue, eff_priority DESC, deadline_key, run_at, id)
            WHERE state = 'available' AND limited = 0 AND lost > 0
        """,
    ]
)

SCHEMA_VERSION = len(MIGRATIONS)
