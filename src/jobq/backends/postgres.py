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
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import psycopg
import psycopg_pool
from psycopg import sql

from jobq.backends import attempt_errors
from jobq.backends.base import JobFilter, Lease, NewJob, Outcome
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
    InvalidTransition,
    JobNotFound,
    SchemaVersionError,
    UniqueConflict,
)
from jobq.job import JobRecord
from jobq.states import ACTIVE_STATES, TERMINAL_STATES, Action, JobState, sources, state_list_sql

log = logging.getLogger("jobq.postgres")

_OWN_OPTIONS = {"schema", "pool_size", "pool_timeout"}
_COLUMNS = (
    "id, queue, task, args, kwargs, priority, deadline, run_at, attempt, max_attempts, timeout, "
    "unique_key, tags, state, worker_id, lease_token, leased_until, result, errors, created_at, "
    "started_at, finished_at"
)
_ORDER = "eff_priority DESC, deadline ASC NULLS LAST, run_at, id"
_NOW = "coalesce(%(now)s::timestamptz, now())"


def parse_postgres_url(url: str) -> tuple[str, str, int, float]:
    """Split a URL into (libpq conninfo URL, schema, pool size, pool timeout in seconds)."""
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
    conninfo = parts._replace(scheme="postgresql", query=urlencode(rest)).geturl()
    return conninfo, schema, pool_size, pool_timeout


def redact(url: str) -> str:
    from jobq.backends import redact_url

    return redact_url(url)


def _utc(dt: datetime | None) -> datetime | None:
    return None if dt is None else dt.astimezone(UTC)


def _row_to_record(row: Sequence[Any]) -> JobRecord:
    (id_, queue, task, args, kwargs, priority, deadline, run_at, attempt, max_attempts, timeout,
     unique_key, tags, state, worker_id, lease_token, leased_until, result, errors, created_at,
     started_at, finished_at) = row[:22]  # fmt: skip
    return JobRecord(
        id=id_, queue=queue, task=task, args_json=args, kwargs_json=kwargs, priority=priority,
        deadline=_utc(deadline), run_at=run_at.astimezone(UTC), attempt=attempt,
        max_attempts=max_attempts, timeout=timeout, unique_key=unique_key, tags=tuple(tags),
        state=JobState(state), worker_id=worker_id, lease_token=lease_token,
        leased_until=_utc(leased_until), result_json=result,
        errors=attempt_errors.from_items(errors), created_at=created_at.astimezone(UTC),
        started_at=_utc(started_at), finished_at=_utc(finished_at),
    )  # fmt: skip


class PostgresBackend:
    """A job store in one PostgreSQL schema, shared by workers on any number of machines."""

    def __init__(self, url: str) -> None:
        self.url = redact(url)
        self._conninfo, self.schema, pool_size, pool_timeout = parse_postgres_url(url)
        self._t = sql.SQL("{}.jobq_jobs").format(sql.Identifier(self.schema))
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
            reconnect_timeout=0,
        )
        try:
            # One direct connection first: a refused or unknown server fails now, with libpq's
            # own reason, instead of after the pool's timeout.
            with psycopg.connect(self._conninfo, connect_timeout=max(1, int(pool_timeout))) as c:
                if current_version(c, self.schema) != SCHEMA_VERSION:
                    c.rollback()
                    migrate(c, self.schema)
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
        with self._tx(connection) as cur:
            cur.execute(
                "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)",
                (f"{self.schema}.jobq_jobs", len(jobs)),
            )
            ids = [r[0] for r in cur.fetchall()]
            cur.execute(self._q(_INSERT), {
                "now": now,
                "id": ids,
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
            })  # fmt: skip
            inserted = {r[0]: r for r in cur.fetchall()}
            records: list[JobRecord] = []
            for job_id, nj in zip(ids, jobs, strict=True):
                row = inserted.get(job_id)
                if row is not None:
                    records.append(_new_record(job_id, nj, row))
                    continue
                cur.execute(
                    self._q(
                        f"SELECT {_COLUMNS} FROM {{t}} WHERE unique_key = %s AND state IN "
                        f"({state_list_sql(ACTIVE_STATES)})"
                    ),
                    (nj.unique_key,),
                )
                existing = cur.fetchone()
                if existing is None:  # pragma: no cover - the conflicting job just finished
                    raise UniqueConflict(
                        f"unique_key {nj.unique_key!r} was held by a job that finished while "
                        "this one was enqueued; enqueue again"
                    )
                records.append(_row_to_record(existing))
            queues = sorted({r.queue for r in records if r.state is JobState.AVAILABLE})
            for queue in queues:  # delivered on commit: no worker looks before the job exists
                cur.execute("SELECT pg_notify(%s, %s)", (self.channel, queue))
        if connection is None and queues:
            self._bump()
        return records

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
        return self.record_and_claim((), queues, limit, worker_id=worker_id, lease=lease,
                                     queue_order=queue_order, now=now)[1]  # fmt: skip

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
        with self._tx() as cur:
            done = self._record_in(cur, outcomes, now) if outcomes else set()
            if limit <= 0 or not queues:
                return done, []
            cur.execute(self._q(_CLAIM_ORDERED if queue_order else _CLAIM), {
                "queues": list(queues), "limit": limit, "worker": worker_id, "lease": lease,
                "now": now,
            })  # fmt: skip
            rows = cur.fetchall()
        rank_key = (lambda r: r[22]) if queue_order else (lambda r: 0)
        rows.sort(key=lambda r: (rank_key(r), -r[23], r[6] is None, r[6] or r[7], r[7], r[0]))
        return done, [_row_to_record(r) for r in rows]

    def heartbeat(self, leases: Sequence[Lease], *, lease: timedelta,
                  now: datetime | None = None) -> set[int]:  # fmt: skip
        if not leases:
            return set()
        with self._tx() as cur:
            cur.execute(self._q(_HEARTBEAT), {
                "ids": [x.job_id for x in leases], "tokens": [x.token for x in leases],
                "lease": lease, "now": now,
            })  # fmt: skip
            return {r[0] for r in cur.fetchall()}

    def record_outcomes(self, outcomes: Sequence[Outcome], *, now: datetime | None = None
                        ) -> set[int]:  # fmt: skip
        if not outcomes:
            return set()
        with self._tx() as cur:
            return self._record_in(cur, outcomes, now)

    def _record_in(self, cur: psycopg.Cursor[Any], outcomes: Sequence[Outcome],
                   now: datetime | None) -> set[int]:  # fmt: skip
        cur.execute(self._q(_OUTCOMES), {
            "now": now,
            "ids": [o.lease.job_id for o in outcomes],
            "tokens": [o.lease.token for o in outcomes],
            "kinds": [o.kind.value for o in outcomes],
            "results": [o.result_json for o in outcomes],
            "run_ats": [o.run_at for o in outcomes],
            "delays": [o.delay if o.delay is not None else timedelta(0) for o in outcomes],
            "errors": [attempt_errors.to_json(o.error) if o.error else None for o in outcomes],
        })  # fmt: skip
        done = {r[0] for r in cur.fetchall()}
        for o in outcomes:
            if o.lease.job_id not in done:
                log.warning(
                    "job %s: outcome %s not recorded: its lease %s is no longer held "
                    "(expired and rescued, cancelled, or claimed again)",
                    o.lease.job_id, o.kind.value, o.lease.token,
                )  # fmt: skip
        return done

    def release(self, leases: Sequence[Lease], *, now: datetime | None = None) -> set[int]:
        if not leases:
            return set()
        with self._tx() as cur:
            cur.execute(self._q(_RELEASE), {
                "ids": [x.job_id for x in leases], "tokens": [x.token for x in leases],
            })  # fmt: skip
            done = {r[0] for r in cur.fetchall()}
            if done:
                cur.execute("SELECT pg_notify(%s, '')", (self.channel,))
        return done

    # -- operator actions --------------------------------------------------------------------

    def cancel(self, job_id: int, *, now: datetime | None = None) -> tuple[bool, JobRecord]:
        with self._tx() as cur:
            cur.execute(self._q(_CANCEL), {"id": job_id, "now": now})
            row = cur.fetchone()
            if row is not None:
                return True, _row_to_record(row)
            cur.execute(self._q(f"SELECT {_COLUMNS} FROM {{t}} WHERE id = %s"), (job_id,))
            current = cur.fetchone()
        if current is None:
            raise JobNotFound(f"no job with id {job_id}")
        return False, _row_to_record(current)

    def retry(self, job_id: int, *, now: datetime | None = None) -> JobRecord:
        try:
            with self._tx() as cur:
                cur.execute(self._q(_RETRY), {"id": job_id, "now": now})
                row = cur.fetchone()
                if row is not None:
                    cur.execute("SELECT pg_notify(%s, %s)", (self.channel, row[1]))
                    return _row_to_record(row)
                cur.execute(self._q("SELECT state FROM {t} WHERE id = %s"), (job_id,))
                current = cur.fetchone()
        except psycopg.errors.UniqueViolation:
            raise UniqueConflict(
                f"job {job_id} cannot be retried: another active job holds its unique_key"
            ) from None
        if current is None:
            raise JobNotFound(f"no job with id {job_id}")
        raise InvalidTransition(
            f"job {job_id} is {current[0]}; only completed, dead, cancelled or expired jobs can "
            "be retried (cancel it first to stop it)"
        )

    # -- maintenance -------------------------------------------------------------------------

    def _count(self, template: str, params: dict[str, Any]) -> int:
        with self._tx() as cur:
            cur.execute(self._q(template), params)
            n = cur.rowcount
            if n > 0 and template is _PROMOTE:
                cur.execute("SELECT pg_notify(%s, '')", (self.channel,))
            return max(n, 0)

    def promote_due(self, *, now: datetime | None = None) -> int:
        return self._count(_PROMOTE, {"now": now})

    def rescue_expired(self, *, now: datetime | None = None) -> int:
        return self._count(_RESCUE, {"now": now})

    def age(self, *, every: timedelta, max_boost: int, now: datetime | None = None) -> int:
        if every <= timedelta(0) or max_boost <= 0:
            return 0
        return self._count(_AGE, {"now": now, "every": every.total_seconds(),
                                  "max_boost": max_boost})  # fmt: skip

    def prune(self, *, older_than: timedelta, states: frozenset[JobState],
              now: datetime | None = None, limit: int = 10_000) -> int:  # fmt: skip
        finished = states & TERMINAL_STATES
        if not finished:
            return 0
        return self._count(
            f"DELETE FROM {{t}} WHERE id IN (SELECT id FROM {{t}} WHERE state IN "
            f"({state_list_sql(finished)}) AND finished_at < {_NOW} - %(older)s LIMIT %(limit)s)",
            {"now": now, "older": older_than, "limit": limit},
        )

    def next_due(self) -> datetime | None:
        with self._tx() as cur:
            cur.execute(self._q("SELECT min(run_at) FROM {t} WHERE state = 'scheduled'"))
            row = cur.fetchone()
        return _utc(row[0]) if row else None

    def try_lead(self) -> bool:
        """Whether this process is the maintenance leader, becoming it if no one is.

        Leadership is a session advisory lock held on a dedicated connection; it ends when that
        session ends (process death, network loss), and another process then takes over.
        """
        with self._lock:
            conn = self._leader
            try:
                if conn is None or conn.closed:
                    conn = self._leader = psycopg.connect(self._conninfo, autocommit=True,
                                                          connect_timeout=5)  # fmt: skip
                    row = conn.execute("SELECT pg_try_advisory_lock(%s)",
                                       (self._lead_key,)).fetchone()  # fmt: skip
                    if not (row and row[0]):
                        conn.close()
                        self._leader = None
                        return False
                    log.info("this process is now the maintenance leader for schema %s",
                             self.schema)  # fmt: skip
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
            cur.execute(self._q(f"SELECT {_COLUMNS} FROM {{t}} WHERE id = %s"), (job_id,))
            row = cur.fetchone()
        return _row_to_record(row) if row else None

    def list_jobs(self, filter: JobFilter, *, limit: int = 50, before_id: int | None = None
                  ) -> list[JobRecord]:  # fmt: skip
        with self._tx() as cur:
            cur.execute(self._q(_LIST), {
                "queue": filter.queue, "task": filter.task,
                "state": filter.state.value if filter.state else None,
                "before": before_id, "limit": max(0, limit),
            })  # fmt: skip
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
                self._listener = threading.Thread(target=self._listen, name="jobq-listen",
                                                  daemon=True)  # fmt: skip
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
                with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5) as conn:
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
                    log.warning("lost the LISTEN connection to %s (%s); reconnecting, workers "
                                "poll meanwhile", self.url, str(exc).strip())  # fmt: skip
                self._closed.wait(delay)
                delay = min(delay * 2, 10.0)


def _array_item(tag: str) -> str:
    return '"' + tag.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _new_record(job_id: int, nj: NewJob, row: Sequence[Any]) -> JobRecord:
    _, state, run_at, created_at = row
    return JobRecord(
        id=job_id, queue=nj.queue, task=nj.task, args_json=nj.args_json,
        kwargs_json=nj.kwargs_json, priority=nj.priority, deadline=_utc(nj.deadline),
        run_at=run_at.astimezone(UTC), attempt=0, max_attempts=nj.max_attempts,
        timeout=nj.timeout, unique_key=nj.unique_key, tags=nj.tags, state=JobState(state),
        worker_id=None, lease_token=None, leased_until=None, result_json=None, errors=(),
        created_at=created_at.astimezone(UTC), started_at=None, finished_at=None,
    )  # fmt: skip


_INSERT = f"""
INSERT INTO {{t}} AS j (id, queue, task, args, kwargs, priority, eff_priority, deadline, run_at,
                       max_attempts, timeout, unique_key, tags, state, created_at)
SELECT n.id, n.queue, n.task, n.args, n.kwargs, n.priority, n.priority, n.deadline,
       coalesce(n.run_at, {_NOW} + coalesce(n.delay, interval '0')),
       n.max_attempts, n.timeout, n.unique_key, n.tags::text[],
       CASE WHEN coalesce(n.run_at, {_NOW} + coalesce(n.delay, interval '0')) > {_NOW}
            THEN 'scheduled' ELSE 'available' END,
       {_NOW}
FROM unnest(%(id)s::bigint[], %(queue)s::text[], %(task)s::text[], %(args)s::text[],
            %(kwargs)s::text[], %(priority)s::int[], %(deadline)s::timestamptz[],
            %(run_at)s::timestamptz[], %(delay)s::interval[], %(max_attempts)s::int[],
            %(timeout)s::interval[], %(unique_key)s::text[], %(tags)s::text[])
     AS n(id, queue, task, args, kwargs, priority, deadline, run_at, delay, max_attempts,
          timeout, unique_key, tags)
ORDER BY n.id
ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL
    AND state IN ('scheduled', 'blocked', 'available', 'running') DO NOTHING
RETURNING j.id, j.state, j.run_at, j.created_at
"""

_CANDIDATES = f"""
WITH served AS (
    SELECT queue, rank FROM unnest(%(queues)s::text[]) WITH ORDINALITY AS s(queue, rank)
), candidates AS (
    SELECT c.id, s.rank
    FROM served s CROSS JOIN LATERAL (
        SELECT id, eff_priority, deadline, run_at FROM {{t}}
        WHERE state = 'available' AND queue = s.queue
        ORDER BY {_ORDER}
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    ) c
    ORDER BY {{first}}c.eff_priority DESC, c.deadline ASC NULLS LAST, c.run_at, c.id
    LIMIT %(limit)s
)
UPDATE {{t}} AS j
SET state = 'running', attempt = j.attempt + 1, worker_id = %(worker)s,
    lease_token = left(md5(random()::text || j.id::text), 16),
    leased_until = {_NOW} + %(lease)s, started_at = {_NOW}
FROM candidates c
WHERE j.id = c.id
RETURNING {", ".join("j." + c.strip() for c in _COLUMNS.split(","))}, c.rank, j.eff_priority
"""
_CLAIM = _CANDIDATES.replace("{first}", "")
_CLAIM_ORDERED = _CANDIDATES.replace("{first}", "s.rank, ")

_HEARTBEAT = f"""
UPDATE {{t}} AS j SET leased_until = {_NOW} + %(lease)s
FROM unnest(%(ids)s::bigint[], %(tokens)s::text[]) AS l(id, token)
WHERE j.id = l.id AND j.lease_token = l.token AND j.state = 'running'
RETURNING j.id
"""

_TERMINAL_KINDS = "('completed', 'dead', 'cancelled', 'expired')"
_NEXT_RUN = f"coalesce(o.run_at, {_NOW} + o.delay)"
_OUTCOMES = f"""
UPDATE {{t}} AS j SET
    state = CASE WHEN o.kind IN {_TERMINAL_KINDS} THEN o.kind
                 WHEN {_NEXT_RUN} > {_NOW} THEN 'scheduled' ELSE 'available' END,
    result = CASE WHEN o.kind = 'completed' THEN o.result ELSE j.result END,
    finished_at = CASE WHEN o.kind IN {_TERMINAL_KINDS} THEN {_NOW} ELSE j.finished_at END,
    run_at = CASE WHEN o.kind IN ('retry', 'snoozed') THEN {_NEXT_RUN} ELSE j.run_at END,
    eff_priority = CASE WHEN o.kind IN ('retry', 'snoozed') THEN j.priority
                        ELSE j.eff_priority END,
    max_attempts = j.max_attempts + CASE WHEN o.kind = 'snoozed' THEN 1 ELSE 0 END,
    leased_until = NULL,
    errors = CASE WHEN o.error IS NULL THEN j.errors
                  ELSE j.errors || jsonb_build_array(o.error::jsonb) END
FROM unnest(%(ids)s::bigint[], %(tokens)s::text[], %(kinds)s::text[], %(results)s::text[],
            %(run_ats)s::timestamptz[], %(delays)s::interval[], %(errors)s::text[])
     AS o(id, token, kind, result, run_at, delay, error)
WHERE j.id = o.id AND j.lease_token = o.token AND j.state = 'running'
RETURNING j.id
"""

_RELEASE = """
UPDATE {t} AS j SET state = 'available', attempt = greatest(j.attempt - 1, 0),
    worker_id = NULL, leased_until = NULL, started_at = NULL
FROM unnest(%(ids)s::bigint[], %(tokens)s::text[]) AS l(id, token)
WHERE j.id = l.id AND j.lease_token = l.token AND j.state = 'running'
RETURNING j.id
"""

_CANCEL = f"""
UPDATE {{t}} SET state = 'cancelled', finished_at = {_NOW}, leased_until = NULL,
    errors = errors || jsonb_build_array(jsonb_build_object(
        'attempt', 0, 'at', (extract(epoch FROM {_NOW}) * 1000000)::bigint,
        'type', 'Cancelled', 'message', 'cancelled through the API', 'traceback', NULL))
WHERE id = %(id)s AND state IN ({state_list_sql(sources(Action.CANCEL))})
RETURNING {_COLUMNS}
"""

_RETRY = f"""
UPDATE {{t}} SET state = 'available', run_at = {_NOW}, eff_priority = priority,
    max_attempts = greatest(max_attempts, attempt + 1), finished_at = NULL, result = NULL,
    worker_id = NULL, leased_until = NULL
WHERE id = %(id)s AND state IN ({state_list_sql(sources(Action.MANUAL_RETRY))})
RETURNING {_COLUMNS}
"""

_PROMOTE = f"""
UPDATE {{t}} SET state = 'available', eff_priority = priority
WHERE state = 'scheduled' AND run_at <= {_NOW}
"""

_RESCUE = f"""
UPDATE {{t}} SET
    state = CASE WHEN attempt >= max_attempts THEN 'dead' ELSE 'available' END,
    finished_at = CASE WHEN attempt >= max_attempts THEN {_NOW} END,
    leased_until = NULL, eff_priority = priority,
    errors = errors || jsonb_build_array(jsonb_build_object(
        'attempt', attempt, 'at', (extract(epoch FROM {_NOW}) * 1000000)::bigint,
        'type', 'WorkerLost',
        'message', 'worker ' || coalesce(worker_id, '?') || ' lost its lease (crashed, killed, '
                   || 'hung or cut off from the database)',
        'traceback', NULL))
WHERE state = 'running' AND leased_until < {_NOW}
"""

_BOOST = f"least(%(max_boost)s, floor(extract(epoch FROM {_NOW} - run_at) / %(every)s))::int"
_AGE = f"""
UPDATE {{t}} SET eff_priority = priority + {_BOOST}
WHERE state = 'available' AND run_at <= {_NOW} - make_interval(secs => %(every)s)
  AND eff_priority < priority + {_BOOST}
"""

_LIST = f"""
SELECT {_COLUMNS} FROM {{t}}
WHERE (%(queue)s::text IS NULL OR queue = %(queue)s)
  AND (%(task)s::text IS NULL OR task = %(task)s)
  AND (%(state)s::text IS NULL OR state = %(state)s)
  AND (%(before)s::bigint IS NULL OR id < %(before)s)
ORDER BY id DESC LIMIT %(limit)s
"""
