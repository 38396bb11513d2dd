"""PostgreSQL backend (``postgresql://user:pass@host:5432/db?schema=jobq``): many worker hosts,
one database.

* Claims lease a batch in one statement: per queue, a walk of the partial claim index with
  ``FOR UPDATE SKIP LOCKED`` inside a CTE, so concurrent workers never wait on or take the same
  row, and the cost stays O(log n) in the backlog.
* Heartbeats, outcomes and releases are fenced by (id, lease_token) and batched into one
  statement each (``unnest`` of arrays); outcomes ride in the same transaction as the next claim.
* The database clock (``now()``) decides every lease and due time; tests may pass ``now``.
* ``pg_notify`` (one per batch and queue, delivered on commit) wakes idle workers at once; a
  worker still checks every second, so a pooler that cannot LISTEN only costs latency.
* Maintenance runs on one leader across all machines: the holder of a session advisory lock on a
  dedicated connection. If that process dies, its session ends, the lock is free, and another
  worker takes over at its next maintenance tick (about a second).
* A bounded connection pool per process; a lost connection is replaced on next use, and an
  operation that fails on one raises :class:`jobq.BackendError` (the worker logs, backs off and
  retries; an application's ``enqueue`` sees the error and nothing is half written).
* Transactional enqueue: ``enqueue_many(..., connection=conn)`` runs on the application's own
  psycopg connection and transaction, so the job exists iff that transaction commits.
"""

from __future__ import annotations

import logging
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import psycopg
import psycopg_pool
from psycopg import sql

from jobq.backends import attempt_errors
from jobq.backends import postgres_sql as q
from jobq.backends.base import (
    WORKER_LOST,
    WORKER_LOST_DEAD,
    JobFilter,
    Lease,
    NewJob,
    Outcome,
    WorkerInfo,
    log_not_recorded,
    not_found,
    not_retryable,
    retry_conflict,
)
from jobq.backends.postgres_schema import (
    SCHEMA_VERSION,
    check_schema_name,
    current_version,
    migrate,
)
from jobq.exceptions import (
    BackendError,
    ConfigurationError,
    DatabaseOpenError,
    SchemaVersionError,
    UniqueConflict,
)
from jobq.job import JobRecord
from jobq.states import ACTIVE_STATES, TERMINAL_STATES, JobState, state_list_sql

log = logging.getLogger("jobq.postgres")

_OWN_OPTIONS = {"schema", "pool_size", "pool_timeout", "prepared_statements"}


@dataclass(frozen=True, slots=True)
class PostgresOptions:
    """jobq's own options in a ``postgresql://`` URL's query (the rest goes to libpq)."""

    conninfo: str
    schema: str = "public"
    pool_size: int = 10
    pool_timeout: float = 10.0
    #: False for poolers that cannot keep prepared statements (PgBouncer in transaction mode).
    prepared_statements: bool = True


def parse_postgres_url(url: str) -> PostgresOptions:
    """Split a URL into libpq's conninfo and jobq's own options."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ConfigurationError(f"{redact(url)!r} is not a postgresql:// URL")
    own = {k: v for k, v in parse_qsl(parts.query) if k in _OWN_OPTIONS}
    rest = [(k, v) for k, v in parse_qsl(parts.query) if k not in _OWN_OPTIONS]
    schema = check_schema_name(own.get("schema", "public"))
    try:
        pool_size = int(own.get("pool_size", "10"))
        pool_timeout = float(own.get("pool_timeout", "10"))
    except ValueError:
        raise ConfigurationError(
            f"pool_size and pool_timeout in {redact(url)!r} must be numbers"
        ) from None
    if not 1 <= pool_size <= 1000 or pool_timeout <= 0:
        raise ConfigurationError(
            f"pool_size must be 1-1000 and pool_timeout positive in {redact(url)!r}"
        )
    prepared = own.get("prepared_statements", "true").lower()
    if prepared not in ("true", "false"):
        raise ConfigurationError(
            f"prepared_statements in {redact(url)!r} must be true or false, got {prepared!r}"
        )
    conninfo = parts._replace(scheme="postgresql", query=urlencode(rest)).geturl()
    return PostgresOptions(conninfo, schema, pool_size, pool_timeout, prepared == "true")


def redact(url: str) -> str:
    from jobq.backends import redact_url

    return redact_url(url)


def _utc(dt: datetime | None) -> datetime | None:
    return None if dt is None else dt.astimezone(UTC)


def _row_to_record(row: Sequence[Any]) -> JobRecord:
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
    ) = row[:22]
    return JobRecord(
        id=id_,
        queue=queue,
        task=task,
        args_json=args,
        kwargs_json=kwargs,
        priority=priority,
        deadline=_utc(deadline),
        run_at=run_at.astimezone(UTC),
        attempt=attempt,
        max_attempts=max_attempts,
        timeout=timeout,
        unique_key=unique_key,
        tags=tuple(tags),
        state=JobState(state),
        worker_id=worker_id,
        lease_token=lease_token,
        leased_until=_utc(leased_until),
        result_json=result,
        errors=attempt_errors.from_items(errors),
        created_at=created_at.astimezone(UTC),
        started_at=_utc(started_at),
        finished_at=_utc(finished_at),
    )


class PostgresBackend:
    """A job store in one PostgreSQL schema, shared by workers on any number of machines."""

    def __init__(self, url: str) -> None:
        self.url = redact(url)
        opts = parse_postgres_url(url)
        self._conninfo, self.schema = opts.conninfo, opts.schema
        pool_size, pool_timeout = opts.pool_size, opts.pool_timeout
        # prepare_threshold=None: never prepare server-side (safe behind transaction pooling)
        self._connect_kwargs: dict[str, Any] = (
            {} if opts.prepared_statements else {"prepare_threshold": None}
        )
        self._t = sql.SQL("{}.jobq_jobs").format(sql.Identifier(self.schema))
        self._seq = ""  # the jobs' id sequence, resolved once the schema exists
        self.channel = f"jobq_{self.schema}"
        self._lead_key = zlib.crc32(f"jobq-leader:{self.schema}".encode()) & 0x7FFFFFFF
        self._sql_cache: dict[str, sql.Composed] = {}
        self._lock = threading.Lock()
        self._subscribers: list[Callable[[], None]] = []
        self._changes = 0
        self._listener: threading.Thread | None = None
        self._leader: psycopg.Connection[Any] | None = None
        self._closed = threading.Event()
        self._pool = psycopg_pool.ConnectionPool(
            self._conninfo,
            min_size=1,
            max_size=pool_size,
            timeout=pool_timeout,
            open=False,
            name="jobq",
            check=psycopg_pool.ConnectionPool.check_connection,
            # autocommit: a single statement is its own transaction (one round trip); every
            # multi-statement operation opens an explicit transaction()
            kwargs={"autocommit": True, **self._connect_kwargs},
        )
        try:
            # One direct connection first: a refused or unknown server fails now, with libpq's
            # own reason, instead of after the pool's timeout.
            with psycopg.connect(
                self._conninfo, connect_timeout=max(1, int(pool_timeout)), **self._connect_kwargs
            ) as c:
                if current_version(c, self.schema) != SCHEMA_VERSION:
                    c.rollback()
                    migrate(c, self.schema)
                row = c.execute(
                    "SELECT pg_get_serial_sequence(%s, 'id')", (f"{self.schema}.jobq_jobs",)
                ).fetchone()
                self._seq = str(row[0]) if row else ""
            self._pool.open(wait=True, timeout=pool_timeout)
        except psycopg.OperationalError as exc:
            self._pool.close()
            raise DatabaseOpenError(
                f"cannot connect to PostgreSQL at {self.url}: {str(exc).strip()}; check that "
                "the server is running and the URL, user and database are right"
            ) from None
        except psycopg_pool.PoolTimeout as exc:
            self._pool.close()
            raise DatabaseOpenError(
                f"cannot connect to PostgreSQL at {self.url} within {pool_timeout:g}s: "
                f"{exc}; check that the server is running and the URL, user and database are "
                "right"
            ) from None
        except psycopg.Error as exc:
            self._pool.close()
            raise DatabaseOpenError(
                f"cannot prepare PostgreSQL at {self.url} (schema {self.schema!r}): {exc}; "
                "if this user may not create tables, run `jobq migrate` as one who may"
            ) from None
        except SchemaVersionError:
            self._pool.close()
            raise

    # -- plumbing ----------------------------------------------------------------------------

    def _q(self, template: str) -> sql.Composed:
        """A statement with ``{t}`` bound to this schema's jobs table (cached)."""
        composed = self._sql_cache.get(template)
        if composed is None:
            composed = sql.SQL(template).format(t=self._t)
            self._sql_cache[template] = composed
        return composed

    @contextmanager
    def _tx(
        self, connection: psycopg.Connection[Any] | None = None
    ) -> Iterator[psycopg.Cursor[Any]]:
        """A cursor in one transaction, committed on success; database trouble becomes a
        :class:`BackendError` naming the server (never a half-written change)."""
        if self._closed.is_set():
            raise BackendError(f"the PostgreSQL backend for {self.url} is closed")
        try:
            if connection is not None:
                with connection.cursor() as cur:
                    yield cur
                return
            with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
                yield cur
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
            raise BackendError(
                f"PostgreSQL at {self.url} is unreachable or dropped the connection: "
                f"{str(exc).strip()}"
            ) from exc

    def schema_version(self) -> int:
        with self._pool.connection() as conn:
            return current_version(conn, self.schema)

    def close(self) -> None:
        self._closed.set()
        if self._listener is not None:
            self._listener.join(5)
        with self._lock:
            leader, self._leader = self._leader, None
        if leader is not None:
            leader.close()
        self._pool.close()

    # -- enqueue -----------------------------------------------------------------------------

    def enqueue_many(
        self,
        jobs: Sequence[NewJob],
        *,
        now: datetime | None = None,
        connection: psycopg.Connection[Any] | None = None,
    ) -> list[JobRecord]:
        if not jobs:
            return []
        if connection is not None and not isinstance(connection, psycopg.Connection):
            raise ConfigurationError(
                f"connection= must be a psycopg (3) Connection, got {type(connection).__name__}"
            )
        params = {
            "now": now,
            "seq": self._seq,
            "channel": self.channel,
            "queue": [j.queue for j in jobs],
            "task": [j.task for j in jobs],
            "args": [j.args_json for j in jobs],
            "kwargs": [j.kwargs_json for j in jobs],
            "priority": [j.priority for j in jobs],
            "deadline": [j.deadline for j in jobs],
            "run_at": [j.run_at for j in jobs],
            "delay": [j.delay for j in jobs],
            "max_attempts": [j.max_attempts for j in jobs],
            "timeout": [j.timeout for j in jobs],
            "unique_key": [j.unique_key for j in jobs],
            "tags": ["{" + ",".join(_array_item(t) for t in j.tags) + "}" for j in jobs],
        }
        if connection is not None:
            with self._tx(connection) as cur:
                cur.execute(self._q(q.ENQUEUE), params)
                rows = cur.fetchall()
        else:
            rows = self._one_round_trip(self._q(q.ENQUEUE), params)
        records: list[JobRecord] = []
        for (job_id, state, run_at, created_at, _), nj in zip(rows, jobs, strict=True):
            if state is not None:
                records.append(_new_record(job_id, nj, (job_id, state, run_at, created_at)))
            else:  # another active job holds its unique_key: that job stands in for it
                records.append(self._unique_holder(nj, connection))
        if connection is None and any(r.state is JobState.AVAILABLE for r in records):
            self._bump()
        return records

    def _one_round_trip(self, query: sql.Composed, params: dict[str, Any]) -> list[Any]:
        """One statement, atomic on its own (autocommit): the rows it returns."""
        if self._closed.is_set():
            raise BackendError(f"the PostgreSQL backend for {self.url} is closed")
        try:
            with self._pool.connection() as conn:
                return conn.execute(query, params).fetchall()
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
            raise BackendError(
                f"PostgreSQL at {self.url} is unreachable or dropped the connection: "
                f"{str(exc).strip()}"
            ) from exc

    def _unique_holder(self, nj: NewJob, connection: psycopg.Connection[Any] | None) -> JobRecord:
        with self._tx(connection) as cur:
            cur.execute(
                self._q(
                    f"SELECT {q.COLUMNS} FROM {{t}} WHERE unique_key = %s AND state IN "
                    f"({state_list_sql(ACTIVE_STATES)})"
                ),
                (nj.unique_key,),
            )
            existing = cur.fetchone()
        if existing is None:  # pragma: no cover - the conflicting job just finished
            raise UniqueConflict(
                f"unique_key {nj.unique_key!r} was held by a job that finished while this one "
                "was enqueued; enqueue again"
            )
        return _row_to_record(existing)

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
        if not outcomes and (limit <= 0 or not queues):
            return set(), []
        if limit <= 0 or not queues:
            return self.record_outcomes(outcomes, now=now), []
        params = {
            "queues": list(queues),
            "limit": limit,
            "worker": worker_id,
            "lease": lease,
            "now": now,
        }
        if not outcomes:
            rows = self._one_round_trip(
                self._q(q.CLAIM_ORDERED if queue_order else q.CLAIM), params
            )
            done: set[int] = set()
        else:
            exchange = q.EXCHANGE_ORDERED if queue_order else q.EXCHANGE
            rows = self._one_round_trip(self._q(exchange), {**params, **_outcome_params(outcomes)})
            done = set(rows[0][-1] or ()) if rows else set()
            rows = [r[:-1] for r in rows if r[0] is not None]
            for o in outcomes:
                if o.lease.job_id not in done:
                    log_not_recorded(o)
        rank_key = (lambda r: r[22]) if queue_order else (lambda r: 0)
        rows.sort(key=lambda r: (rank_key(r), -r[23], r[6] is None, r[6] or r[7], r[7], r[0]))
        return done, [_row_to_record(r) for r in rows]

    def heartbeat(
        self, leases: Sequence[Lease], *, lease: timedelta, now: datetime | None = None
    ) -> set[int]:
        if not leases:
            return set()
        with self._tx() as cur:
            cur.execute(
                self._q(q.HEARTBEAT),
                {
                    "ids": [x.job_id for x in leases],
                    "tokens": [x.token for x in leases],
                    "lease": lease,
                    "now": now,
                },
            )
            return {r[0] for r in cur.fetchall()}

    def record_outcomes(
        self, outcomes: Sequence[Outcome], *, now: datetime | None = None
    ) -> set[int]:
        if not outcomes:
            return set()
        with self._tx() as cur:
            return self._record_in(cur, outcomes, now)

    def _record_in(
        self, cur: psycopg.Cursor[Any], outcomes: Sequence[Outcome], now: datetime | None
    ) -> set[int]:
        cur.execute(self._q(q.OUTCOMES), {"now": now, **_outcome_params(outcomes)})
        done = {r[0] for r in cur.fetchall()}
        for o in outcomes:
            if o.lease.job_id not in done:
                log_not_recorded(o)
        return done

    def release(self, leases: Sequence[Lease], *, now: datetime | None = None) -> set[int]:
        if not leases:
            return set()
        with self._tx() as cur:
            cur.execute(
                self._q(q.RELEASE),
                {
                    "ids": [x.job_id for x in leases],
                    "tokens": [x.token for x in leases],
                },
            )
            done = {r[0] for r in cur.fetchall()}
            if done:
                cur.execute("SELECT pg_notify(%s, '')", (self.channel,))
        return done

    # -- operator actions --------------------------------------------------------------------

    def cancel(self, job_id: int, *, now: datetime | None = None) -> tuple[bool, JobRecord]:
        with self._tx() as cur:
            cur.execute(self._q(q.CANCEL), {"id": job_id, "now": now})
            row = cur.fetchone()
            if row is not None:
                return True, _row_to_record(row)
            cur.execute(self._q(f"SELECT {q.COLUMNS} FROM {{t}} WHERE id = %s"), (job_id,))
            current = cur.fetchone()
        if current is None:
            raise not_found(job_id)
        return False, _row_to_record(current)

    def retry(self, job_id: int, *, now: datetime | None = None) -> JobRecord:
        try:
            with self._tx() as cur:
                cur.execute(self._q(q.RETRY), {"id": job_id, "now": now})
                row = cur.fetchone()
                if row is not None:
                    cur.execute("SELECT pg_notify(%s, %s)", (self.channel, row[1]))
                    return _row_to_record(row)
                cur.execute(self._q("SELECT state FROM {t} WHERE id = %s"), (job_id,))
                current = cur.fetchone()
        except psycopg.errors.UniqueViolation:
            raise retry_conflict(job_id) from None
        if current is None:
            raise not_found(job_id)
        raise not_retryable(job_id, current[0])

    # -- maintenance -------------------------------------------------------------------------

    def _count(self, template: str, params: dict[str, Any]) -> int:
        with self._tx() as cur:
            cur.execute(self._q(template), params)
            n = cur.rowcount
            if n > 0 and template is q.PROMOTE:
                cur.execute("SELECT pg_notify(%s, '')", (self.channel,))
            return max(n, 0)

    def promote_due(self, *, now: datetime | None = None) -> int:
        return self._count(q.PROMOTE, {"now": now})

    def rescue_expired(self, *, now: datetime | None = None) -> int:
        params = {
            "now": now,
            "lost": WORKER_LOST,
            "dead": WORKER_LOST_DEAD,
            "times_mark": "{times}",
            "worker_mark": "{worker}",
        }
        return self._count(q.RESCUE, params)

    def age(self, *, every: timedelta, max_boost: int, now: datetime | None = None) -> int:
        if every <= timedelta(0) or max_boost <= 0:
            return 0
        return self._count(
            q.AGE, {"now": now, "every": every.total_seconds(), "max_boost": max_boost}
        )

    def prune(
        self,
        *,
        older_than: timedelta,
        states: frozenset[JobState],
        now: datetime | None = None,
        limit: int = 10_000,
    ) -> int:
        finished = states & TERMINAL_STATES
        if not finished:
            return 0
        return self._count(
            f"DELETE FROM {{t}} WHERE id IN (SELECT id FROM {{t}} WHERE state IN "
            f"({state_list_sql(finished)}) AND finished_at < {q.NOW} - %(older)s LIMIT %(limit)s)",
            {"now": now, "older": older_than, "limit": limit},
        )

    def next_due(self) -> datetime | None:
        with self._tx() as cur:
            cur.execute(self._q("SELECT min(run_at) FROM {t} WHERE state = 'scheduled'"))
            row = cur.fetchone()
        return _utc(row[0]) if row else None

    def _workers_sql(self, template: str) -> sql.Composed:
        return sql.SQL(template).format(w=sql.Identifier(self.schema, "jobq_workers"))

    def register_worker(self, info: WorkerInfo) -> None:
        with self._tx() as cur:
            cur.execute(
                self._workers_sql(
                    "INSERT INTO {w} (id, host, pid, queues, threads, started_at, heartbeat_at) "
                    "VALUES (%s, %s, %s, %s, %s, now(), now()) "
                    "ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()"
                ),
                (info.id, info.host, info.pid, list(info.queues), info.threads),
            )

    def worker_heartbeat(self, worker_id: str, jobs_run: int) -> None:
        with self._tx() as cur:
            cur.execute(
                self._workers_sql(
                    "UPDATE {w} SET heartbeat_at = now(), jobs_run = %s WHERE id = %s"
                ),
                (jobs_run, worker_id),
            )

    def unregister_worker(self, worker_id: str) -> None:
        with self._tx() as cur:
            cur.execute(self._workers_sql("DELETE FROM {w} WHERE id = %s"), (worker_id,))

    def list_workers(self) -> list[WorkerInfo]:
        with self._tx() as cur:
            cur.execute(
                self._workers_sql(
                    "SELECT id, host, pid, queues, threads, started_at, heartbeat_at, jobs_run "
                    "FROM {w} ORDER BY started_at DESC"
                )
            )
            rows = cur.fetchall()
        return [
            WorkerInfo(
                id=r[0],
                host=r[1],
                pid=r[2],
                queues=tuple(r[3]),
                threads=r[4],
                started_at=r[5].astimezone(UTC),
                heartbeat_at=r[6].astimezone(UTC),
                jobs_run=r[7],
            )
            for r in rows
        ]

    def prune_workers(self, *, older_than: timedelta, now: datetime | None = None) -> int:
        with self._tx() as cur:
            cur.execute(
                self._workers_sql(
                    "DELETE FROM {w} WHERE heartbeat_at < coalesce(%s::timestamptz, now()) - %s"
                ),
                (now, older_than),
            )
            return max(cur.rowcount, 0)

    def now(self) -> datetime:
        with self._tx() as cur:
            cur.execute("SELECT now()")
            row = cur.fetchone()
        assert row is not None
        return row[0].astimezone(UTC)  # type: ignore[no-any-return]

    def try_lead(self) -> bool:
        """Whether this process is the maintenance leader, becoming it if no one is.

        Leadership is a session advisory lock held on a dedicated connection; it ends when that
        session ends (process death, network loss), and another process then takes over.
        """
        with self._lock:
            conn = self._leader
            try:
                if conn is None or conn.closed:
                    conn = self._leader = psycopg.connect(
                        self._conninfo, autocommit=True, **self._connect_kwargs, connect_timeout=5
                    )
                    row = conn.execute(
                        "SELECT pg_try_advisory_lock(%s)", (self._lead_key,)
                    ).fetchone()
                    if not (row and row[0]):
                        conn.close()
                        self._leader = None
                        return False
                    log.info(
                        "this process is now the maintenance leader for schema %s", self.schema
                    )
                    return True
                conn.execute("SELECT 1")  # still alive, so still the holder
                return True
            except psycopg.Error as exc:
                log.warning("maintenance leadership lost or not available: %s", exc)
                if self._leader is not None:
                    self._leader.close()
                self._leader = None
                return False

    # -- reading -----------------------------------------------------------------------------

    def get(self, job_id: int) -> JobRecord | None:
        with self._tx() as cur:
            cur.execute(self._q(f"SELECT {q.COLUMNS} FROM {{t}} WHERE id = %s"), (job_id,))
            row = cur.fetchone()
        return _row_to_record(row) if row else None

    def list_jobs(
        self, filter: JobFilter, *, limit: int = 50, before_id: int | None = None
    ) -> list[JobRecord]:
        with self._tx() as cur:
            cur.execute(
                self._q(q.LIST),
                {
                    "queue": filter.queue,
                    "task": filter.task,
                    "state": filter.state.value if filter.state else None,
                    "before": before_id,
                    "limit": max(0, limit),
                },
            )
            return [_row_to_record(r) for r in cur.fetchall()]

    def stats(self) -> dict[str, dict[JobState, int]]:
        out: dict[str, dict[JobState, int]] = {}
        with self._tx() as cur:
            cur.execute(self._q("SELECT queue, state, count(*) FROM {t} GROUP BY queue, state"))
            for queue, state, count in cur.fetchall():
                out.setdefault(queue, {})[JobState(state)] = count
        return out

    # -- wake-ups ----------------------------------------------------------------------------

    def change_token(self) -> int:
        return self._changes

    def _bump(self) -> None:
        with self._lock:
            self._changes += 1
            callbacks = list(self._subscribers)
        for cb in callbacks:
            cb()

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` (from another thread) whenever jobs may have become available."""
        with self._lock:
            self._subscribers.append(callback)
            if self._listener is None:
                self._listener = threading.Thread(
                    target=self._listen, name="jobq-listen", daemon=True
                )
                self._listener.start()

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    def _listen(self) -> None:
        """LISTEN on a dedicated connection; reconnect with backoff when it is lost."""
        delay = 0.5
        while not self._closed.is_set():
            try:
                with psycopg.connect(
                    self._conninfo, autocommit=True, connect_timeout=5, **self._connect_kwargs
                ) as conn:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                    if delay > 0.5:
                        log.info("listening for new jobs again on %s", self.url)
                    delay = 0.5
                    self._bump()  # something may have arrived while we were not listening
                    while not self._closed.is_set():
                        for _ in conn.notifies(timeout=0.5, stop_after=1):
                            self._bump()
            except psycopg.Error as exc:
                if self._closed.is_set():
                    return
                if delay == 0.5:
                    log.warning(
                        "lost the LISTEN connection to %s (%s); reconnecting, workers "
                        "poll meanwhile",
                        self.url,
                        str(exc).strip(),
                    )
                self._closed.wait(delay)
                delay = min(delay * 2, 10.0)


def _outcome_params(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """The arrays the OUTCOMES statement unnests, one element per outcome."""
    return {
        "ids": [o.lease.job_id for o in outcomes],
        "tokens": [o.lease.token for o in outcomes],
        "kinds": [o.kind.value for o in outcomes],
        "results": [o.result_json for o in outcomes],
        "run_ats": [o.run_at for o in outcomes],
        "delays": [o.delay if o.delay is not None else timedelta(0) for o in outcomes],
        "errors": [attempt_errors.to_json(o.error) if o.error else None for o in outcomes],
    }


def _array_item(tag: str) -> str:
    return '"' + tag.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _new_record(job_id: int, nj: NewJob, row: Sequence[Any]) -> JobRecord:
    _, state, run_at, created_at = row
    return JobRecord(
        id=job_id,
        queue=nj.queue,
        task=nj.task,
        args_json=nj.args_json,
        kwargs_json=nj.kwargs_json,
        priority=nj.priority,
        deadline=_utc(nj.deadline),
        run_at=run_at.astimezone(UTC),
        attempt=0,
        max_attempts=nj.max_attempts,
        timeout=nj.timeout,
        unique_key=nj.unique_key,
        tags=nj.tags,
        state=JobState(state),
        worker_id=None,
        lease_token=None,
        leased_until=None,
        result_json=None,
        errors=(),
        created_at=created_at.astimezone(UTC),
        started_at=None,
        finished_at=None,
    )
