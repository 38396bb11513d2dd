"""SQLite backend: the embedded default (``sqlite:///path/to/jobs.db``).

* WAL journal, ``synchronous=FULL`` by default: a committed enqueue survives a power loss.
  ``?synchronous=normal`` is the documented opt-in that survives a process crash but may lose
  the last commits on a power loss.
* Every write runs in ``BEGIN IMMEDIATE`` (take the write lock first, so two writers never
  deadlock upgrading a read lock), with ``busy_timeout`` and a retry loop on top, so
  "database is locked" does not reach user code while the file is merely busy.
* One ``UPDATE … RETURNING`` claims a whole batch, walking the partial claim index once per queue
  (plus one for the limited jobs it takes, when there are any).
* One connection per thread; many processes on one host may share the file.
* Times are integer microseconds since the epoch, from this host's clock (all processes that
  share a SQLite file share this host's clock).

Flow control rides on the same write lock, so every check below is race-free between processes:

* Unique keys: the partial unique index over the active states is the source of truth; a
  ``unique_window`` also looks up same-key jobs of any state through their own index.
* Dependencies: one ``jobq_deps`` row per unresolved (dependency, dependent) pair and a pending
  count on the dependent. A job that ever had dependents carries ``has_dependents``, so finishing
  any other job costs nothing extra; finishing one that has them resolves them (unblock, or
  cancel down the chain) in the same transaction, on every terminal path.
* Limited jobs (a concurrency or rate key) live outside the regular claim index, in an index of
  their own: a claim first takes the limited jobs :func:`jobq.backends.base.select_limited`
  allows, counting running jobs per key and starts per rate key (``jobq_rate_starts``) inside
  its ``BEGIN IMMEDIATE``, then fills the remaining slots from the regular claim index. A start
  counts for the ``rate_period`` of the job that made it (jobs sharing a rate key are expected to
  share its limit and period).
* Paused queues and waiting limited jobs are seen by one indexed probe per claim, read in the
  claim's own transaction: a pause takes effect on every process's next claim.
* ``max_depth`` is counted inside the enqueue's transaction, so it is exact on SQLite (writers
  are serialised); counting walks the queue's waiting jobs, so it costs O(depth) per enqueue
  into a queue that has a limit, and nothing otherwise.
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
    QueueSettings,
    WorkerInfo,
    bad_batch_dependency,
    dependency_failed,
    log_not_recorded,
    not_found,
    not_replaceable,
    not_retryable,
    queue_full,
    retry_conflict,
    select_limited,
    unique_held,
    unknown_dependency,
)
from jobq.backends.sqlite_schema import MIGRATIONS, SCHEMA_VERSION
from jobq.clock import NO_DEADLINE_US, from_us, now_us, opt_from_us, td_us, to_us
from jobq.exceptions import (
    ConfigurationError,
    DatabaseOpenError,
    InvalidTransition,
    SchemaVersionError,
)
from jobq.job import JobRecord
from jobq.states import (
    ACTIVE_STATES,
    TERMINAL_STATES,
    Action,
    JobState,
    sources,
    state_list_sql,
    state_of,
)

log = logging.getLogger("jobq.sqlite")
T = TypeVar("T")

#: A job's errors as SQL, read as none when the stored text is not JSON (a row written around
#: jobq must not fail a whole claim, outcome or rescue statement when an error is appended).
_ERRORS = "iif(json_valid(errors), errors, '[]')"

_COLUMNS = (
    "id, queue, task, args, kwargs, priority, deadline, run_at, attempt, max_attempts, timeout, "
    "unique_key, tags, state, worker_id, lease_token, leased_until, result, errors, created_at, "
    "started_at, finished_at, concurrency_key, rate_key, depends_on, allow_failed, progress, "
    "progress_message, secret, lost"
)
#: How many columns ``_COLUMNS`` selects (claim rows carry their sort keys after them).
_NCOL = 30
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
        concurrency_key,
        rate_key,
        depends_on,
        allow_failed,
        progress,
        progress_message,
        secret,
        lost,
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
        tags=_tags(tags),
        state=state_of(state),
        worker_id=worker_id,
        lease_token=lease_token,
        leased_until=opt_from_us(leased_until),
        result_json=result,
        errors=attempt_errors.from_text(errors),
        created_at=from_us(created_at),
        started_at=opt_from_us(started_at),
        finished_at=opt_from_us(finished_at),
        concurrency_key=concurrency_key,
        rate_key=rate_key,
        depends_on=tuple(json.loads(depends_on)) if depends_on != "[]" else (),
        allow_failed=bool(allow_failed),
        progress=progress,
        progress_message=progress_message,
        secret=tuple(json.loads(secret)) if secret != "[]" else (),
        lost=lost,
    )


def _tags(text: str) -> tuple[str, ...]:
    """Stored tags; tags that are not a JSON list of strings read as none (a row written
    around jobq must not crash the worker that claims it)."""
    if text == "[]":
        return ()
    try:
        value = json.loads(text)
    except (ValueError, TypeError):
        return ()
    return tuple(t for t in value if isinstance(t, str)) if isinstance(value, list) else ()


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
            conn.create_function("jobq_contains", 2, _contains, deterministic=True)
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
        with self._write() as c:
            return self._enqueue_in(c, jobs, now_)

    def _enqueue_in(
        self, c: sqlite3.Connection, jobs: Sequence[NewJob], now_: int
    ) -> list[JobRecord]:
        """Store ``jobs`` in the open write transaction ``c``; raising rolls the whole call back."""
        row = c.execute("SELECT seq FROM sqlite_sequence WHERE name = 'jobq_jobs'").fetchone()
        next_id = (row[0] if row else 0) + 1
        records: list[JobRecord] = []
        plain: list[tuple[Any, ...]] = []
        added: dict[str, int] = {}
        times: dict[int, datetime] = {}
        for position, nj in enumerate(jobs):
            if nj.unique_key is None and not nj.depends_on and not nj.depends_on_batch:
                params = _insert_params(next_id, nj, now_)
                next_id += 1
                plain.append(params)
                records.append(_new_record(params, nj, times))
                added[nj.queue] = added.get(nj.queue, 0) + 1
                continue
            # Jobs that look at stored rows (unique keys, dependencies) see every earlier job of
            # the call: write the plain ones first.
            if plain:
                c.executemany(_INSERT, plain)
                plain = []
            if nj.unique_key is not None:
                holder = _unique_holder(c, nj, now_)
                if holder is not None:
                    records.append(_on_conflict(c, nj, holder, now_))
                    continue
            deps = _dependencies(c, nj, position, records)
            record = _insert_with_dependencies(c, next_id, nj, deps, now_)
            next_id += 1
            records.append(record)
            added[nj.queue] = added.get(nj.queue, 0) + 1
        if plain:
            c.executemany(_INSERT, plain)
        self._check_depth(c, added)
        return records

    def _check_depth(self, c: sqlite3.Connection, added: dict[str, int]) -> None:
        """QueueFull (and so a rollback) if the call took a queue past its ``max_depth``."""
        limits = dict(
            c.execute("SELECT queue, max_depth FROM jobq_queues WHERE max_depth IS NOT NULL")
        )
        for queue in added:
            max_depth = limits.get(queue)
            if max_depth is not None and _waiting(c, queue) > max_depth:
                raise queue_full(queue, max_depth)

    def enqueue_tick(
        self, name: str, tick: datetime, job: NewJob, *, now: datetime | None = None
    ) -> JobRecord | None:
        tick_us = to_us(tick)
        now_ = _now(now)
        with self._write() as c:
            row = c.execute("SELECT last_tick FROM jobq_cron WHERE name = ?", (name,)).fetchone()
            if row is not None and row[0] >= tick_us:
                return None
            c.execute(
                "INSERT INTO jobq_cron (name, last_tick) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET last_tick = excluded.last_tick",
                (name, tick_us),
            )
            return self._enqueue_in(c, [job], now_)[0]

    def cron_ticks(self) -> dict[str, datetime]:
        return {
            name: from_us(tick)
            for name, tick in self._read("SELECT name, last_tick FROM jobq_cron ORDER BY name")
        }

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
        max_lost: int | None = None,
    ) -> list[JobRecord]:
        return self.record_and_claim(
            (),
            queues,
            limit,
            worker_id=worker_id,
            lease=lease,
            queue_order=queue_order,
            now=now,
            max_lost=max_lost,
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
        max_lost: int | None = None,
    ) -> tuple[set[int], list[JobRecord]]:
        now_ = _now(now)
        if limit <= 0 or not queues:
            return (self.record_outcomes(outcomes, now=now) if outcomes else set()), []
        with self._write() as c:
            done = self._record_in(c, outcomes, now_)
            names = {f"q{rank}": q for rank, q in enumerate(queues)}
            # One cheap statement says whether any served queue is paused and whether any
            # limited job is waiting; usually neither, and the claim is what it always was.
            paused_json, any_limited = c.execute(_probe_sql(len(queues)), names).fetchone()
            if paused_json != "[]":
                paused = set(json.loads(paused_json))
                queues = [q for q in queues if q not in paused]
                if not queues:
                    return done, []
                names = {f"q{rank}": q for rank, q in enumerate(queues)}
            params: dict[str, Any] = {
                "now": now_,
                "until": now_ + td_us(lease),
                "worker": worker_id,
                **names,
            }
            rows: list[Any] = []
            picked = (
                self._pick_limited(c, params, len(queues), queue_order, limit)
                if any_limited
                else []
            )
            if picked:
                rows = c.execute(
                    _CLAIM_SET + "WHERE id IN (SELECT value FROM json_each(:ids)) "
                    f"RETURNING {_COLUMNS}, eff_priority, deadline_key",
                    {**params, "ids": json.dumps(picked)},
                ).fetchall()
                c.execute(
                    "INSERT INTO jobq_rate_starts (rate_key, started_at, until) "
                    "SELECT rate_key, :now, :now + coalesce(rate_period, 0) FROM jobq_jobs "
                    "WHERE id IN (SELECT value FROM json_each(:ids)) AND rate_key IS NOT NULL",
                    {"now": now_, "ids": json.dumps(picked)},
                )
            if len(rows) < limit:
                lost = None if max_lost is None else max_lost > 0
                rows += c.execute(
                    _claim_sql(len(queues), queue_order, lost),
                    {**params, "limit": limit - len(rows), "max_lost": max_lost},
                ).fetchall()
        ep, dk = _NCOL, _NCOL + 1
        if queue_order:
            rank_of = {q: i for i, q in enumerate(queues)}
            rows.sort(key=lambda r: (rank_of[r[1]], -r[ep], r[dk], r[7], r[0]))
        else:
            rows.sort(key=lambda r: (-r[ep], r[dk], r[7], r[0]))
        return done, [_row_to_record(r[:_NCOL]) for r in rows]

    def _pick_limited(
        self,
        c: sqlite3.Connection,
        params: dict[str, Any],
        n_queues: int,
        queue_order: bool,
        limit: int,
    ) -> list[int]:
        """The ids of the limited jobs this claim may take (through ``select_limited``).

        Candidates come in claim order from the limited claim index, a page at a time, leaving
        out jobs the counts known so far already rule out; the counts (running jobs per
        concurrency key, starts in the window per rate key) are read for the keys a page brings.
        Counts only grow during a claim, so this takes exactly what ``select_limited`` would
        over the whole ordered list of limited candidates.
        """
        running: dict[str, int] = {}
        started: dict[str, int] = {}
        chosen: list[int] = []
        swept = False
        sql = _limited_sql(n_queues, queue_order)
        while len(chosen) < limit:
            need = limit - len(chosen)
            page = c.execute(
                sql,
                {
                    **params,
                    "limit": need,
                    "chosen": json.dumps(chosen),
                    "running": json.dumps(running),
                    "started": json.dumps(started),
                },
            ).fetchall()
            if not page:
                break
            new_c = {r[1] for r in page if r[1] is not None and r[1] not in running}
            if new_c:
                running.update(dict.fromkeys(new_c, 0))
                running.update(
                    c.execute(
                        "SELECT concurrency_key, count(*) FROM jobq_jobs WHERE state = 'running' "
                        "AND concurrency_key IN (SELECT value FROM json_each(?)) "
                        "GROUP BY concurrency_key",
                        (json.dumps(sorted(new_c)),),
                    ).fetchall()
                )
            new_r = {r[3] for r in page if r[3] is not None and r[3] not in started}
            if new_r:
                if not swept:
                    c.execute("DELETE FROM jobq_rate_starts WHERE until <= ?", (params["now"],))
                    swept = True
                started.update(dict.fromkeys(new_r, 0))
                started.update(
                    c.execute(
                        "SELECT rate_key, count(*) FROM jobq_rate_starts "
                        "WHERE rate_key IN (SELECT value FROM json_each(?)) AND until > ? "
                        "GROUP BY rate_key",
                        (json.dumps(sorted(new_r)), params["now"]),
                    ).fetchall()
                )
            picks = select_limited([tuple(r[:5]) for r in page], running, started, need)
            keys = {r[0]: (r[1], r[3]) for r in page}
            for job_id in picks:
                ckey, rkey = keys[job_id]
                if ckey is not None:
                    running[ckey] += 1
                if rkey is not None:
                    started[rkey] += 1
            chosen += picks
            if len(page) < need or (not picks and not new_c and not new_r):
                break
        return chosen

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

    def held(self, leases: Sequence[Lease]) -> set[int]:
        if not leases:
            return set()
        rows = self._read(
            "SELECT id FROM jobq_jobs WHERE state = 'running' AND (id, lease_token) IN "
            "(SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') "
            " FROM json_each(?))",
            (_leases_json(leases),),
        )
        return {r[0] for r in rows}

    def set_progress(self, lease: Lease, fraction: float | None, message: str | None) -> bool:
        with self._write() as c:
            return (
                c.execute(
                    "UPDATE jobq_jobs SET progress = ?, progress_message = ? "
                    "WHERE id = ? AND lease_token = ? AND state = 'running'",
                    (fraction, message, lease.job_id, lease.token),
                ).rowcount
                == 1
            )

    def record_outcomes(
        self, outcomes: Sequence[Outcome], *, now: datetime | None = None
    ) -> set[int]:
        if not outcomes:
            return set()
        with self._write() as c:
            return self._record_in(c, outcomes, _now(now))

    def _record_in(self, c: sqlite3.Connection, outcomes: Sequence[Outcome], now_: int) -> set[int]:
        done: set[int] = set()
        finished: list[tuple[int, str]] = []
        completed = [o for o in outcomes if o.kind is OutcomeKind.COMPLETED]
        if len(completed) > 1:  # the common case, one statement for the whole batch
            rows = c.execute(
                _COMPLETE_MANY,
                {
                    "now": now_,
                    "outcomes": json.dumps(
                        [[o.lease.job_id, o.lease.token, o.result_json] for o in completed]
                    ),
                },
            ).fetchall()
            for job_id, has_dependents in rows:
                done.add(job_id)
                if has_dependents:
                    finished.append((job_id, OutcomeKind.COMPLETED.value))
            for o in completed:
                if o.lease.job_id not in done:
                    log_not_recorded(o)
            outcomes = [o for o in outcomes if o.kind is not OutcomeKind.COMPLETED]
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
                if row[1] and o.kind in _TERMINAL_OUTCOMES:
                    finished.append((row[0], o.kind.value))
            else:
                log_not_recorded(o)
        if finished:
            _resolve(c, finished, now_)
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
                _CANCEL_SET + "WHERE id = :id AND state IN "
                f"({state_list_sql(sources(Action.CANCEL))}) "
                f"RETURNING {_COLUMNS}, has_dependents",
                {"id": job_id, "now": now_, "error": _cancel_error(now_)},
            ).fetchone()
            if row is not None:
                if row[_NCOL]:
                    _resolve(c, [(job_id, JobState.CANCELLED.value)], now_)
                return True, _row_to_record(row[:_NCOL])
            current = c.execute(
                f"SELECT {_COLUMNS} FROM jobq_jobs WHERE id = ?", (job_id,)
            ).fetchone()
        if current is None:
            raise not_found(job_id)
        return False, _row_to_record(current)

    def cancel_many(self, filter: JobFilter, *, now: datetime | None = None) -> int:
        states = sources(Action.CANCEL)
        if filter.state is not None:
            states = states & {filter.state}
        if not states:
            return 0
        where, params = _filter_sql(filter, states)
        now_ = _now(now)
        with self._write() as c:
            rows = c.execute(
                _CANCEL_SET + f"WHERE {where} RETURNING id, has_dependents",
                {**params, "now": now_, "error": _cancel_error(now_)},
            ).fetchall()
            finished = [(r[0], JobState.CANCELLED.value) for r in rows if r[1]]
            if finished:
                _resolve(c, finished, now_)
        return len(rows)

    def retry(self, job_id: int, *, now: datetime | None = None) -> JobRecord:
        now_ = _now(now)
        with self._write() as c:
            try:
                row = c.execute(
                    _RETRY_SET + "WHERE id = :id AND state IN "
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

    def retry_many(self, filter: JobFilter, *, now: datetime | None = None) -> int:
        states = sources(Action.MANUAL_RETRY)
        if filter.state is not None:
            if filter.state not in states:
                raise InvalidTransition(
                    f"retry_many cannot retry {filter.state.value} jobs: only completed, dead, "
                    "cancelled or expired jobs can be retried (filter on one of those, or none)"
                )
            states = frozenset({filter.state})
        where, params = _filter_sql(filter, states)
        with self._write() as c:
            # OR IGNORE: a job whose unique_key another active job holds is skipped, not an
            # error (the unique index decides, as everywhere).
            return c.execute(
                "UPDATE OR IGNORE" + _RETRY_SET.removeprefix("UPDATE") + f"WHERE {where}",
                {**params, "now": _now(now)},
            ).rowcount

    def delete(self, job_id: int, *, now: datetime | None = None) -> bool:
        now_ = _now(now)
        with self._write() as c:
            row = c.execute(
                "SELECT state, has_dependents FROM jobq_jobs WHERE id = ?", (job_id,)
            ).fetchone()
            if row is None:
                return False
            if row[0] == JobState.RUNNING.value:
                raise InvalidTransition(
                    f"job {job_id} is running and cannot be deleted; cancel it first "
                    f"(jobq jobs cancel {job_id}), then delete it"
                )
            c.execute("DELETE FROM jobq_jobs WHERE id = ?", (job_id,))
            if row[1]:
                _resolve(c, [(job_id, JobState.CANCELLED.value)], now_)
        return True

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
            rows = c.execute(
                "UPDATE jobq_jobs SET "
                "state = CASE WHEN attempt >= max_attempts THEN 'dead' ELSE 'available' END, "
                "finished_at = CASE WHEN attempt >= max_attempts THEN :now END, "
                "leased_until = NULL, eff_priority = priority, lost = lost + 1, "
                f"errors = json_insert({_ERRORS}, '$[#]', json_object('attempt', attempt, "
                "'at', :now, 'type', 'WorkerLost', 'message', CASE WHEN attempt >= max_attempts "
                f"THEN replace(:dead, '{{times}}', 1 + (SELECT count(*) FROM json_each({_ERRORS}) "
                "WHERE json_extract(value, '$.type') = 'WorkerLost')) "
                "ELSE replace(:lost, '{worker}', coalesce(worker_id, '?')) END, "
                "'traceback', NULL)) "
                "WHERE state = 'running' AND leased_until < :now "
                "RETURNING id, state, has_dependents",
                {"now": now_, "lost": WORKER_LOST, "dead": WORKER_LOST_DEAD},
            ).fetchall()
            dead = [(r[0], r[1]) for r in rows if r[2] and r[1] == JobState.DEAD.value]
            if dead:
                _resolve(c, dead, now_)
        return len(rows)

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
        keep: int = 0,
    ) -> int:
        finished = states & TERMINAL_STATES
        if not finished or limit <= 0:
            return 0
        cutoff = _now(now) - td_us(older_than)
        with self._write() as c:
            if keep <= 0:
                return c.execute(
                    "DELETE FROM jobq_jobs WHERE id IN (SELECT id FROM jobq_jobs WHERE "
                    f"{_FINISHED_INDEXED} AND state IN ({state_list_sql(finished)}) "
                    "AND finished_at < ? LIMIT ?)",
                    (cutoff, limit),
                ).rowcount
            deleted = 0
            for state in sorted(finished):
                if deleted >= limit:
                    break
                # The keep-th most recently finished job of the state: it and every job after
                # it (by finished_at, then id) are spared.
                in_state = f"{_FINISHED_INDEXED} AND state = '{state.value}'"
                boundary = c.execute(
                    f"SELECT finished_at, id FROM jobq_jobs WHERE {in_state} "
                    "ORDER BY finished_at DESC, id DESC LIMIT 1 OFFSET ?",
                    (keep - 1,),
                ).fetchone()
                if boundary is None:
                    continue
                deleted += c.execute(
                    "DELETE FROM jobq_jobs WHERE id IN (SELECT id FROM jobq_jobs "
                    f"WHERE {in_state} AND finished_at < ? AND (finished_at, id) < (?, ?) "
                    "LIMIT ?)",
                    (cutoff, boundary[0], boundary[1], limit - deleted),
                ).rowcount
            return deleted

    def next_due(self) -> datetime | None:
        row = self._read("SELECT min(run_at) FROM jobq_jobs WHERE state = 'scheduled'")
        return opt_from_us(row[0][0])

    # -- queues ------------------------------------------------------------------------------

    def set_queue(
        self, queue: str, *, paused: bool | None = None, max_depth: int | bool | None = False
    ) -> QueueSettings:
        with self._write() as c:
            c.execute("INSERT INTO jobq_queues (queue) VALUES (?) ON CONFLICT DO NOTHING", (queue,))
            if paused is not None:
                c.execute("UPDATE jobq_queues SET paused = ? WHERE queue = ?", (int(paused), queue))
            if max_depth is None or (
                isinstance(max_depth, int) and not isinstance(max_depth, bool)
            ):
                c.execute(
                    "UPDATE jobq_queues SET max_depth = ? WHERE queue = ?", (max_depth, queue)
                )
            row = c.execute(
                "SELECT paused, max_depth FROM jobq_queues WHERE queue = ?", (queue,)
            ).fetchone()
        return QueueSettings(paused=bool(row[0]), max_depth=row[1])

    def queue_settings(self) -> dict[str, QueueSettings]:
        return {
            queue: QueueSettings(paused=bool(paused), max_depth=max_depth)
            for queue, paused, max_depth in self._read(
                "SELECT queue, paused, max_depth FROM jobq_queues ORDER BY queue"
            )
        }

    # -- distributed locks -------------------------------------------------------------------

    def acquire_lock(
        self, name: str, owner: str, ttl: timedelta, *, now: datetime | None = None
    ) -> int | None:
        now_ = _now(now)
        with self._write() as c:
            row = c.execute(
                "SELECT owner, token, expires_at FROM jobq_locks WHERE name = ?", (name,)
            ).fetchone()
            if row is not None and row[0] is not None and row[2] >= now_:
                return None  # held, and its lease is still valid (up to its expiry instant)
            token = 1 if row is None else row[1] + 1
            c.execute(
                "INSERT INTO jobq_locks (name, owner, token, expires_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, "
                "token = excluded.token, expires_at = excluded.expires_at",
                (name, owner, token, now_ + td_us(ttl)),
            )
        return int(token)

    def renew_lock(
        self, name: str, token: int, ttl: timedelta, *, now: datetime | None = None
    ) -> bool:
        with self._write() as c:
            return (
                c.execute(
                    "UPDATE jobq_locks SET expires_at = ? "
                    "WHERE name = ? AND token = ? AND owner IS NOT NULL",
                    (_now(now) + td_us(ttl), name, token),
                ).rowcount
                == 1
            )

    def release_lock(self, name: str, token: int) -> bool:
        with self._write() as c:
            return (
                c.execute(
                    "UPDATE jobq_locks SET owner = NULL, expires_at = NULL "
                    "WHERE name = ? AND token = ? AND owner IS NOT NULL",
                    (name, token),
                ).rowcount
                == 1
            )

    # -- reading -----------------------------------------------------------------------------

    def get(self, job_id: int) -> JobRecord | None:
        rows = self._read(f"SELECT {_COLUMNS} FROM jobq_jobs WHERE id = ?", (job_id,))
        return _row_to_record(rows[0]) if rows else None

    def list_jobs(
        self, filter: JobFilter, *, limit: int = 50, before_id: int | None = None
    ) -> list[JobRecord]:
        where, params = _filter_sql(filter, None)
        if before_id is not None:
            where += " AND id < :before_id"
            params["before_id"] = before_id
        params["limit"] = max(0, limit)
        sql = f"SELECT {_COLUMNS} FROM jobq_jobs WHERE {where} ORDER BY id DESC LIMIT :limit"
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


#: The state terms of the partial indexes of migration 1, written exactly as there: SQLite uses a
#: partial index only for a query that repeats its WHERE term (an IN list in the same order).
_ACTIVE_INDEXED = "state IN ('scheduled', 'blocked', 'available', 'running')"
_FINISHED_INDEXED = "state IN ('completed', 'dead', 'cancelled', 'expired')"
_TERMINAL_OUTCOMES = frozenset(
    {OutcomeKind.COMPLETED, OutcomeKind.DEAD, OutcomeKind.CANCELLED, OutcomeKind.EXPIRED}
)

_INSERT_COLUMNS = (
    "id, queue, task, args, kwargs, priority, eff_priority, deadline, deadline_key, run_at, "
    "max_attempts, timeout, unique_key, tags, state, created_at, concurrency_key, "
    "concurrency_limit, rate_key, rate_limit, rate_period, limited, depends_on, deps_pending, "
    "allow_failed, secret"
)
_INSERT = (
    f"INSERT INTO jobq_jobs ({_INSERT_COLUMNS}) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
#: where each value sits in the parameters of ``_INSERT``
_P_RUN_AT, _P_STATE, _P_CREATED = 9, 14, 15


def _run_at(nj: NewJob, now: int) -> int:
    if nj.run_at is not None:
        return to_us(nj.run_at)
    return now + (td_us(nj.delay) if nj.delay else 0)


def _insert_params(
    job_id: int,
    nj: NewJob,
    now: int,
    depends_on: Sequence[int] = (),
    pending: int = 0,
) -> tuple[Any, ...]:
    run_at = _run_at(nj, now)
    if pending:
        state = JobState.BLOCKED
    else:
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
        _json_list(nj.tags),
        state.value,
        now,
        nj.concurrency_key,
        nj.concurrency_limit,
        nj.rate_key,
        nj.rate_limit,
        None if nj.rate_period is None else td_us(nj.rate_period),
        int(nj.concurrency_key is not None or nj.rate_key is not None),
        _json_list(depends_on),
        pending,
        int(nj.allow_failed),
        _json_list(nj.secret),
    )


def _json_list(items: Sequence[Any]) -> str:
    return json.dumps(list(items)) if items else "[]"


def _new_record(
    p: tuple[Any, ...], nj: NewJob, times: dict[int, datetime] | None = None
) -> JobRecord:
    """The record of the row inserted with parameters ``p``; ``times`` caches ``from_us`` (a
    batch shares its created_at, and mostly its run_at)."""
    if times is None:
        times = {}
    run_at, created = p[_P_RUN_AT], p[_P_CREATED]
    if (run_at_dt := times.get(run_at)) is None:
        run_at_dt = times[run_at] = from_us(run_at)
    if (created_dt := times.get(created)) is None:
        created_dt = times[created] = from_us(created)
    return JobRecord(
        id=p[0],
        queue=nj.queue,
        task=nj.task,
        args_json=nj.args_json,
        kwargs_json=nj.kwargs_json,
        priority=nj.priority,
        deadline=opt_from_us(p[7]),
        run_at=run_at_dt,
        attempt=0,
        max_attempts=nj.max_attempts,
        timeout=nj.timeout,
        unique_key=nj.unique_key,
        tags=nj.tags,
        state=state_of(p[_P_STATE]),
        worker_id=None,
        lease_token=None,
        leased_until=None,
        result_json=None,
        errors=(),
        created_at=created_dt,
        started_at=None,
        finished_at=None,
        concurrency_key=nj.concurrency_key,
        rate_key=nj.rate_key,
        depends_on=(),  # only jobs without dependencies take this path
        allow_failed=nj.allow_failed,
        secret=nj.secret,
    )


# -- unique keys -----------------------------------------------------------------------------


def _unique_holder(c: sqlite3.Connection, nj: NewJob, now: int) -> JobRecord | None:
    """The job ``nj``'s unique_key conflicts with: the active holder, else (with a window)
    the newest same-key job created within the window, whatever its state."""
    row = c.execute(
        f"SELECT {_COLUMNS} FROM jobq_jobs WHERE unique_key = ? AND {_ACTIVE_INDEXED}",
        (nj.unique_key,),
    ).fetchone()
    if row is None and nj.unique_window is not None:
        row = c.execute(
            f"SELECT {_COLUMNS} FROM jobq_jobs WHERE unique_key = ? AND created_at > ? "
            "ORDER BY created_at DESC, id DESC LIMIT 1",
            (nj.unique_key, now - td_us(nj.unique_window)),
        ).fetchone()
    return None if row is None else _row_to_record(row)


def _on_conflict(c: sqlite3.Connection, nj: NewJob, holder: JobRecord, now: int) -> JobRecord:
    key = nj.unique_key
    assert key is not None
    if nj.on_conflict == "raise":
        raise unique_held(key, holder)
    if nj.on_conflict != "replace":
        return holder
    run_at = _run_at(nj, now)
    deadline = to_us(nj.deadline) if nj.deadline else None
    row = c.execute(
        "UPDATE jobq_jobs SET args = :args, kwargs = :kwargs, priority = :priority, "
        "eff_priority = :priority, run_at = :run_at, "
        "state = CASE WHEN :run_at > :now THEN 'scheduled' ELSE 'available' END, "
        "deadline = :deadline, deadline_key = :deadline_key, timeout = :timeout, "
        "max_attempts = :max_attempts, tags = :tags "
        f"WHERE id = :id AND state IN ({state_list_sql(sources(Action.REPLACE))}) "
        f"RETURNING {_COLUMNS}",
        {
            "id": holder.id,
            "now": now,
            "args": nj.args_json,
            "kwargs": nj.kwargs_json,
            "priority": nj.priority,
            "run_at": run_at,
            "deadline": deadline,
            "deadline_key": NO_DEADLINE_US if deadline is None else deadline,
            "timeout": None if nj.timeout is None else td_us(nj.timeout),
            "max_attempts": nj.max_attempts,
            "tags": json.dumps(nj.tags),
        },
    ).fetchone()
    if row is None:
        raise not_replaceable(key, holder)
    return _row_to_record(row)


# -- dependencies ----------------------------------------------------------------------------


def _dependencies(
    c: sqlite3.Connection, nj: NewJob, position: int, earlier: Sequence[JobRecord]
) -> list[tuple[int, str]]:
    """(id, state) of each job ``nj`` depends on, ascending, without repeats."""
    ids: list[int] = list(nj.depends_on)
    for index in nj.depends_on_batch:
        if isinstance(index, bool) or not 0 <= index < position:
            raise bad_batch_dependency(position, index)
        ids.append(earlier[index].id)
    ids = sorted(set(ids))
    if not ids:
        return []
    states = dict(
        c.execute(
            "SELECT id, state FROM jobq_jobs WHERE id IN (SELECT value FROM json_each(?))",
            (json.dumps(ids),),
        ).fetchall()
    )
    for dep_id in ids:
        if dep_id not in states:
            raise unknown_dependency(dep_id)
    return [(dep_id, states[dep_id]) for dep_id in ids]


def _insert_with_dependencies(
    c: sqlite3.Connection, job_id: int, nj: NewJob, deps: list[tuple[int, str]], now: int
) -> JobRecord:
    """Insert a job that has a unique key or dependencies; blocked while some are unresolved,
    cancelled at once when one already failed (and ``nj`` does not allow failure)."""
    active = {s.value for s in ACTIVE_STATES}
    pending = [d for d, state in deps if state in active]
    failed = next(
        (
            (d, state)
            for d, state in deps
            if state != JobState.COMPLETED.value and state not in active
        ),
        None,
    )
    if nj.allow_failed:
        failed = None
    blocked = bool(pending) or failed is not None
    params = _insert_params(
        job_id, nj, now, [d for d, _ in deps], max(len(pending), 1) if blocked else 0
    )
    row = c.execute(_INSERT + f" RETURNING {_COLUMNS}", params).fetchone()
    if failed is not None:
        # Its dependency already ended dead, cancelled or expired: resolved at once, as it
        # would have been had it finished a moment later.
        (cancelled,) = _cancel_dependents(c, [job_id], failed[0], failed[1], now)
        return _row_to_record(cancelled[:_NCOL])
    if pending:
        c.executemany(
            "INSERT INTO jobq_deps (dep_id, job_id) VALUES (?, ?)", [(d, job_id) for d in pending]
        )
        c.execute(
            "UPDATE jobq_jobs SET has_dependents = 1 "
            "WHERE id IN (SELECT value FROM json_each(?)) AND has_dependents = 0",
            (json.dumps(pending),),
        )
    return _row_to_record(row)


def _cancel_dependents(
    c: sqlite3.Connection, job_ids: Sequence[int], dep_id: int, dep_state: str, now: int
) -> list[Any]:
    """Cancel the blocked jobs ``job_ids`` (that do not allow failure) because ``dep_id`` ended
    ``dep_state``; returns their rows (``_COLUMNS``, then has_dependents)."""
    err = dependency_failed(dep_id, dep_state, 0, from_us(now))
    return c.execute(
        "UPDATE jobq_jobs SET state = 'cancelled', finished_at = :now, "
        f"errors = json_insert({_ERRORS}, '$[#]', json_object('attempt', attempt, 'at', :now, "
        "'type', :type, 'message', :message, 'traceback', NULL)) "
        "WHERE id IN (SELECT value FROM json_each(:ids)) AND state = 'blocked' "
        f"AND allow_failed = 0 RETURNING {_COLUMNS}, has_dependents",
        {"now": now, "ids": json.dumps(list(job_ids)), "type": err.type, "message": err.message},
    ).fetchall()


def _resolve(c: sqlite3.Connection, finished: list[tuple[int, str]], now: int) -> None:
    """Resolve the dependents of jobs that just reached a terminal state (or were deleted,
    given as cancelled), in the caller's transaction, and so on down the chain."""
    todo = list(finished)
    while todo:
        dep_id, dep_state = todo.pop()
        dependents = [
            r[0]
            for r in c.execute(
                "DELETE FROM jobq_deps WHERE dep_id = ? RETURNING job_id", (dep_id,)
            ).fetchall()
        ]
        if not dependents:
            continue
        ids = json.dumps(dependents)
        c.execute(
            "UPDATE jobq_jobs SET deps_pending = deps_pending - 1 "
            "WHERE id IN (SELECT value FROM json_each(:ids)) AND state = 'blocked' "
            "AND (:completed OR allow_failed = 1)",
            {"ids": ids, "completed": int(dep_state == JobState.COMPLETED.value)},
        )
        c.execute(
            "UPDATE jobq_jobs SET state = CASE WHEN run_at > :now THEN 'scheduled' "
            "ELSE 'available' END, eff_priority = priority "
            "WHERE id IN (SELECT value FROM json_each(:ids)) AND state = 'blocked' "
            "AND deps_pending <= 0",
            {"ids": ids, "now": now},
        )
        if dep_state != JobState.COMPLETED.value:
            for row in _cancel_dependents(c, dependents, dep_id, dep_state, now):
                if row[_NCOL]:
                    todo.append((row[0], JobState.CANCELLED.value))


def _waiting(c: sqlite3.Connection, queue: str) -> int:
    """The queue's scheduled, blocked and available jobs, counted through partial indexes."""
    return int(
        c.execute(
            "SELECT (SELECT count(*) FROM jobq_jobs WHERE state = 'available' AND limited = 0 "
            "AND queue = :q) + (SELECT count(*) FROM jobq_jobs WHERE state = 'available' "
            "AND limited = 1 AND queue = :q) + (SELECT count(*) FROM jobq_jobs "
            "WHERE state IN ('scheduled', 'blocked') AND queue = :q)",
            {"q": queue},
        ).fetchone()[0]
    )


# -- claims ----------------------------------------------------------------------------------

_CLAIM_SET = (
    "UPDATE jobq_jobs SET state = 'running', attempt = attempt + 1, worker_id = :worker, "
    "lease_token = lower(hex(randomblob(8))), leased_until = :until, started_at = :now, "
    "progress = NULL, progress_message = NULL "
)


@functools.lru_cache(maxsize=64)
def _claim_sql(n_queues: int, queue_order: bool, lost: bool | None = None) -> str:
    """One UPDATE that leases the best ``:limit`` unlimited available jobs of queues
    ``:q0..:qN``.

    Each queue's candidates come from its own walk of the partial claim index (so the cost is
    O(log n) per queue, whatever the backlog), then the union is ordered once more.

    ``lost`` (the claim's ``max_lost``): None takes jobs whatever their lost count; False only
    jobs never lost; True those plus at most ``:max_lost`` lost ones (from their own index).
    """
    never_lost = "" if lost is None else "AND lost = 0 "
    parts = [
        f"SELECT * FROM (SELECT id, {rank} AS qrank, eff_priority, deadline_key, run_at "
        f"FROM jobq_jobs WHERE state = 'available' AND limited = 0 {never_lost}"
        f"AND queue = :q{rank} ORDER BY {_ORDER} LIMIT :limit)"
        for rank in range(n_queues)
    ]
    order = ("qrank, " if queue_order else "") + _ORDER
    if lost:
        lost_parts = [
            f"SELECT * FROM (SELECT id, {rank} AS qrank, eff_priority, deadline_key, run_at "
            "FROM jobq_jobs WHERE state = 'available' AND limited = 0 AND lost > 0 "
            f"AND queue = :q{rank} ORDER BY {_ORDER} LIMIT :max_lost)"
            for rank in range(n_queues)
        ]
        parts.append(
            f"SELECT * FROM (SELECT * FROM ({' UNION ALL '.join(lost_parts)}) "
            f"ORDER BY {order} LIMIT :max_lost)"
        )
    return (
        _CLAIM_SET + f"WHERE id IN (SELECT id FROM ({' UNION ALL '.join(parts)}) "
        f"ORDER BY {order} LIMIT :limit) RETURNING {_COLUMNS}, eff_priority, deadline_key"
    )


@functools.lru_cache(maxsize=64)
def _probe_sql(n_queues: int) -> str:
    """(JSON list of the paused queues among ``:q0..:qN``, whether any of them has a limited
    job available)."""
    names = ", ".join(f":q{rank}" for rank in range(n_queues))
    return (
        "SELECT (SELECT json_group_array(queue) FROM jobq_queues WHERE paused = 1 "
        f"AND queue IN ({names})), EXISTS (SELECT 1 FROM jobq_jobs WHERE state = 'available' "
        f"AND limited = 1 AND queue IN ({names}))"
    )


@functools.lru_cache(maxsize=64)
def _limited_sql(n_queues: int, queue_order: bool) -> str:
    """The next ``:limit`` limited candidates of queues ``:q0..:qN`` in claim order, leaving out
    ids in ``:chosen`` and jobs the counts in ``:running``/``:started`` (JSON objects of key ->
    count) already rule out. Rows: id, concurrency_key, concurrency_limit, rate_key,
    rate_limit (the shape ``select_limited`` takes)."""
    cols = "id, concurrency_key, concurrency_limit, rate_key, rate_limit"
    parts = [
        f"SELECT * FROM (SELECT {cols}, {rank} AS qrank, eff_priority, deadline_key, run_at "
        f"FROM jobq_jobs WHERE state = 'available' AND limited = 1 AND queue = :q{rank} "
        "AND id NOT IN (SELECT value FROM json_each(:chosen)) "
        "AND (concurrency_limit IS NULL OR coalesce((SELECT value FROM json_each(:running) "
        "WHERE key = concurrency_key), 0) < concurrency_limit) "
        "AND (rate_limit IS NULL OR coalesce((SELECT value FROM json_each(:started) "
        "WHERE key = rate_key), 0) < rate_limit) "
        f"ORDER BY {_ORDER} LIMIT :limit)"
        for rank in range(n_queues)
    ]
    order = ("qrank, " if queue_order else "") + _ORDER
    return f"SELECT {cols} FROM ({' UNION ALL '.join(parts)}) ORDER BY {order} LIMIT :limit"


# -- outcomes and operator actions -----------------------------------------------------------


def _fenced(set_clause: str) -> str:
    return (
        f"UPDATE jobq_jobs SET {set_clause} WHERE id = :id AND lease_token = :token "
        "AND state = 'running' RETURNING id, has_dependents"
    )


_APPEND_ERROR = (
    f"errors = CASE WHEN :error IS NULL THEN errors ELSE json_insert({_ERRORS}, '$[#]', "
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

#: Many completions in one statement: ``:outcomes`` is a JSON list of [id, token, result].
_COMPLETE_MANY = (
    "UPDATE jobq_jobs SET state = 'completed', result = o.result, finished_at = :now, "
    "leased_until = NULL FROM (SELECT json_extract(value, '$[0]') AS id, "
    "json_extract(value, '$[1]') AS token, json_extract(value, '$[2]') AS result "
    "FROM json_each(:outcomes)) AS o WHERE jobq_jobs.id = o.id "
    "AND jobq_jobs.lease_token = o.token AND jobq_jobs.state = 'running' "
    "RETURNING jobq_jobs.id, jobq_jobs.has_dependents"
)

_CANCEL_SET = (
    "UPDATE jobq_jobs SET state = 'cancelled', finished_at = :now, "
    f"leased_until = NULL, errors = json_insert({_ERRORS}, '$[#]', json(:error)) "
)
_RETRY_SET = (
    "UPDATE jobq_jobs SET state = 'available', run_at = :now, "
    "eff_priority = priority, max_attempts = max(max_attempts, attempt + 1), "
    "finished_at = NULL, result = NULL, worker_id = NULL, leased_until = NULL "
)


def _cancel_error(now: int) -> str:
    return json.dumps(
        {
            "attempt": 0,
            "at": now,
            "type": "Cancelled",
            "message": "cancelled through the API",
            "traceback": None,
        }
    )


def _filter_sql(
    filter: JobFilter, states: frozenset[JobState] | set[JobState] | None
) -> tuple[str, dict[str, Any]]:
    """A WHERE clause (never empty) and its parameters for ``filter``; ``states`` (when given)
    replaces ``filter.state``."""
    where: list[str] = []
    params: dict[str, Any] = {}
    if states is not None:
        where.append(f"state IN ({state_list_sql(states)})")
    elif filter.state is not None:
        where.append("state = :state")
        params["state"] = filter.state.value
    if filter.queue is not None:
        where.append("queue = :queue")
        params["queue"] = filter.queue
    if filter.task is not None:
        where.append("task = :task")
        params["task"] = filter.task
    if filter.search:
        where.append("(jobq_contains(args, :search) OR jobq_contains(kwargs, :search))")
        params["search"] = filter.search.lower()
    return " AND ".join(where) or "1", params


def _contains(text: str | None, needle: str | None) -> bool:
    """SQL ``jobq_contains(text, needle)``: ``needle`` (already lower case) occurs in ``text``,
    ignoring case (Unicode-aware, unlike SQLite's ``lower``)."""
    return text is not None and needle is not None and needle in text.lower()


def _leases_json(leases: Sequence[Lease]) -> str:
    return json.dumps([[lease.job_id, lease.token] for lease in leases])


def _now(now: datetime | None) -> int:
    return now_us() if now is None else to_us(now)
