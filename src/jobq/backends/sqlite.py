"""SQLite backend: the embedded default (``sqlite:///path/to/jobs.db``).

* WAL journal, ``synchronous=FULL`` by default: a committed enqueue survives a power loss.
  ``?synchronous=normal`` is the documented opt-in that survives a process crash but may lose
  the last commits on a power loss.
* Every write runs in ``BEGIN IMMEDIATE`` (take the write lock first, so two writers never
  deadlock upgrading a read lock), with ``busy_timeout`` and a retry loop on top, so
  "database is locked" does not reach user code while the file is merely busy.
* One ``UPDATE … RETURNING`` claims a whole batch, walking the partial claim index once per queue.
* One connection per thread; many processes on one host may share the file.
* Times are integer microseconds since the epoch, from this host's clock (all processes that
  share a SQLite file share this host's clock).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

from jobq.backends import attempt_errors
from jobq.backends.base import (
    WORKER_LOST,
    WORKER_LOST_DEAD,
    JobFilter,
    Lease,
    NewJob,
    Outcome,
    OutcomeKind,
    WorkerInfo,
    log_not_recorded,
    not_found,
    not_retryable,
    retry_conflict,
)
from jobq.backends.sqlite_schema import MIGRATIONS, SCHEMA_VERSION
from jobq.clock import NO_DEADLINE_US, from_us, now_us, opt_from_us, td_us, to_us
from jobq.exceptions import (
    ConfigurationError,
    DatabaseOpenError,
    SchemaVersionError,
)
from jobq.job import JobRecord
from jobq.states import Action, JobState, sources, state_list_sql

log = logging.getLogger("jobq.sqlite")
T = TypeVar("T")

_COLUMNS = (
    "id, queue, task, args, kwargs, priority, deadline, run_at, attempt, max_attempts, timeout, "
    "unique_key, tags, state, worker_id, lease_token, leased_until, result, errors, created_at, "
    "started_at, finished_at"
)
_ORDER = "eff_priority DESC, deadline_key, run_at, id"
_BUSY_RETRY_SECONDS = 60.0


def _row_to_record(row: tuple[Any, ...]) -> JobRecord:
    (
        id_,
        queue,
        task,
        args,
        kwargs,
        priority,
        deadline,
        run_at,
        attempt,
        max_attempts,
        timeout,
        unique_key,
        tags,
        state,
        worker_id,
        lease_token,
        leased_until,
        result,
        errors,
        created_at,
        started_at,
        finished_at,
    ) = row
    return JobRecord(
        id=id_,
        queue=queue,
        task=task,
        args_json=args,
        kwargs_json=kwargs,
        priority=priority,
        deadline=opt_from_us(deadline),
        run_at=from_us(run_at),
        attempt=attempt,
        max_attempts=max_attempts,
        timeout=None if timeout is None else timedelta(microseconds=timeout),
        unique_key=unique_key,
        tags=tuple(json.loads(tags)) if tags != "[]" else (),
        state=JobState(state),
        worker_id=worker_id,
        lease_token=lease_token,
        leased_until=opt_from_us(leased_until),
        result_json=result,
        errors=attempt_errors.from_text(errors),
        created_at=from_us(created_at),
        started_at=opt_from_us(started_at),
        finished_at=opt_from_us(finished_at),
    )


def parse_sqlite_url(url: str) -> tuple[str, dict[str, str]]:
    """``sqlite:///rel.db`` → ``rel.db``; ``sqlite:////abs/x.db`` → ``/abs/x.db``."""
    parts = urlsplit(url)
    if parts.scheme != "sqlite" or parts.netloc not in ("", "localhost"):
        raise ConfigurationError(
            f"{url!r} is not a SQLite URL; write sqlite:///relative/path.db or "
            "sqlite:////absolute/path.db"
        )
    path = unquote(parts.path[1:] if parts.path.startswith("/") else parts.path)
    if not path or path == ":memory:" or path.startswith("file:"):
        raise ConfigurationError(
            f"{url!r} names no database file; give a file path (sqlite:///jobs.db), or use "
            "'memory://' for an in-process queue"
        )
    options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    unknown = set(options) - {"synchronous", "busy_timeout"}
    if unknown:
        raise ConfigurationError(
            f"unknown SQLite URL option(s) {sorted(unknown)} in {url!r}; "
            "known: synchronous=full|normal, busy_timeout=<ms>"
        )
    return path, options


class SQLiteBackend:
    """A job store in one SQLite file, shared safely by threads and processes on one host."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.path, options = parse_sqlite_url(url)
        sync = options.get("synchronous", "full").lower()
        if sync not in ("full", "normal"):
            raise ConfigurationError(
                f"synchronous={sync!r} in {url!r}: use 'full' (durable, the default) or 'normal' "
                "(survives a crash of the process, not a power loss)"
            )
        self.synchronous = sync.upper()
        try:
            self.busy_timeout_ms = int(options.get("busy_timeout", "30000"))
        except ValueError:
            raise ConfigurationError(
                f"busy_timeout in {url!r} must be milliseconds, e.g. busy_timeout=30000"
            ) from None
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        self._open_and_probe()

    # -- connections -------------------------------------------------------------------------

    def _open_and_probe(self) -> None:
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(directory):
            raise DatabaseOpenError(
                f"cannot open SQLite database {self.path!r}: directory {directory!r} does not "
                "exist; create it or fix the URL"
            )
        try:
            conn = self._conn()
            mode = self._enable_wal(conn)
            if mode.lower() != "wal":
                raise DatabaseOpenError(
                    f"SQLite database {self.path!r} cannot use WAL journaling (got {mode!r}); "
                    "jobq needs WAL for safe concurrent workers: put the file on a local disk, "
                    "not a network or read-only filesystem"
                )
            self._migrate(conn)
            # A real write, so a read-only file or directory fails here and not at first enqueue.
            with self._write() as c:
                c.execute(
                    "INSERT INTO jobq_meta (key, value) VALUES ('opened_at', ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (str(now_us()),),
                )
        except sqlite3.Error as exc:
            self.close()
            raise DatabaseOpenError(
                f"cannot open SQLite database {self.path!r} for writing: {exc}; check that the "
                "file and its directory exist and are readable and writable by this user, "
                "and that the filesystem supports locking (a local disk, not NFS)"
            ) from exc
        except Exception:
            self.close()
            raise

    def _enable_wal(self, conn: sqlite3.Connection) -> str:
        """Switch to WAL; returns the journal mode SQLite actually set."""
        return str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0])

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            if self._closed:
                raise DatabaseOpenError(f"the SQLite backend for {self.path!r} is closed")
            conn = sqlite3.connect(
                self.path,
                isolation_level=None,
                check_same_thread=False,
                timeout=self.busy_timeout_ms / 1000,
            )
            conn.execute(f"PRAGMA busy_timeout = {self.busy_timeout_ms}")
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            conn.execute("PRAGMA foreign_keys = ON")
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taking the write lock up front (``BEGIN IMMEDIATE``)."""
        conn = self._conn()
        self._busy_retry(lambda: conn.execute("BEGIN IMMEDIATE"))
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        else:
            self._busy_retry(lambda: conn.execute("COMMIT"))

    def _busy_retry(self, fn: Callable[[], T]) -> T:
        """Run ``fn``, retrying while SQLite reports the database busy or locked."""
        give_up = time.monotonic() + _BUSY_RETRY_SECONDS
        delay = 0.001
        while True:
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                msg = str(exc)
                if "locked" not in msg and "busy" not in msg:
                    raise
                if time.monotonic() > give_up:
                    raise DatabaseOpenError(
                        f"SQLite database {self.path!r} stayed locked for "
                        f"{_BUSY_RETRY_SECONDS:.0f}s: another process holds a long write "
                        "transaction; find and stop it"
                    ) from exc
                time.sleep(delay)
                delay = min(delay * 2, 0.05)

    def _read(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[Any]:
        conn = self._conn()
        return self._busy_retry(lambda: conn.execute(sql, params).fetchall())

    def _migrate(self, conn: sqlite3.Connection) -> None:
        with self._write() as c:
            version = c.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise SchemaVersionError(
                    f"SQLite database {self.path!r} has schema version {version}, newer than "
                    f"this jobq understands ({SCHEMA_VERSION}); upgrade jobq"
                )
            for number in range(version, SCHEMA_VERSION):
                for statement in MIGRATIONS[number]:
                    c.execute(statement)
                c.execute(f"PRAGMA user_version = {number + 1}")
                log.info("migrated %s to schema version %d", self.path, number + 1)

    def schema_version(self) -> int:
        return int(self._read("PRAGMA user_version")[0][0])

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conns, self._all = self._all, []
        for conn in conns:
            with contextlib.suppress(sqlite3.Error):  # closing is best effort
                conn.close()
        self._local = threading.local()

    # -- enqueue -----------------------------------------------------------------------------

    def enqueue_many(
        self, jobs: Sequence[NewJob], *, now: datetime | None = None, connection: Any = None
    ) -> list[JobRecord]:
        if connection is not None:
            raise ConfigurationError(
                f"transactional enqueue (connection=...) needs PostgreSQL; {self.url} cannot "
                "join another connection's transaction"
            )
        if not jobs:
            return []
        now_ = _now(now)
        records: list[JobRecord | None] = [None] * len(jobs)
        plain: list[tuple[Any, ...]] = []
        with self._write() as c:
            row = c.execute("SELECT seq FROM sqlite_sequence WHERE name = 'jobq_jobs'").fetchone()
            next_id = (row[0] if row else 0) + 1
            for i, nj in enumerate(jobs):
                params = _insert_params(next_id, nj, now_)
                next_id += 1
                if nj.unique_key is None:
                    plain.append(params)
                    records[i] = _new_record(params, nj)
                    continue
                cur = c.execute(_INSERT + " ON CONFLICT DO NOTHING", params)
                if cur.rowcount == 1:
                    records[i] = _new_record(params, nj)
                else:
                    existing = c.execute(
                        f"SELECT {_COLUMNS} FROM jobq_jobs WHERE unique_key = ? AND state IN "
                        f"({state_list_sql(_ACTIVE)})",
                        (nj.unique_key,),
                    ).fetchone()
                    records[i] = _row_to_record(existing)
            if plain:
                c.executemany(_INSERT, plain)
        return [r for r in records if r is not None]

    # -- worker path -------------------------------------------------------------------------

    def claim(
        self,
        queues: Sequence[str],
        limit: int,
        *,
        worker_id: str,
        lease: timedelta,
        queue_order: bool = False,
        now: datetime | None = None,
    ) -> list[JobRecord]:
        return self.record_and_claim(
            (), queues, limit, worker_id=worker_id, lease=lease, queue_order=queue_order, now=now
        )[1]

    def record_and_claim(
        self,
        outcomes: Sequence[Outcome],
        queues: Sequence[str],
        limit: int,
        *,
        worker_id: str,
        lease: timedelta,
        queue_order: bool = False,
        now: datetime | None = None,
    ) -> tuple[set[int], list[JobRecord]]:
        now_ = _now(now)
        if limit <= 0 or not queues:
            return (self.record_outcomes(outcomes, now=now) if outcomes else set()), []
        with self._write() as c:
            done = self._record_in(c, outcomes, now_)
            rows = c.execute(
                _claim_sql(len(queues), queue_order),
                {
                    "limit": limit,
                    "now": now_,
                    "until": now_ + td_us(lease),
                    "worker": worker_id,
                    **{f"q{rank}": q for rank, q in enumerate(queues)},
                },
            ).fetchall()
        rank_of = {q: i for i, q in enumerate(queues)}
        if queue_order:
            rows.sort(key=lambda r: (rank_of[r[1]], -r[22], r[23], r[7], r[0]))
        else:
            rows.sort(key=lambda r: (-r[22], r[23], r[7], r[0]))
        return done, [_row_to_record(r[:22]) for r in rows]

    def heartbeat(
        self, leases: Sequence[Lease], *, lease: timedelta, now: datetime | None = None
    ) -> set[int]:
        if not leases:
            return set()
        now_ = _now(now)
        with self._write() as c:
            rows = c.execute(
                "UPDATE jobq_jobs SET leased_until = :until "
                "WHERE state = 'running' AND (id, lease_token) IN "
                "(SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') "
                " FROM json_each(:leases)) RETURNING id",
                {"until": now_ + td_us(lease), "leases": _leases_json(leases)},
            ).fetchall()
        return {r[0] for r in rows}

    def record_outcomes(
        self, outcomes: Sequence[Outcome], *, now: datetime | None = None
    ) -> set[int]:
        if not outcomes:
            return set()
        with self._write() as c:
            return self._record_in(c, outcomes, _now(now))

    def _record_in(self, c: sqlite3.Connection, outcomes: Sequence[Outcome], now_: int) -> set[int]:
        done: set[int] = set()
        for o in outcomes:
            run_at = to_us(o.run_at) if o.run_at else now_ + td_us(o.delay or timedelta(0))
            row = c.execute(
                _OUTCOME_SQL[o.kind],
                {
                    "id": o.lease.job_id,
                    "token": o.lease.token,
                    "now": now_,
                    "result": o.result_json,
                    "run_at": run_at,
                    "error": attempt_errors.to_json(o.error) if o.error else None,
                },
            ).fetchone()
            if row is not None:
                done.add(row[0])
            else:
                log_not_recorded(o)
        return done

    def release(self, leases: Sequence[Lease], *, now: datetime | None = None) -> set[int]:
        if not leases:
            return set()
        with self._write() as c:
            rows = c.execute(
                "UPDATE jobq_jobs SET state = 'available', attempt = max(attempt - 1, 0), "
                "worker_id = NULL, leased_until = NULL, started_at = NULL "
                "WHERE state = 'running' AND (id, lease_token) IN "
                "(SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') "
                " FROM json_each(:leases)) RETURNING id",
                {"leases": _leases_json(leases)},
            ).fetchall()
        return {r[0] for r in rows}

    # -- operator actions --------------------------------------------------------------------

    def cancel(self, job_id: int, *, now: datetime | None = None) -> tuple[bool, JobRecord]:
        now_ = _now(now)
        with self._write() as c:
            row = c.execute(
                "UPDATE jobq_jobs SET state = 'cancelled', finished_at = :now, "
                "leased_until = NULL, errors = json_insert(errors, '$[#]', json(:error)) "
                f"WHERE id = :id AND state IN ({state_list_sql(sources(Action.CANCEL))}) "
                f"RETURNING {_COLUMNS}",
                {
                    "id": job_id,
                    "now": now_,
                    "error": json.dumps(
                        {
                            "attempt": 0,
                            "at": now_,
                            "type": "Cancelled",
                            "message": "cancelled through the API",
                            "traceback": None,
                        }
                    ),
                },
            ).fetchone()
            if row is not None:
                return True, _row_to_record(row)
            current = c.execute(
                f"SELECT {_COLUMNS} FROM jobq_jobs WHERE id = ?", (job_id,)
            ).fetchone()
        if current is None:
            raise not_found(job_id)
        return False, _row_to_record(current)

    def retry(self, job_id: int, *, now: datetime | None = None) -> JobRecord:
        now_ = _now(now)
        with self._write() as c:
            try:
                row = c.execute(
                    "UPDATE jobq_jobs SET state = 'available', run_at = :now, "
                    "eff_priority = priority, max_attempts = max(max_attempts, attempt + 1), "
                    "finished_at = NULL, result = NULL, worker_id = NULL, leased_until = NULL "
                    f"WHERE id = :id AND state IN "
                    f"({state_list_sql(sources(Action.MANUAL_RETRY))}) RETURNING {_COLUMNS}",
                    {"id": job_id, "now": now_},
                ).fetchone()
            except sqlite3.IntegrityError:
                raise retry_conflict(job_id) from None
            if row is not None:
                return _row_to_record(row)
            current = c.execute("SELECT state FROM jobq_jobs WHERE id = ?", (job_id,)).fetchone()
        if current is None:
            raise not_found(job_id)
        raise not_retryable(job_id, current[0])

    # -- maintenance -------------------------------------------------------------------------

    def promote_due(self, *, now: datetime | None = None) -> int:
        with self._write() as c:
            return c.execute(
                "UPDATE jobq_jobs SET state = 'available', eff_priority = priority "
                "WHERE state = 'scheduled' AND run_at <= ?",
                (_now(now),),
            ).rowcount

    def rescue_expired(self, *, now: datetime | None = None) -> int:
        now_ = _now(now)
        with self._write() as c:
            return c.execute(
                "UPDATE jobq_jobs SET "
                "state = CASE WHEN attempt >= max_attempts THEN 'dead' ELSE 'available' END, "
                "finished_at = CASE WHEN attempt >= max_attempts THEN :now END, "
                "leased_until = NULL, eff_priority = priority, "
                "errors = json_insert(errors, '$[#]', json_object('attempt', attempt, 'at', :now,"
                " 'type', 'WorkerLost', 'message', CASE WHEN attempt >= max_attempts "
                "THEN replace(:dead, '{times}', 1 + (SELECT count(*) FROM json_each(errors) "
                "WHERE json_extract(value, '$.type') = 'WorkerLost')) "
                "ELSE replace(:lost, '{worker}', coalesce(worker_id, '?')) END, "
                "'traceback', NULL)) "
                "WHERE state = 'running' AND leased_until < :now",
                {"now": now_, "lost": WORKER_LOST, "dead": WORKER_LOST_DEAD},
            ).rowcount

    def age(self, *, every: timedelta, max_boost: int, now: datetime | None = None) -> int:
        every_us = td_us(every)
        if every_us <= 0 or max_boost <= 0:
            return 0
        with self._write() as c:
            return c.execute(
                "UPDATE jobq_jobs SET eff_priority = "
                "priority + min(:max_boost, (:now - run_at) / :every) "
                "WHERE state = 'available' AND run_at <= :now - :every "
                "AND eff_priority < priority + min(:max_boost, (:now - run_at) / :every)",
                {"now": _now(now), "every": every_us, "max_boost": max_boost},
            ).rowcount

    def prune(
        self,
        *,
        older_than: timedelta,
        states: frozenset[JobState],
        now: datetime | None = None,
        limit: int = 10_000,
    ) -> int:
        finished = states & frozenset(
            {JobState.COMPLETED, JobState.DEAD, JobState.CANCELLED, JobState.EXPIRED}
        )
        if not finished:
            return 0
        with self._write() as c:
            return c.execute(
                f"DELETE FROM jobq_jobs WHERE id IN (SELECT id FROM jobq_jobs WHERE state IN "
                f"({state_list_sql(finished)}) AND finished_at < ? LIMIT ?)",
                (_now(now) - td_us(older_than), limit),
            ).rowcount

    def next_due(self) -> datetime | None:
        row = self._read("SELECT min(run_at) FROM jobq_jobs WHERE state = 'scheduled'")
        return opt_from_us(row[0][0])

    # -- reading -----------------------------------------------------------------------------

    def get(self, job_id: int) -> JobRecord | None:
        rows = self._read(f"SELECT {_COLUMNS} FROM jobq_jobs WHERE id = ?", (job_id,))
        return _row_to_record(rows[0]) if rows else None

    def list_jobs(
        self, filter: JobFilter, *, limit: int = 50, before_id: int | None = None
    ) -> list[JobRecord]:
        where: list[str] = []
        params: list[object] = []
        for column, value in (
            ("queue", filter.queue),
            ("task", filter.task),
            ("state", filter.state.value if filter.state else None),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if before_id is not None:
            where.append("id < ?")
            params.append(before_id)
        sql = f"SELECT {_COLUMNS} FROM jobq_jobs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(max(0, limit))
        return [_row_to_record(r) for r in self._read(sql, params)]

    def stats(self) -> dict[str, dict[JobState, int]]:
        out: dict[str, dict[JobState, int]] = {}
        for queue, state, count in self._read(
            "SELECT queue, state, count(*) FROM jobq_jobs GROUP BY queue, state"
        ):
            out.setdefault(queue, {})[JobState(state)] = count
        return out

    def register_worker(self, info: WorkerInfo) -> None:
        now_ = now_us()
        with self._write() as c:
            c.execute(
                "INSERT INTO jobq_workers (id, host, pid, queues, threads, started_at, "
                "heartbeat_at, jobs_run) VALUES (?, ?, ?, ?, ?, ?, ?, 0) ON CONFLICT (id) DO "
                "UPDATE SET heartbeat_at = excluded.heartbeat_at",
                (info.id, info.host, info.pid, json.dumps(info.queues), info.threads, now_, now_),
            )

    def worker_heartbeat(self, worker_id: str, jobs_run: int) -> None:
        with self._write() as c:
            c.execute(
                "UPDATE jobq_workers SET heartbeat_at = ?, jobs_run = ? WHERE id = ?",
                (now_us(), jobs_run, worker_id),
            )

    def unregister_worker(self, worker_id: str) -> None:
        with self._write() as c:
            c.execute("DELETE FROM jobq_workers WHERE id = ?", (worker_id,))

    def list_workers(self) -> list[WorkerInfo]:
        return [
            WorkerInfo(
                id=r[0],
                host=r[1],
                pid=r[2],
                queues=tuple(json.loads(r[3])),
                threads=r[4],
                started_at=from_us(r[5]),
                heartbeat_at=from_us(r[6]),
                jobs_run=r[7],
            )
            for r in self._read(
                "SELECT id, host, pid, queues, threads, started_at, heartbeat_at, jobs_run "
                "FROM jobq_workers ORDER BY started_at DESC"
            )
        ]

    def prune_workers(self, *, older_than: timedelta, now: datetime | None = None) -> int:
        with self._write() as c:
            return c.execute(
                "DELETE FROM jobq_workers WHERE heartbeat_at < ?",
                (_now(now) - td_us(older_than),),
            ).rowcount

    def now(self) -> datetime:
        return from_us(now_us())

    def try_lead(self) -> bool:
        return True  # maintenance statements are idempotent under BEGIN IMMEDIATE

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        # Other processes' commits show in change_token (PRAGMA data_version), which idle
        # workers poll; SQLite has no push notification to offer.
        return lambda: None

    def change_token(self) -> int:
        return int(self._read("PRAGMA data_version")[0][0])


_ACTIVE = frozenset({JobState.SCHEDULED, JobState.BLOCKED, JobState.AVAILABLE, JobState.RUNNING})

_INSERT = (
    "INSERT INTO jobq_jobs (id, queue, task, args, kwargs, priority, eff_priority, deadline, "
    "deadline_key, run_at, max_attempts, timeout, unique_key, tags, state, created_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _insert_params(job_id: int, nj: NewJob, now: int) -> tuple[Any, ...]:
    if nj.run_at is not None:
        run_at = to_us(nj.run_at)
    else:
        run_at = now + (td_us(nj.delay) if nj.delay else 0)
    state = JobState.SCHEDULED if run_at > now else JobState.AVAILABLE
    deadline = to_us(nj.deadline) if nj.deadline else None
    return (
        job_id,
        nj.queue,
        nj.task,
        nj.args_json,
        nj.kwargs_json,
        nj.priority,
        nj.priority,
        deadline,
        NO_DEADLINE_US if deadline is None else deadline,
        run_at,
        nj.max_attempts,
        None if nj.timeout is None else td_us(nj.timeout),
        nj.unique_key,
        json.dumps(nj.tags),
        state.value,
        now,
    )


def _new_record(p: tuple[Any, ...], nj: NewJob) -> JobRecord:
    return JobRecord(
        id=p[0],
        queue=nj.queue,
        task=nj.task,
        args_json=nj.args_json,
        kwargs_json=nj.kwargs_json,
        priority=nj.priority,
        deadline=opt_from_us(p[7]),
        run_at=from_us(p[9]),
        attempt=0,
        max_attempts=nj.max_attempts,
        timeout=nj.timeout,
        unique_key=nj.unique_key,
        tags=nj.tags,
        state=JobState(p[14]),
        worker_id=None,
        lease_token=None,
        leased_until=None,
        result_json=None,
        errors=(),
        created_at=from_us(p[15]),
        started_at=None,
        finished_at=None,
    )


@functools.lru_cache(maxsize=64)
def _claim_sql(n_queues: int, queue_order: bool) -> str:
    """One UPDATE that leases the best ``:limit`` available jobs of queues ``:q0..:qN``.

    Each queue's candidates come from its own walk of the partial claim index (so the cost is
    O(log n) per queue, whatever the backlog), then the union is ordered once more.
    """
    parts = [
        f"SELECT * FROM (SELECT id, {rank} AS qrank, eff_priority, deadline_key, run_at "
        f"FROM jobq_jobs WHERE state = 'available' AND queue = :q{rank} "
        f"ORDER BY {_ORDER} LIMIT :limit)"
        for rank in range(n_queues)
    ]
    order = ("qrank, " if queue_order else "") + _ORDER
    return (
        "UPDATE jobq_jobs SET state = 'running', attempt = attempt + 1, worker_id = :worker, "
        "lease_token = lower(hex(randomblob(8))), leased_until = :until, started_at = :now "
        f"WHERE id IN (SELECT id FROM ({' UNION ALL '.join(parts)}) ORDER BY {order} "
        f"LIMIT :limit) RETURNING {_COLUMNS}, eff_priority, deadline_key"
    )


def _fenced(set_clause: str) -> str:
    return (
        f"UPDATE jobq_jobs SET {set_clause} WHERE id = :id AND lease_token = :token "
        "AND state = 'running' RETURNING id"
    )


_APPEND_ERROR = (
    "errors = CASE WHEN :error IS NULL THEN errors ELSE json_insert(errors, '$[#]', "
    "json(:error)) END"
)
_OUTCOME_SQL = {
    OutcomeKind.COMPLETED: _fenced(
        "state = 'completed', result = :result, finished_at = :now, leased_until = NULL"
    ),
    OutcomeKind.RETRY: _fenced(
        "state = CASE WHEN :run_at > :now THEN 'scheduled' ELSE 'available' END, "
        f"run_at = :run_at, eff_priority = priority, leased_until = NULL, {_APPEND_ERROR}"
    ),
    OutcomeKind.SNOOZED: _fenced(
        "state = CASE WHEN :run_at > :now THEN 'scheduled' ELSE 'available' END, "
        "run_at = :run_at, eff_priority = priority, leased_until = NULL, "
        "max_attempts = max_attempts + 1"
    ),
    OutcomeKind.DEAD: _fenced(
        f"state = 'dead', finished_at = :now, leased_until = NULL, {_APPEND_ERROR}"
    ),
    OutcomeKind.CANCELLED: _fenced(
        f"state = 'cancelled', finished_at = :now, leased_until = NULL, {_APPEND_ERROR}"
    ),
    OutcomeKind.EXPIRED: _fenced(
        f"state = 'expired', finished_at = :now, leased_until = NULL, {_APPEND_ERROR}"
    ),
}


def _leases_json(leases: Sequence[Lease]) -> str:
    return json.dumps([[lease.job_id, lease.token] for lease in leases])


def _now(now: datetime | None) -> int:
    return now_us() if now is None else to_us(now)
