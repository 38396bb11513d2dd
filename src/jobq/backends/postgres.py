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

Flow control, and what it costs the hot path (nothing in round trips, unless it is used):

* A plain enqueue stays one statement. If a queue of the call has a ``max_depth``, that
  statement inserts nothing and the call takes the general path, which counts the queue's
  waiting jobs first (approximate when producers race: each counts what it can see, so two
  racing producers may both pass a limit that only one of them fits under).
* Unique windows, ``replace``/``raise`` and dependencies take the general path: one
  transaction that holds a transaction-level advisory lock on each unique key's hash (racing
  producers on one key are serialised; the unique partial index stays the arbiter of the
  active states, and a producer that still loses a race to a plain enqueue plans again), and
  locks the dependencies' and holders' rows (``FOR UPDATE``) before reading their states.
* Limited jobs (a concurrency or rate key; ``limit_group`` names the pair) stay out of the
  regular claim index. The claim statement probes whether any wait in the served queues (an
  index probe that finds nothing when none do) and, if some do, claims nothing; the backend
  then remembers that those queues have limited jobs and uses the full claim statement, which
  also asks whether one is within its limits (skipping from limit group to limit group, so a
  long backlog at its limit costs one index probe per blocked group, not per job) and claims
  unlimited jobs as usual when none is. Only when one is does the backend claim in a
  transaction that first takes ``pg_advisory_xact_lock`` on a per-schema constant, in a
  statement of its own, so that the next statement (READ COMMITTED) sees every earlier
  limited claim: limited jobs chosen by :func:`select_limited` first, then unlimited jobs for
  the remaining slots. Rate limits count the starts logged in ``jobq_rate_starts``.
* Paused queues are left out of every claim statement (a lookup in ``jobq_queues``).
* Dependencies are edges in ``jobq_deps`` indexed by the dependency, plus a ``has_dependents``
  flag on the dependency's row. A transition that finishes a flagged job resolves its
  dependents in the same transaction, in a statement after it (so it sees edges that a
  producer committed while the finishing statement waited for that row's lock). The
  one-statement outcome+claim leaves flagged jobs out and records them in such a transaction
  instead (then claims again if that made dependents available). Producers set the flag
  while holding the dependency's row lock, so no edge is missed.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import select
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
from psycopg import pq, sql
from psycopg.pq import TransactionStatus
from psycopg.rows import tuple_row

from jobq.backends import attempt_errors
from jobq.backends import pg_arrays as arrays
from jobq.backends import postgres_sql as q
from jobq.backends.base import (
    WORKER_LOST,
    WORKER_LOST_DEAD,
    JobFilter,
    Lease,
    NewJob,
    Outcome,
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
    SchemaVersionError,
    UniqueConflict,
)
from jobq.job import AttemptError, JobRecord
from jobq.states import ACTIVE_STATES, TERMINAL_STATES, JobState, state_list_sql, state_of

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
        concurrency_key,
        rate_key,
        depends_on,
        allow_failed,
        progress,
        progress_message,
        secret,
        lost,
    ) = row[: q.NCOLS]
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
        state=state_of(state),
        worker_id=worker_id,
        lease_token=lease_token,
        leased_until=_utc(leased_until),
        result_json=result,
        errors=attempt_errors.from_text(errors),
        created_at=created_at.astimezone(UTC),
        started_at=_utc(started_at),
        finished_at=_utc(finished_at),
        concurrency_key=concurrency_key,
        rate_key=rate_key,
        depends_on=tuple(depends_on),
        allow_failed=allow_failed,
        progress=progress,
        progress_message=progress_message,
        secret=tuple(secret),
        lost=lost,
    )


_TERMINAL = frozenset(s.value for s in TERMINAL_STATES)

#: Indexes of claim rows' extra columns: the served queue's rank and the effective priority.
_RANK, _EFF = q.NCOLS, q.NCOLS + 1


def _claim_order(queue_order: bool) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
    """Sort key of claimed rows: DESIGN §4 order (after the queue's rank with queue_order)."""

    def key(r: Sequence[Any]) -> tuple[Any, ...]:
        rank = r[_RANK] if queue_order else 0
        return (rank, -r[_EFF], r[6] is None, r[6] or r[7], r[7], r[0])

    return key


class _LostRace(Exception):
    """A concurrent producer committed a job this enqueue did not see; plan it again."""


@dataclass(slots=True)
class _Planned:
    """A job the general enqueue path will insert."""

    id: int
    job: NewJob
    state: str
    run_at: datetime
    depends_on: list[int]
    pending: int
    error: AttemptError | None = None
    has_dependents: bool = False


def _is_simple(job: NewJob) -> bool:
    """Whether one statement can enqueue ``job`` (the hot path)."""
    return (
        not job.depends_on
        and not job.depends_on_batch
        and job.unique_window is None
        and (job.unique_key is None or job.on_conflict == "skip")
    )


def _key_hash(key: str) -> int:
    """A unique key's advisory-lock key (a signed 32-bit int)."""
    return zlib.crc32(key.encode()) - 2**31


def _like_pattern(text: str | None) -> str | None:
    """An ILIKE pattern matching ``text`` as a plain substring (``\\`` escapes)."""
    if text is None:
        return None
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _filter_params(filter: JobFilter) -> dict[str, Any]:
    return {
        "queue": filter.queue,
        "task": filter.task,
        "state": filter.state.value if filter.state else None,
        "search": _like_pattern(filter.search),
    }


# The dependency-failed message with markers the RESOLVE statement fills in.
_DEP_MARK, _STATE_MARK = "{dependency}", "{state}"
_DEP_FAILED_TEMPLATE = (
    dependency_failed(987654321, "\x00", 0, datetime(2000, 1, 1, tzinfo=UTC))
    .message.replace("987654321", _DEP_MARK)
    .replace("\x00", _STATE_MARK)
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
        self._tables = {
            key: sql.Identifier(self.schema, name)
            for key, name in (
                ("t", "jobq_jobs"),
                ("d", "jobq_deps"),
                ("qs", "jobq_queues"),
                ("rs", "jobq_rate_starts"),
                ("ct", "jobq_cron_ticks"),
                ("lk", "jobq_locks"),
            )
        }
        self._seq = ""  # the jobs' id sequence, resolved once the schema exists
        self.channel = f"jobq_{self.schema}"
        self._lead_key = zlib.crc32(f"jobq-leader:{self.schema}".encode()) & 0x7FFFFFFF
        #: serialises limited claims across every process (a transaction-level lock)
        self._limits_key = zlib.crc32(f"jobq-limits:{self.schema}".encode()) & 0x7FFFFFFF
        #: first half of the (namespace, key hash) advisory locks on unique keys
        self._unique_ns = zlib.crc32(f"jobq-unique:{self.schema}".encode()) & 0x7FFFFFFF
        self._sql_cache: dict[str, sql.Composed] = {}
        self._sized_cache: dict[tuple[str, int], sql.Composed] = {}
        #: queue lists whose last claim saw limited jobs waiting (see _note_limited)
        self._limited_seen: set[tuple[str, ...]] = set()
        self._lock = threading.Lock()
        self._subscribers: list[Callable[[], None]] = []
        self._changes = 0
        self._listener: threading.Thread | None = None
        self._leader: psycopg.Connection[Any] | None = None
        self._closed = threading.Event()
        self._pool = self._new_pool("jobq", pool_size, pool_timeout)
        #: the claims' own connections, opened on the first claim (see _claims)
        self._claim_pool: psycopg_pool.ConnectionPool[Any] | None = None
        self._prepared = opts.prepared_statements
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

    def _new_pool(
        self,
        name: str,
        size: int,
        timeout: float,
        configure: Callable[[psycopg.Connection[Any]], None] | None = None,
    ) -> psycopg_pool.ConnectionPool[Any]:
        return psycopg_pool.ConnectionPool(
            self._conninfo,
            min_size=1,
            max_size=size,
            timeout=timeout,
            open=False,
            name=name,
            check=_pool_check,
            configure=configure,
            # autocommit: a single statement is its own transaction (one round trip); every
            # multi-statement operation opens an explicit transaction()
            kwargs={"autocommit": True, **self._connect_kwargs},
        )

    def _claims(self) -> psycopg_pool.ConnectionPool[Any]:
        """The pool (of one connection) the hot claim statements run on (q.CLAIM*,
        q.EXCHANGE*).

        PostgreSQL reuses one plan per connection for them (see postgres_sql, "Plan reuse"),
        made with the table as it was then: on a small table, reading all of it looks cheaper
        than an index, and the plan would keep reading all of it as the table grows, until an
        ANALYZE. These sessions plan with sequential scans off, so the claims reach rows
        through their indexes whatever the table's size when the plan was made (each of their
        row sources has an index; nothing else runs there). One connection: a worker's
        coordinator claims one batch at a time, and a pool of idle spares would, after the
        server cut its sessions, cost a failed check and a back-off per dead spare. Without
        prepared statements nothing is reused, and the claims share the main pool."""
        pool = self._claim_pool
        if pool is not None:
            return pool
        if not self._prepared:
            return self._pool
        with self._lock:
            if self._claim_pool is None:
                if self._closed.is_set():
                    raise BackendError(f"the PostgreSQL backend for {self.url} is closed")
                pool = self._new_pool(
                    "jobq-claims",
                    1,
                    self._pool.timeout,
                    configure=_claim_session,
                )
                pool.open()
                self._claim_pool = pool
            return self._claim_pool

    def _q(self, template: str) -> sql.Composed:
        """A statement with ``{t}`` (jobs) and the other tables bound to this schema (cached)."""
        composed = self._sql_cache.get(template)
        if composed is None:
            composed = sql.SQL(compact_sql(template)).format(**self._tables)
            self._sql_cache[template] = composed
        return composed

    def _sized(self, template: str, limit: int) -> sql.Composed:
        """A claim statement with its LIMIT written in (``q.CLAIM_LIMIT``), so that the plan
        PostgreSQL caches for it is reused (see postgres_sql, "Plan reuse"). Cached per size."""
        key = (template, limit)
        composed = self._sized_cache.get(key)
        if composed is None:
            composed = self._q(template.replace(q.CLAIM_LIMIT, str(int(limit))))
            self._sized_cache[key] = composed
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
                # tuples whatever row factory the application gave its connection
                with connection.cursor(row_factory=tuple_row) as cur:
                    yield cur
                return
            with _lend(self._pool) as conn, conn.transaction(), conn.cursor() as cur:
                yield cur
        except psycopg.errors.TransactionRollback as exc:  # deadlock: not a lost connection
            raise BackendError(
                f"PostgreSQL at {self.url} aborted a transaction caught in a deadlock with "
                f"another one; nothing of it was written, try again: {str(exc).strip()}"
            ) from exc
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
            raise BackendError(
                f"PostgreSQL at {self.url} is unreachable or dropped the connection: "
                f"{str(exc).strip()}"
            ) from exc

    def schema_version(self) -> int:
        with _lend(self._pool) as conn:
            return current_version(conn, self.schema)

    def close(self) -> None:
        self._closed.set()
        if self._listener is not None:
            self._listener.join(5)
        with self._lock:
            leader, self._leader = self._leader, None
        if leader is not None:
            leader.close()
        with self._lock:
            claims, self._claim_pool = self._claim_pool, None
        if claims is not None:
            claims.close()
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
        if connection is None and all(_is_simple(j) for j in jobs):
            # the hot path: one statement, atomic on its own (autocommit)
            if len(jobs) >= COPY_MIN and all(j.unique_key is None for j in jobs):
                simple = self._enqueue_copy(jobs, now)
            else:
                if len(jobs) == 1:
                    one = q.ENQUEUE_ONE if jobs[0].unique_key is not None else q.ENQUEUE_ONE_PLAIN
                    rows = self._one_round_trip(
                        self._q(one), self._enqueue_params(jobs, now, one=True)
                    )
                else:
                    rows = self._one_round_trip(self._q(q.ENQUEUE), self._enqueue_params(jobs, now))
                simple = self._simple_records(rows, jobs, None)
            if simple is None:  # a queue with a max_depth: counted on the general path
                with self._tx() as cur:
                    simple = self._enqueue_in(cur, jobs, now, general=True)
            records = simple
        elif connection is None:
            with self._tx() as cur:
                records = self._enqueue_in(cur, jobs, now)
        else:
            with self._tx(connection) as cur:
                records = self._enqueue_in(cur, jobs, now)
        if connection is None and any(r.state is JobState.AVAILABLE for r in records):
            self._bump()
        return records

    def _enqueue_copy(self, jobs: Sequence[NewJob], now: datetime | None) -> list[JobRecord] | None:
        """Plain jobs (no unique keys, no dependencies) with COPY, in one transaction; None,
        having written nothing, if a queue of the call has a max_depth (the general path
        counts). The rows are what ENQUEUE would write: run_at and state from the
        database's time, ids in list order."""
        queues = sorted({j.queue for j in jobs})
        with self._tx() as cur:
            start = cur.execute(
                self._q(q.COPY_START),
                {"now": now, "seq": self._seq, "n": len(jobs), "queues": arrays.texts(queues)},
            ).fetchone()
            assert start is not None
            at, ids, bounded = start
            if bounded:
                return None
            records: list[JobRecord] = []
            woken: set[str] = set()
            with cur.copy(self._q(q.COPY_JOBS)) as copy:
                for job_id, nj in zip(ids, jobs, strict=True):
                    run_at = nj.run_at if nj.run_at is not None else at + (nj.delay or _ZERO)
                    state = "scheduled" if run_at > at else "available"
                    if state == "available":
                        woken.add(nj.queue)
                    ckey, rkey = nj.concurrency_key, nj.rate_key
                    copy.write_row(
                        (
                            job_id,
                            nj.queue,
                            nj.task,
                            nj.args_json,
                            nj.kwargs_json,
                            nj.priority,
                            nj.priority,
                            nj.deadline,
                            run_at,
                            nj.max_attempts,
                            nj.timeout,
                            list(nj.tags),
                            state,
                            at,
                            ckey,
                            nj.concurrency_limit,
                            rkey,
                            nj.rate_limit,
                            nj.rate_period,
                            None
                            if ckey is None and rkey is None
                            else f"{ckey or ''}\x1f{rkey or ''}",
                            list(nj.secret),
                        )
                    )
                    records.append(_new_record(job_id, nj, (job_id, state, run_at, at)))
            if woken:
                cur.execute(
                    self._q(q.NOTIFY_QUEUES),
                    {"channel": self.channel, "queues": arrays.texts(sorted(woken))},
                )
        return records

    def _enqueue_params(
        self, jobs: Sequence[NewJob], now: datetime | None, one: bool = False
    ) -> dict[str, Any]:
        """The ENQUEUE statement's parameters: an array literal per column, or with ``one``
        the ENQUEUE_ONE statement's scalars."""
        params: dict[str, Any] = {"now": now, "seq": self._seq, "channel": self.channel}
        if one:
            params.update(zip(_ENQUEUE_ARRAY, _enqueue_row(jobs[0]), strict=True))
        else:
            columns = zip(*map(_enqueue_row, jobs), strict=True)
            params.update(
                (name, encode(list(values)))
                for (name, encode), values in zip(_ENQUEUE_ARRAY.items(), columns, strict=True)
            )
        return params

    def _one_round_trip(
        self,
        query: sql.Composed,
        params: dict[str, Any],
        pool: psycopg_pool.ConnectionPool[Any] | None = None,
    ) -> list[Any]:
        """One statement, atomic on its own (autocommit): the rows it returns."""
        if self._closed.is_set():
            raise BackendError(f"the PostgreSQL backend for {self.url} is closed")
        try:
            with _lend(pool or self._pool) as conn:
                rows: list[Any] = conn.execute(query, params).fetchall()
                return rows
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
            raise BackendError(
                f"PostgreSQL at {self.url} is unreachable or dropped the connection: "
                f"{str(exc).strip()}"
            ) from exc

    def _simple_records(
        self, rows: list[Any], jobs: Sequence[NewJob], cur: psycopg.Cursor[Any] | None
    ) -> list[JobRecord] | None:
        """Records from the ENQUEUE statement's rows; None if it inserted nothing because a
        queue of the call has a max_depth (the general path counts)."""
        if rows and rows[0][5]:
            return None
        records: list[JobRecord] = []
        for (job_id, state, run_at, created_at, *_), nj in zip(rows, jobs, strict=True):
            if state is not None:
                records.append(_new_record(job_id, nj, (job_id, state, run_at, created_at)))
            else:  # another active job holds its unique_key: that job stands in for it
                records.append(self._unique_holder(nj, cur))
        return records

    def _unique_holder(self, nj: NewJob, cur: psycopg.Cursor[Any] | None) -> JobRecord:
        query = self._q(
            f"SELECT {q.COLUMNS} FROM {{t}} WHERE unique_key = %(key)s AND state IN "
            f"({state_list_sql(ACTIVE_STATES)})"
        )
        if cur is None:
            found = self._one_round_trip(query, {"key": nj.unique_key})
        else:
            cur.execute(query, {"key": nj.unique_key})
            found = cur.fetchall()
        if not found:  # pragma: no cover - the conflicting job just finished
            raise UniqueConflict(
                f"unique_key {nj.unique_key!r} was held by a job that finished while this one "
                "was enqueued; enqueue again"
            )
        return _row_to_record(found[0])

    def _enqueue_in(
        self,
        cur: psycopg.Cursor[Any],
        jobs: Sequence[NewJob],
        now: datetime | None,
        *,
        general: bool = False,
    ) -> list[JobRecord]:
        """Enqueue in the cursor's open transaction; an error leaves nothing of this call."""
        if not general and all(_is_simple(j) for j in jobs):
            cur.execute(self._q(q.ENQUEUE), self._enqueue_params(jobs, now))
            records = self._simple_records(cur.fetchall(), jobs, cur)
            if records is not None:
                return records
        conn = cur.connection
        if not conn.autocommit and conn.info.transaction_status == TransactionStatus.IDLE:
            # open the caller's transaction first: a transaction() block on an idle connection
            # would commit on its own, and the jobs must exist only if the caller commits
            cur.execute("SELECT 1")
        for attempt in range(10):
            try:
                with cur.connection.transaction():  # a savepoint: undone on any error
                    return self._enqueue_general(cur, jobs, now)
            except _LostRace:
                log.debug("enqueue raced with another producer; planning again (%d)", attempt)
            except psycopg.errors.DeadlockDetected:
                # producers locking rows of one another's keys and dependencies: the savepoint
                # undid this one's part, so it can simply go again
                log.debug("enqueue was a deadlock victim; planning again (%d)", attempt)
        raise UniqueConflict(  # pragma: no cover - ten races in a row
            "enqueue kept racing with other producers on the same unique keys; try again"
        )

    def _enqueue_general(
        self, cur: psycopg.Cursor[Any], jobs: Sequence[NewJob], now_arg: datetime | None
    ) -> list[JobRecord]:
        """Unique windows, replace/raise and dependencies: lock, read, plan, then write."""
        keys = sorted({j.unique_key for j in jobs if j.unique_key is not None})
        cur.execute(
            self._q(q.ENQUEUE_START),
            {
                "now": now_arg,
                "ns": self._unique_ns,
                "hashes": sorted({_key_hash(k) for k in keys}),
                "seq": self._seq,
                "n": len(jobs),
            },
        )
        start = cur.fetchone()
        assert start is not None
        now: datetime = start[0]
        ids: list[int] = list(start[2])

        # current holders of the keys (locked: they cannot change before this commits)
        active: dict[str, int] = {}
        recent: dict[str, JobRecord] = {}  # newest job of a key created within the window
        db: dict[int, JobRecord] = {}
        states: dict[int, str] = {}
        if keys:
            windows = [j.unique_window for j in jobs if j.unique_window is not None]
            cur.execute(
                self._q(q.UNIQUE_HOLDERS),
                {
                    "keys": keys,
                    "wkeys": sorted(
                        {j.unique_key for j in jobs if j.unique_window and j.unique_key}
                    ),
                    "now": now,
                    "window": max(windows, default=timedelta(0)),
                },
            )
            for row in cur.fetchall():
                rec = _row_to_record(row)
                db[rec.id] = rec
                states[rec.id] = rec.state.value
                assert rec.unique_key is not None
                if rec.state in ACTIVE_STATES:
                    active[rec.unique_key] = rec.id
                recent[rec.unique_key] = rec  # rows come in id order: the newest wins
        explicit = sorted({d for j in jobs for d in j.depends_on} - set(states))
        if explicit:
            cur.execute(self._q(q.LOCK_DEPENDENCIES), {"ids": explicit})
            states.update({job_id: state for job_id, state in cur.fetchall()})

        planned: dict[int, _Planned] = {}
        slots: list[int] = []  # the id standing for each job of the call
        new_by_key: dict[str, int] = {}
        replaced: dict[int, tuple[NewJob, datetime, str]] = {}
        edges: list[tuple[int, int]] = []
        flag: set[int] = set()

        def state_of(job_id: int) -> str:
            p = planned.get(job_id)
            return p.state if p is not None else states[job_id]

        def record_of(job_id: int) -> JobRecord:
            p = planned.get(job_id)
            if p is None:
                return db[job_id]
            return _new_record(p.id, p.job, (p.id, p.state, p.run_at, now))

        def run_at_of(nj: NewJob) -> datetime:
            return nj.run_at if nj.run_at is not None else now + (nj.delay or timedelta(0))

        for position, nj in enumerate(jobs):
            key = nj.unique_key
            holder: int | None = None
            if key is not None:
                holder = active.get(key)
                if holder is None and nj.unique_window is not None:
                    if key in new_by_key:
                        holder = new_by_key[key]
                    elif key in recent and recent[key].created_at > now - nj.unique_window:
                        holder = recent[key].id
            if key is not None and holder is not None:
                if nj.on_conflict == "raise":
                    raise unique_held(key, record_of(holder))
                if nj.on_conflict == "replace":
                    if state_of(holder) not in ("scheduled", "available"):
                        raise not_replaceable(key, record_of(holder))
                    run_at = run_at_of(nj)
                    state = "scheduled" if run_at > now else "available"
                    p = planned.get(holder)
                    if p is not None:
                        p.job = dataclasses.replace(p.job, **_replaced_fields(nj))
                        p.run_at, p.state = run_at, state
                    else:
                        replaced[holder] = (nj, run_at, state)
                        states[holder] = state
                slots.append(holder)
                continue

            deps: list[int] = []
            for d in nj.depends_on:
                if d not in states and d not in planned:
                    raise unknown_dependency(d)
                deps.append(d)
            for index in nj.depends_on_batch:
                if not 0 <= index < position:
                    raise bad_batch_dependency(position, index)
                deps.append(slots[index])
            deps = sorted(set(deps))
            job_id = ids[position]
            run_at = run_at_of(nj)
            pending: list[int] = []
            failed: tuple[int, str] | None = None
            for d in deps:
                st = state_of(d)
                if st == "completed" or (st in _TERMINAL and nj.allow_failed):
                    continue
                if st in _TERMINAL:
                    if failed is None or d < failed[0]:
                        failed = (d, st)
                else:
                    pending.append(d)
            error = None
            if failed is not None:
                state = "cancelled"
                error = dependency_failed(failed[0], failed[1], 0, now)
            elif pending:
                state = "blocked"
                for d in pending:
                    edges.append((d, job_id))
                    if d in planned:
                        planned[d].has_dependents = True
                    else:
                        flag.add(d)
            else:
                state = "scheduled" if run_at > now else "available"
            planned[job_id] = _Planned(
                job_id, nj, state, run_at, deps, len(pending) if failed is None else 0, error
            )
            slots.append(job_id)
            if key is not None:
                new_by_key[key] = job_id
                if state in ("scheduled", "blocked", "available"):
                    active[key] = job_id

        # backpressure (approximate when producers race: each counts what it can see)
        adding: dict[str, int] = {}
        for p in planned.values():
            if p.state != "cancelled":
                adding[p.job.queue] = adding.get(p.job.queue, 0) + 1
        if adding:
            cur.execute(self._q(q.QUEUE_DEPTHS), {"queues": sorted(adding)})
            for queue, max_depth, depth in cur.fetchall():
                if depth + adding[queue] > max_depth:
                    raise queue_full(queue, max_depth)

        woken: set[str] = set()
        for holder, (nj, run_at, state) in replaced.items():
            cur.execute(
                self._q(q.REPLACE),
                {
                    "id": holder,
                    "args": nj.args_json,
                    "kwargs": nj.kwargs_json,
                    "priority": nj.priority,
                    "run_at": run_at,
                    "deadline": nj.deadline,
                    "timeout": nj.timeout,
                    "max_attempts": nj.max_attempts,
                    "tags": list(nj.tags),
                    "state": state,
                },
            )
            row = cur.fetchone()
            if row is None:  # pragma: no cover - the holder is locked: it cannot have moved
                raise _LostRace
            db[holder] = _row_to_record(row)
            if state == "available":
                woken.add(db[holder].queue)

        if planned:
            ps = list(planned.values())
            cur.execute(
                self._q(q.INSERT_JOBS),
                {
                    "now": now,
                    "channel": self.channel,
                    "id": [p.id for p in ps],
                    "queue": [p.job.queue for p in ps],
                    "task": [p.job.task for p in ps],
                    "args": [p.job.args_json for p in ps],
                    "kwargs": [p.job.kwargs_json for p in ps],
                    "priority": [p.job.priority for p in ps],
                    "deadline": [p.job.deadline for p in ps],
                    "run_at": [p.run_at for p in ps],
                    "max_attempts": [p.job.max_attempts for p in ps],
                    "timeout": [p.job.timeout for p in ps],
                    "unique_key": [p.job.unique_key for p in ps],
                    "tags": [_text_array(p.job.tags) for p in ps],
                    "state": [p.state for p in ps],
                    "ckey": [p.job.concurrency_key for p in ps],
                    "climit": [p.job.concurrency_limit for p in ps],
                    "rkey": [p.job.rate_key for p in ps],
                    "rlimit": [p.job.rate_limit for p in ps],
                    "rperiod": [p.job.rate_period for p in ps],
                    "depends_on": ["{" + ",".join(map(str, p.depends_on)) + "}" for p in ps],
                    "pending": [p.pending for p in ps],
                    "allow_failed": [p.job.allow_failed for p in ps],
                    "has_dependents": [p.has_dependents for p in ps],
                    "secret": [_text_array(p.job.secret) for p in ps],
                    "errors": [
                        "[" + attempt_errors.to_json(p.error) + "]" if p.error else "[]" for p in ps
                    ],
                    "finished_at": [now if p.state == "cancelled" else None for p in ps],
                    "edge_dep": [d for d, _ in edges],
                    "edge_job": [j for _, j in edges],
                    "flag": sorted(flag),
                },
            )
            inserted = {row[0]: _row_to_record(row) for row in cur.fetchall()}
            if len(inserted) < len(ps):  # a key taken by a producer this one could not see
                raise _LostRace
            db.update(inserted)
        for queue in woken:
            cur.execute("SELECT pg_notify(%s, %s)", (self.channel, queue))
        return [db[job_id] for job_id in slots]

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
            "max_lost": max_lost,
        }
        if not outcomes:
            return set(), self._claim(params, queue_order)
        served = tuple(queues)
        full = served in self._limited_seen
        exchange = {
            (False, False): q.EXCHANGE,
            (False, True): q.EXCHANGE_ORDERED,
            (True, False): q.EXCHANGE_FULL,
            (True, True): q.EXCHANGE_FULL_ORDERED,
        }[full, queue_order]
        rows = self._one_round_trip(
            self._sized(exchange, limit), {**params, **_outcome_params(outcomes)}, self._claims()
        )
        done = set(rows[0][-3] or ()) if rows else set()
        waiting, claimable = (bool(rows[0][-2]), bool(rows[0][-1])) if rows else (False, False)
        self._note_limited(served, waiting)
        rows = sorted((r[:-3] for r in rows if r[0] is not None), key=_claim_order(queue_order))
        claimed = [_row_to_record(r) for r in rows]
        woke = False
        left = [o for o in outcomes if o.lease.job_id not in done]
        if left:
            # jobs with dependents (left out so that their dependents are resolved in the same
            # transaction), and late writes (refused again, and logged, there)
            recorded, woke = self._record_outcomes(left, now)
            done |= recorded
        if claimable:  # the statement claimed nothing: a limited job may be taken
            if full:
                return done, self._claim_limited(params, queue_order)
            return done, self._claim(params, queue_order, full=True)
        if woke and len(claimed) < limit:
            # dependents that just became available may take the slots left
            claimed += self._claim({**params, "limit": limit - len(claimed)}, queue_order)
        return done, claimed

    def _note_limited(self, served: tuple[str, ...], waiting: bool) -> None:
        """Remember which queue lists have limited jobs waiting: their claims use the full
        statements at once (a stale memo costs planning time, never correctness)."""
        if waiting:
            if len(self._limited_seen) < 1000:
                self._limited_seen.add(served)
        else:
            self._limited_seen.discard(served)

    def _claim(
        self, params: dict[str, Any], queue_order: bool, full: bool | None = None
    ) -> list[JobRecord]:
        """One claim statement; the full one, or under the limits lock, if it says a limited
        job may be taken (it then claimed nothing)."""
        served = tuple(params["queues"])
        if full is None:
            full = served in self._limited_seen
        claim = {
            (False, False): q.CLAIM,
            (False, True): q.CLAIM_ORDERED,
            (True, False): q.CLAIM_FULL,
            (True, True): q.CLAIM_FULL_ORDERED,
        }[full, queue_order]
        rows = self._one_round_trip(self._sized(claim, params["limit"]), params, self._claims())
        waiting, claimable = (bool(rows[0][-2]), bool(rows[0][-1])) if rows else (False, False)
        self._note_limited(served, waiting)
        if claimable:
            if full:
                return self._claim_limited(params, queue_order)
            return self._claim(params, queue_order, full=True)
        rows = sorted((r[:-2] for r in rows if r[0] is not None), key=_claim_order(queue_order))
        return [_row_to_record(r) for r in rows]

    def _claim_limited(self, params: dict[str, Any], queue_order: bool) -> list[JobRecord]:
        """Limited jobs first (as select_limited allows), then unlimited ones, in one
        transaction serialised with every other limited claim by an advisory lock."""
        limit: int = params["limit"]
        with self._tx() as cur:
            # its own statement: the next one's snapshot then sees every earlier limited claim
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (self._limits_key,))
            cur.execute(
                self._q(q.LIMITED_CANDIDATES_ORDERED if queue_order else q.LIMITED_CANDIDATES),
                {**params, "scan": max(4 * limit, 64)},
            )
            candidates = cur.fetchall()
            running: dict[str, int] = {}
            started: dict[str, int] = {}
            for _, ckey, _, rkey, _, n_running, n_started in candidates:
                if ckey is not None:
                    running.setdefault(ckey, n_running)
                if rkey is not None:
                    started.setdefault(rkey, n_started)
            chosen = select_limited([c[:5] for c in candidates], running, started, limit)
            cur.execute(
                self._q(q.CLAIM_LIMITED_ORDERED if queue_order else q.CLAIM_LIMITED),
                {**params, "chosen": chosen, "fill": limit - len(chosen)},
            )
            rows = cur.fetchall()
        order = _claim_order(queue_order)
        first = sorted((r for r in rows if r[-1] == 0), key=order)
        rest = sorted((r for r in rows if r[-1] == 1), key=order)
        return [_row_to_record(r) for r in first + rest]

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

    def held(self, leases: Sequence[Lease]) -> set[int]:
        if not leases:
            return set()
        rows = self._one_round_trip(
            self._q(q.HELD),
            {"ids": [x.job_id for x in leases], "tokens": [x.token for x in leases]},
        )
        return {r[0] for r in rows}

    def set_progress(self, lease: Lease, fraction: float | None, message: str | None) -> bool:
        rows = self._one_round_trip(
            self._q(q.SET_PROGRESS),
            {"id": lease.job_id, "token": lease.token, "fraction": fraction, "message": message},
        )
        return bool(rows)

    def record_outcomes(
        self, outcomes: Sequence[Outcome], *, now: datetime | None = None
    ) -> set[int]:
        if not outcomes:
            return set()
        return self._record_outcomes(outcomes, now)[0]

    def _record_outcomes(
        self, outcomes: Sequence[Outcome], now: datetime | None
    ) -> tuple[set[int], bool]:
        """(ids recorded, whether a dependent became available)."""
        with self._tx() as cur:
            cur.execute(self._q(q.OUTCOMES), {"now": now, **_outcome_params(outcomes)})
            rows = cur.fetchall()
            woke = self._resolve(
                cur, [(r[0], r[1]) for r in rows if r[2] and r[1] in _TERMINAL], now
            )
        done = {r[0] for r in rows}
        for o in outcomes:
            if o.lease.job_id not in done:
                log_not_recorded(o)
        return done, woke

    def _resolve(
        self, cur: psycopg.Cursor[Any], finished: list[tuple[int, str]], now: datetime | None
    ) -> bool:
        """Resolve the dependents of jobs that just ended (id, final state), down the chain,
        in the caller's transaction. A no-op (no round trip) when there is nothing to do.
        Returns whether a dependent became available."""
        woken: set[str] = set()
        while finished:
            cur.execute(
                self._q(q.RESOLVE),
                {
                    "ids": [f[0] for f in finished],
                    "states": [f[1] for f in finished],
                    "now": now,
                    "message": _DEP_FAILED_TEMPLATE,
                    "dep_mark": _DEP_MARK,
                    "state_mark": _STATE_MARK,
                },
            )
            rows = cur.fetchall()
            woken |= {queue for _, state, _, queue in rows if state == "available"}
            finished = [(i, state) for i, state, has, _ in rows if has and state in _TERMINAL]
        for queue in sorted(woken):
            cur.execute("SELECT pg_notify(%s, %s)", (self.channel, queue))
        return bool(woken)

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
                if row[q.NCOLS]:
                    self._resolve(cur, [(job_id, "cancelled")], now)
                return True, _row_to_record(row)
            cur.execute(self._q(f"SELECT {q.COLUMNS} FROM {{t}} WHERE id = %s"), (job_id,))
            current = cur.fetchone()
        if current is None:
            raise not_found(job_id)
        return False, _row_to_record(current)

    def cancel_many(self, filter: JobFilter, *, now: datetime | None = None) -> int:
        if filter.state is not None and filter.state not in ACTIVE_STATES:
            return 0
        with self._tx() as cur:
            cur.execute(self._q(q.CANCEL_MANY), {"now": now, **_filter_params(filter)})
            rows = cur.fetchall()
            self._resolve(cur, [(r[0], "cancelled") for r in rows if r[1]], now)
        return len(rows)

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

    def retry_many(self, filter: JobFilter, *, now: datetime | None = None) -> int:
        if filter.state is not None and filter.state not in TERMINAL_STATES:
            raise InvalidTransition(
                f"only finished jobs can be retried; state={filter.state.value!r} is not one of "
                "completed, dead, cancelled or expired (leave it unset for all four)"
            )
        params = {"now": now, "channel": self.channel, **_filter_params(filter)}
        for attempt in range(5):
            try:
                with self._tx() as cur:
                    cur.execute(self._q(q.RETRY_MANY), params)
                    row = cur.fetchone()
                break
            except psycopg.errors.UniqueViolation:
                # a producer took one of the keys meanwhile: the next pass skips that job
                log.debug("retry_many raced with a producer on a unique key (%d)", attempt)
        else:  # pragma: no cover
            raise UniqueConflict("retry_many kept racing with producers on unique keys; retry")
        retried = int(row[0]) if row else 0
        if retried:
            self._bump()
        return retried

    def delete(self, job_id: int, *, now: datetime | None = None) -> bool:
        with self._tx() as cur:
            cur.execute(self._q(q.DELETE), {"id": job_id})
            row = cur.fetchone()
            if row is None:
                cur.execute(self._q("SELECT state FROM {t} WHERE id = %s"), (job_id,))
                if cur.fetchone() is None:
                    return False
                raise InvalidTransition(
                    f"job {job_id} is running; cancel it first (jobq cancel {job_id}), then "
                    "delete it"
                )
            state, has_dependents = row
            if has_dependents and state not in _TERMINAL:
                self._resolve(cur, [(job_id, "cancelled")], now)
        return True

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
        with self._tx() as cur:
            cur.execute(self._q(q.RESCUE), params)
            rows = cur.fetchall()
            # a job parked as dead is finished: its dependents are resolved now
            self._resolve(cur, [(r[0], r[1]) for r in rows if r[2] and r[1] == "dead"], now)
            if any(r[1] == "available" for r in rows):
                cur.execute("SELECT pg_notify(%s, '')", (self.channel,))
        return len(rows)

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
        keep: int = 0,
    ) -> int:
        finished = sorted(s.value for s in states & TERMINAL_STATES)
        if not finished or limit <= 0:
            return 0
        params = {
            "now": now,
            "states": finished,
            "older": older_than,
            "limit": limit,
            "keep": keep,
        }
        return self._count(q.PRUNE_KEEP if keep > 0 else q.PRUNE, params)

    # -- queues ------------------------------------------------------------------------------

    def set_queue(
        self, queue: str, *, paused: bool | None = None, max_depth: int | bool | None = False
    ) -> QueueSettings:
        set_depth = max_depth is not False
        if max_depth is True or (
            set_depth
            and max_depth is not None
            and (not isinstance(max_depth, int) or max_depth < 0)
        ):
            raise ConfigurationError(
                f"max_depth must be a whole number >= 0, or None to remove the limit; got "
                f"{max_depth!r}"
            )
        with self._tx() as cur:
            cur.execute(
                self._q(q.SET_QUEUE),
                {
                    "queue": queue,
                    "paused": paused,
                    "set_depth": set_depth,
                    "depth": max_depth if set_depth else None,
                },
            )
            row = cur.fetchone()
            assert row is not None
            if paused is False:  # resumed: wake the workers that serve it
                cur.execute("SELECT pg_notify(%s, %s)", (self.channel, queue))
        if paused is False:
            self._bump()
        return QueueSettings(paused=row[0], max_depth=row[1])

    def queue_settings(self) -> dict[str, QueueSettings]:
        with self._tx() as cur:
            cur.execute(self._q(q.QUEUE_SETTINGS))
            return {r[0]: QueueSettings(paused=r[1], max_depth=r[2]) for r in cur.fetchall()}

    # -- periodic jobs -----------------------------------------------------------------------

    def enqueue_tick(
        self, name: str, tick: datetime, job: NewJob, *, now: datetime | None = None
    ) -> JobRecord | None:
        with self._tx() as cur:
            cur.execute(self._q(q.ADVANCE_TICK), {"name": name, "tick": tick})
            if cur.fetchone() is None:
                return None  # this tick (or a later one) was enqueued already
            record = self._enqueue_in(cur, [job], now)[0]
        if record.state is JobState.AVAILABLE:
            self._bump()
        return record

    def cron_ticks(self) -> dict[str, datetime]:
        with self._tx() as cur:
            cur.execute(self._q(q.CRON_TICKS))
            return {name: tick.astimezone(UTC) for name, tick in cur.fetchall()}

    # -- distributed locks -------------------------------------------------------------------

    def acquire_lock(
        self, name: str, owner: str, ttl: timedelta, *, now: datetime | None = None
    ) -> int | None:
        rows = self._one_round_trip(
            self._q(q.ACQUIRE_LOCK), {"name": name, "owner": owner, "ttl": ttl, "now": now}
        )
        return int(rows[0][0]) if rows else None

    def renew_lock(
        self, name: str, token: int, ttl: timedelta, *, now: datetime | None = None
    ) -> bool:
        rows = self._one_round_trip(
            self._q(q.RENEW_LOCK), {"name": name, "token": token, "ttl": ttl, "now": now}
        )
        return bool(rows)

    def release_lock(self, name: str, token: int) -> bool:
        rows = self._one_round_trip(self._q(q.RELEASE_LOCK), {"name": name, "token": token})
        return bool(rows)

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
                {**_filter_params(filter), "before": before_id, "limit": max(0, limit)},
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


#: From this many plain jobs in one call, enqueue_many writes them with COPY (see
#: ``_enqueue_copy``): a few round trips more, the rows several times faster.
COPY_MIN = 500
_ZERO = timedelta(0)


def _enqueue_row(j: NewJob) -> tuple[Any, ...]:
    """A job's values for the ENQUEUE statements, in ``_ENQUEUE_ARRAY``'s order."""
    return (
        j.queue,
        j.task,
        j.args_json,
        j.kwargs_json,
        j.priority,
        j.deadline,
        j.run_at,
        j.delay,
        j.max_attempts,
        j.timeout,
        j.unique_key,
        _text_array(j.tags),
        j.concurrency_key,
        j.concurrency_limit,
        j.rate_key,
        j.rate_limit,
        j.rate_period,
        _text_array(j.secret),
    )


#: How each column of the ENQUEUE statement is sent (see ``pg_arrays``), in the order of
#: ``_enqueue_row``.
_ENQUEUE_ARRAY: dict[str, Callable[[list[Any]], str]] = {
    "queue": arrays.texts,
    "task": arrays.texts,
    "args": arrays.texts,
    "kwargs": arrays.texts,
    "priority": arrays.ints,
    "deadline": arrays.times,
    "run_at": arrays.times,
    "delay": arrays.intervals,
    "max_attempts": arrays.ints,
    "timeout": arrays.intervals,
    "unique_key": arrays.texts,
    "tags": arrays.texts,
    "ckey": arrays.texts,
    "climit": arrays.ints,
    "rkey": arrays.texts,
    "rlimit": arrays.ints,
    "rperiod": arrays.intervals,
    "secret": arrays.texts,
}


_SQL_TOKENS = re.compile(r"('(?:[^']|'')*')|(?:\s|--[^\n]*)+")


def compact_sql(text: str) -> str:
    """``text`` without comments and with each run of whitespace as one space (string
    literals kept as they are). psycopg caches the parsing of a statement's placeholders only
    for statements under 4 KiB; the exchange statement, as written, is just over."""

    def token(m: re.Match[str]) -> str:
        return m.group(1) or " "

    return _SQL_TOKENS.sub(token, text).strip()


def _check_alive(conn: psycopg.Connection[Any]) -> None:
    """The pools' check before lending a connection, without a round trip when it can.

    A session the server ended while it sat in the pool (terminated, restarted, timed out, the
    server killed) has its socket readable: the server's last words, or the end of the stream.
    An idle, healthy session has nothing to read (nothing arrives unasked on a pooled
    connection: none of them LISTENs). So a connection with nothing to read is lent at once,
    and only one with something to read gets the full check, the empty query psycopg_pool's own
    check sends, straight through libpq: a dead connection raises and the pool lends another.
    A server that vanished without closing its end shows nothing to read; the empty query
    would not have caught it either (it would wait for an answer just as the statement does)."""
    if not conn.autocommit or conn.info.transaction_status != TransactionStatus.IDLE:
        psycopg_pool.ConnectionPool.check_connection(conn)
        return
    pgconn = conn.pgconn
    if pgconn.status == pq.ConnStatus.OK and not _readable(pgconn.socket):
        return
    result = pgconn.exec_(b"")
    if result.status != pq.ExecStatus.EMPTY_QUERY:
        reason = (result.error_message or pgconn.error_message).decode(errors="replace")
        raise psycopg.OperationalError(f"the connection failed its check: {reason.strip()}")


class _Ended(BaseException):
    """A pooled connection the server ended, found by :func:`_pool_check` (see :func:`_lend`).

    A BaseException so that psycopg_pool lets it through at once, after giving the connection
    back to be replaced: for an Exception it would sleep 1 s, 2 s, 4 s... before trying the
    next connection."""


def _pool_check(conn: psycopg.Connection[Any]) -> None:
    try:
        _check_alive(conn)
    except psycopg.Error as exc:
        raise _Ended(str(exc)) from exc


@contextmanager
def _lend(pool: psycopg_pool.ConnectionPool[Any]) -> Iterator[psycopg.Connection[Any]]:
    """``pool.connection()``, trying the pooled connections one after the other, at once,
    until one is alive (each ended one is replaced; an empty pool lends a fresh connection).

    The connections idle beside one the server ended (a restart, every session cut) have most
    likely ended with it. Left to psycopg_pool, the tries would be paced 1 s, 2 s, 4 s...
    apart; with the server cutting sessions every few seconds, every connection it came to had
    been cut in the meantime, and a worker got no connection for minutes."""
    for _ in range(pool.max_size + 1):
        try:
            conn = pool.getconn()
            break
        except _Ended:
            continue
    else:
        raise psycopg.OperationalError(
            f"every connection of pool {pool.name!r} the server ended, "
            f"{pool.max_size + 1} times in a row"
        )
    try:
        with conn:
            yield conn
    finally:
        pool.putconn(conn)


def _readable(fd: int) -> bool:
    """Whether socket ``fd`` has something to read (or its peer closed it), without waiting."""
    if not hasattr(select, "poll"):  # Windows: select() takes sockets there
        return bool(select.select([fd], [], [], 0)[0])
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


def _claim_session(conn: psycopg.Connection[Any]) -> None:
    """A claim connection's settings (see PostgresBackend._claims)."""
    conn.execute("SET enable_seqscan = off")


def _outcome_params(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """The arrays the OUTCOMES statement unnests, one element per outcome (in id order, so
    that concurrent batches lock rows in one order)."""
    outcomes = sorted(outcomes, key=lambda o: o.lease.job_id)
    return {
        "ids": arrays.ints([o.lease.job_id for o in outcomes]),
        "tokens": arrays.texts([o.lease.token for o in outcomes]),
        "kinds": arrays.texts([o.kind.value for o in outcomes]),
        "results": arrays.texts([o.result_json for o in outcomes]),
        "run_ats": arrays.times([o.run_at for o in outcomes]),
        "delays": arrays.intervals([o.delay or timedelta(0) for o in outcomes]),
        "errors": arrays.texts(
            [attempt_errors.to_json(o.error) if o.error else None for o in outcomes]
        ),
    }


def _array_item(tag: str) -> str:
    return '"' + tag.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _text_array(items: Sequence[str]) -> str:
    """A text[] literal (the unnest of ragged per-job arrays takes them as text)."""
    return "{" + ",".join(_array_item(t) for t in items) + "}"


def _replaced_fields(nj: NewJob) -> dict[str, Any]:
    """What ``on_conflict="replace"`` rewrites of a job that has not started."""
    return {
        "args_json": nj.args_json,
        "kwargs_json": nj.kwargs_json,
        "priority": nj.priority,
        "run_at": nj.run_at,
        "delay": nj.delay,
        "deadline": nj.deadline,
        "timeout": nj.timeout,
        "max_attempts": nj.max_attempts,
        "tags": nj.tags,
    }


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
        state=state_of(state),
        worker_id=None,
        lease_token=None,
        leased_until=None,
        result_json=None,
        errors=(),
        created_at=created_at.astimezone(UTC),
        started_at=None,
        finished_at=None,
        concurrency_key=nj.concurrency_key,
        rate_key=nj.rate_key,
        allow_failed=nj.allow_failed,
        secret=nj.secret,
    )
