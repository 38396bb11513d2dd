"""The PostgreSQL backend's statements, by name.

Placeholders bound by the backend: ``{t}`` the schema's jobs table, ``{d}`` dependency edges,
``{qs}`` queue settings, ``{rs}`` rate-limit starts, ``{ct}`` periodic ticks, ``{lk}`` locks.
``%(now)s`` is an injected time or NULL for the database's ``now()``.
"""

from __future__ import annotations

from jobq.states import ACTIVE_STATES, TERMINAL_STATES, Action, sources, state_list_sql

#: A record's columns. ``errors`` comes as its JSON text: the backend decodes it, with the
#: common empty list without a parse (psycopg's jsonb loader parsed every claimed row's).
COLUMNS = (
    "id, queue, task, args, kwargs, priority, deadline, run_at, attempt, max_attempts, timeout, "
    "unique_key, tags, state, worker_id, lease_token, leased_until, result, "
    "errors::text AS errors, created_at, "
    "started_at, finished_at, concurrency_key, rate_key, depends_on, allow_failed, progress, "
    "progress_message, secret, lost"
)
#: How many columns a record has; statements may return more after them.
NCOLS = len(COLUMNS.split(","))
J_COLUMNS = ", ".join("j." + c.strip() for c in COLUMNS.split(","))
ORDER = "eff_priority DESC, deadline ASC NULLS LAST, run_at, id"
NOW = "coalesce(%(now)s::timestamptz, now())"
ACTIVE = state_list_sql(ACTIVE_STATES)
TERMINAL = state_list_sql(TERMINAL_STATES)
#: Jobs with a concurrency or rate key are "limited": their limit_group (the pair of keys) is
#: set, they live in their own claim indexes, and are claimed only under the limits lock.
LIMITED = "limit_group IS NOT NULL"
UNLIMITED = "limit_group IS NULL"


def limit_group(ckey: str, rkey: str) -> str:
    """The limit_group of a job with these keys (NULL for an unlimited one)."""
    return (
        f"CASE WHEN {ckey} IS NULL AND {rkey} IS NULL THEN NULL "
        f"ELSE coalesce({ckey}, '') || chr(31) || coalesce({rkey}, '') END"
    )


#: The jobs a queue's max_depth counts (scheduled, blocked, available), one indexed count each.
DEPTH = """(
    (SELECT count(*) FROM {t} w WHERE w.queue = {q} AND w.state = 'available'
        AND w.limit_group IS NULL)
  + (SELECT count(*) FROM {t} w WHERE w.queue = {q} AND w.state = 'available'
        AND w.limit_group IS NOT NULL)
  + (SELECT count(*) FROM {t} w WHERE w.queue = {q} AND w.state IN ('scheduled', 'blocked'))
)"""


def _depth(queue_expr: str) -> str:
    return DEPTH.replace("{q}", queue_expr)


_ENQUEUE_ROWS = """n AS (
    SELECT * FROM unnest(
        %(queue)s::text[], %(task)s::text[], %(args)s::text[], %(kwargs)s::text[],
        %(priority)s::int[], %(deadline)s::timestamptz[], %(run_at)s::timestamptz[],
        %(delay)s::interval[], %(max_attempts)s::int[], %(timeout)s::interval[],
        %(unique_key)s::text[], %(tags)s::text[], %(ckey)s::text[], %(climit)s::int[],
        %(rkey)s::text[], %(rlimit)s::int[], %(rperiod)s::interval[], %(secret)s::text[]
    ) WITH ORDINALITY AS n(queue, task, args, kwargs, priority, deadline, run_at, delay,
                          max_attempts, timeout, unique_key, tags, ckey, climit, rkey, rlimit,
                          rperiod, secret, ord)
)"""
#: The same rows for a call of one job, as scalars (cheaper to send than 18 one-item arrays).
_ENQUEUE_ONE_ROW = """n AS (
    SELECT %(queue)s::text AS queue, %(task)s::text AS task, %(args)s::text AS args,
           %(kwargs)s::text AS kwargs, %(priority)s::int AS priority,
           %(deadline)s::timestamptz AS deadline, %(run_at)s::timestamptz AS run_at,
           %(delay)s::interval AS delay, %(max_attempts)s::int AS max_attempts,
           %(timeout)s::interval AS timeout, %(unique_key)s::text AS unique_key,
           %(tags)s::text AS tags, %(ckey)s::text AS ckey, %(climit)s::int AS climit,
           %(rkey)s::text AS rkey, %(rlimit)s::int AS rlimit, %(rperiod)s::interval AS rperiod,
           %(secret)s::text AS secret
)"""


def _insert_new(id_expr: str) -> str:
    """The INSERT of the enqueue statements: rows ``n`` (see _ENQUEUE_ROWS) as new jobs, each
    with the id ``id_expr``."""
    return f"""INSERT INTO {{t}} AS j (id, queue, task, args, kwargs, priority, eff_priority,
                           deadline, run_at, max_attempts, timeout, unique_key, tags, state,
                           created_at, concurrency_key, concurrency_limit, rate_key,
                           rate_limit, rate_period, limit_group, secret)
    SELECT {id_expr}, n.queue, n.task, n.args, n.kwargs, n.priority, n.priority, n.deadline,
           coalesce(n.run_at, {NOW} + coalesce(n.delay, interval '0')),
           n.max_attempts, n.timeout, n.unique_key, n.tags::text[],
           CASE WHEN coalesce(n.run_at, {NOW} + coalesce(n.delay, interval '0')) > {NOW}
                THEN 'scheduled' ELSE 'available' END,
           {NOW}, n.ckey, n.climit, n.rkey, n.rlimit, n.rperiod,
           {limit_group("n.ckey", "n.rkey")}, n.secret::text[]"""


#: A job whose unique key an active job holds is skipped (the backend returns the holder).
_ON_CONFLICT = """
    ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL
        AND state IN ('scheduled', 'blocked', 'available', 'running') DO NOTHING"""

ENQUEUE = f"""
WITH {_ENQUEUE_ROWS}, bounded AS (
    -- a queue of the call has a max_depth: insert nothing here, the backend takes the general
    -- path, which counts (kept out of this statement so that it stays cheap to plan)
    SELECT 1 FROM {{qs}} s WHERE s.max_depth IS NOT NULL AND s.queue IN (SELECT queue FROM n)
    LIMIT 1
), ids AS MATERIALIZED (
    -- ids in list order, so that FIFO among equal jobs follows the order they were given in
    SELECT ord, nextval(%(seq)s::regclass) AS id FROM n
), ins AS (
    {_insert_new("ids.id")}
    FROM n JOIN ids USING (ord)
    WHERE NOT EXISTS (SELECT 1 FROM bounded)
    ORDER BY ids.id{_ON_CONFLICT}
    RETURNING j.id, j.queue, j.state, j.run_at, j.created_at
), woken AS (
    -- one notification per queue that got available jobs, delivered on commit
    SELECT count(pg_notify(%(channel)s, queue)) AS n
    FROM (SELECT DISTINCT queue FROM ins WHERE state = 'available') AS q
)
SELECT ids.id, ins.state, ins.run_at, ins.created_at, (SELECT n FROM woken),
       EXISTS (SELECT 1 FROM bounded)
FROM ids LEFT JOIN ins ON ins.id = ids.id
ORDER BY ids.ord
"""


def _enqueue_one(unique: bool) -> str:
    """ENQUEUE for one job (the single-enqueue hot path), its parameters scalars instead of
    arrays, with the same result row; leaner than the general statement (no id list to keep
    in order, and no ON CONFLICT arbiter for a job without a unique key): about 40 µs less
    per call on the server. A job skipped for its unique key returns NULLs."""
    return f"""
WITH {_ENQUEUE_ONE_ROW}, bounded AS (
    -- as in ENQUEUE: a queue with a max_depth takes the general path
    SELECT 1 FROM {{qs}} s WHERE s.max_depth IS NOT NULL AND s.queue = %(queue)s LIMIT 1
), ins AS (
    {_insert_new("nextval(%(seq)s::regclass)")}
    FROM n
    WHERE NOT EXISTS (SELECT 1 FROM bounded){_ON_CONFLICT if unique else ""}
    RETURNING j.id, j.queue, j.state, j.run_at, j.created_at
), woken AS (
    SELECT count(pg_notify(%(channel)s, queue)) AS n FROM ins WHERE state = 'available'
)
SELECT ins.id, ins.state, ins.run_at, ins.created_at, (SELECT n FROM woken),
       EXISTS (SELECT 1 FROM bounded)
FROM (SELECT 1) AS one LEFT JOIN ins ON true
"""


ENQUEUE_ONE = _enqueue_one(unique=True)
ENQUEUE_ONE_PLAIN = _enqueue_one(unique=False)

# A big batch of plain jobs (no unique keys, no dependencies) goes in with COPY, in one
# transaction: the time and the ids first, then the rows, then the notifications.
COPY_START = """
SELECT coalesce(%(now)s::timestamptz, now()),
       ARRAY(SELECT nextval(%(seq)s::regclass) FROM generate_series(1, %(n)s)),
       EXISTS (SELECT 1 FROM {qs} s WHERE s.max_depth IS NOT NULL
               AND s.queue = ANY(%(queues)s::text[]))
"""
COPY_JOBS = """
COPY {t} (id, queue, task, args, kwargs, priority, eff_priority, deadline, run_at,
          max_attempts, timeout, tags, state, created_at, concurrency_key, concurrency_limit,
          rate_key, rate_limit, rate_period, limit_group, secret) FROM STDIN
"""
NOTIFY_QUEUES = "SELECT count(pg_notify(%(channel)s, q)) FROM unnest(%(queues)s::text[]) AS q"

# -- the general enqueue path (uniqueness windows/replace/raise, dependencies) ----------------

ENQUEUE_START = """
SELECT coalesce(%(now)s::timestamptz, now()),
       (SELECT count(pg_advisory_xact_lock(%(ns)s::int, h)) FROM unnest(%(hashes)s::int[]) AS h),
       ARRAY(SELECT nextval(%(seq)s::regclass) FROM generate_series(1, %(n)s))
"""

UNIQUE_HOLDERS = f"""
SELECT {COLUMNS} FROM {{t}}
WHERE unique_key = ANY(%(keys)s::text[])
  AND (state IN ({ACTIVE})
       OR (unique_key = ANY(%(wkeys)s::text[]) AND created_at > %(now)s - %(window)s))
ORDER BY id
FOR UPDATE
"""

LOCK_DEPENDENCIES = (
    "SELECT id, state FROM {t} WHERE id = ANY(%(ids)s::bigint[]) ORDER BY id FOR UPDATE"
)

QUEUE_DEPTHS = f"""
SELECT s.queue, s.max_depth, {_depth("s.queue")}
FROM {{qs}} s WHERE s.queue = ANY(%(queues)s::text[]) AND s.max_depth IS NOT NULL
"""

REPLACE = f"""
UPDATE {{t}} SET args = %(args)s, kwargs = %(kwargs)s, priority = %(priority)s,
    eff_priority = %(priority)s, run_at = %(run_at)s, deadline = %(deadline)s,
    timeout = %(timeout)s, max_attempts = %(max_attempts)s, tags = %(tags)s::text[],
    state = %(state)s
WHERE id = %(id)s AND state IN ({state_list_sql(sources(Action.REPLACE))})
RETURNING {COLUMNS}
"""

INSERT_JOBS = f"""
WITH n AS (
    SELECT * FROM unnest(
        %(id)s::bigint[], %(queue)s::text[], %(task)s::text[], %(args)s::text[],
        %(kwargs)s::text[], %(priority)s::int[], %(deadline)s::timestamptz[],
        %(run_at)s::timestamptz[], %(max_attempts)s::int[], %(timeout)s::interval[],
        %(unique_key)s::text[], %(tags)s::text[], %(state)s::text[], %(ckey)s::text[],
        %(climit)s::int[], %(rkey)s::text[], %(rlimit)s::int[], %(rperiod)s::interval[],
        %(depends_on)s::text[], %(pending)s::int[], %(allow_failed)s::bool[],
        %(has_dependents)s::bool[], %(secret)s::text[], %(errors)s::text[],
        %(finished_at)s::timestamptz[]
    ) AS n(id, queue, task, args, kwargs, priority, deadline, run_at, max_attempts, timeout,
           unique_key, tags, state, ckey, climit, rkey, rlimit, rperiod, depends_on, pending,
           allow_failed, has_dependents, secret, errors, finished_at)
), ins AS (
    INSERT INTO {{t}} AS j (id, queue, task, args, kwargs, priority, eff_priority, deadline,
                           run_at, max_attempts, timeout, unique_key, tags, state, created_at,
                           concurrency_key, concurrency_limit, rate_key, rate_limit,
                           rate_period, limit_group, depends_on, deps_pending, allow_failed,
                           has_dependents, secret, errors, finished_at)
    SELECT n.id, n.queue, n.task, n.args, n.kwargs, n.priority, n.priority, n.deadline,
           n.run_at, n.max_attempts, n.timeout, n.unique_key, n.tags::text[], n.state,
           %(now)s, n.ckey, n.climit, n.rkey, n.rlimit, n.rperiod,
           {limit_group("n.ckey", "n.rkey")}, n.depends_on::bigint[],
           n.pending, n.allow_failed, n.has_dependents, n.secret::text[], n.errors::jsonb,
           n.finished_at
    FROM n ORDER BY n.id
    ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL
        AND state IN ('scheduled', 'blocked', 'available', 'running') DO NOTHING
    RETURNING {J_COLUMNS}
), edges AS (
    INSERT INTO {{d}} (dep_id, job_id)
    SELECT * FROM unnest(%(edge_dep)s::bigint[], %(edge_job)s::bigint[])
    ON CONFLICT DO NOTHING
), flagged AS (
    UPDATE {{t}} SET has_dependents = true
    WHERE id = ANY(%(flag)s::bigint[]) AND NOT has_dependents
), woken AS (
    SELECT count(pg_notify(%(channel)s, queue)) AS n
    FROM (SELECT DISTINCT queue FROM ins WHERE state = 'available') AS q
)
SELECT ins.*, (SELECT n FROM woken) FROM ins
"""

# -- claims --------------------------------------------------------------------------------

# Plan reuse. A prepared statement is planned afresh on every call (a "custom" plan) until the
# plan PostgreSQL would cache for it (the "generic" plan, made without the parameters' values)
# is estimated to cost no more; for the claim statements planning took about as long as
# running them (0.8 ms of a 24-job exchange). Two things kept the generic plan's estimate
# high, and are written so that it matches the custom one's:
# - an array parameter unnests to 10 rows by default (a custom plan counts the elements): the
#   served queues bound their ordinality on both sides (always true), which PostgreSQL
#   estimates at one row, as it does for the usual one-queue call;
# - a LIMIT parameter is taken to keep a tenth of the table: the hot claims have their LIMIT
#   written into the statement instead (CLAIM_LIMIT, replaced by the backend; one statement per
#   batch size, a handful in practice).
# A reused plan keeps the table size it was made for: the claims run on connections that plan
# with sequential scans off (PostgresBackend._claims), so a plan made on a small table still
# uses the indexes once the table is large.
CLAIM_LIMIT = "%(limit)s"

_SERVED = """served AS (
    -- the queues asked for, minus paused ones (the rank bound is for the planner: see above)
    SELECT queue, rank FROM unnest(%(queues)s::text[]) WITH ORDINALITY AS s(queue, rank)
    WHERE NOT EXISTS (SELECT 1 FROM {qs} p WHERE p.queue = s.queue AND p.paused)
      AND s.rank BETWEEN 1 AND cardinality(%(queues)s::text[])
)"""


def _claimable(freed: bool) -> str:
    """Whether limited job ``l`` is within its limits (read without the limits lock: the claim
    itself re-checks under it). ``freed`` subtracts jobs this same statement takes out of
    running (its snapshot still shows them running)."""
    minus = (
        " - coalesce((SELECT f.n FROM freed f WHERE f.key = l.concurrency_key), 0)" if freed else ""
    )
    return f"""(l.concurrency_key IS NULL OR l.concurrency_limit IS NULL
         OR (SELECT count(*) FROM {{t}} r WHERE r.state = 'running'
             AND r.concurrency_key = l.concurrency_key){minus} < l.concurrency_limit)
     AND (l.rate_key IS NULL OR l.rate_limit IS NULL
         OR (SELECT count(*) FROM {{rs}} x WHERE x.key = l.rate_key
             AND x.started_at > {NOW} - coalesce(l.rate_period, interval '0')) < l.rate_limit)"""


def _open_groups(claimable: str, n: str) -> str:
    """A LATERAL subquery for served queue ``s``: up to ``n`` limit groups whose first job
    (``l``) is within its limits. It skips from group to group with one index probe each, so
    its cost grows with the groups at their limit (a few: they have jobs running or recently
    started), not with how many jobs wait behind them."""
    return f"""(
        WITH RECURSIVE g(grp) AS (
            (SELECT limit_group FROM {{t}}
             WHERE state = 'available' AND limit_group IS NOT NULL AND queue = s.queue
             ORDER BY limit_group LIMIT 1)
          UNION ALL
            SELECT (SELECT limit_group FROM {{t}}
                    WHERE state = 'available' AND limit_group IS NOT NULL AND queue = s.queue
                      AND limit_group > g.grp
                    ORDER BY limit_group LIMIT 1)
            FROM g WHERE g.grp IS NOT NULL
        )
        SELECT g.grp FROM g CROSS JOIN LATERAL (
            SELECT concurrency_key, concurrency_limit, rate_key, rate_limit, rate_period
            FROM {{t}}
            WHERE state = 'available' AND limit_group IS NOT NULL AND queue = s.queue
              AND limit_group = g.grp
            ORDER BY {ORDER}
            LIMIT 1
        ) AS l
        WHERE g.grp IS NOT NULL AND {claimable}
        LIMIT {n}
    )"""


_WAITING = """EXISTS (
        SELECT 1 FROM served s CROSS JOIN LATERAL (
            SELECT 1 FROM {t} l
            WHERE l.state = 'available' AND l.limit_group IS NOT NULL AND l.queue = s.queue
            LIMIT 1
        ) AS x
    )"""


def _lim(full: bool, freed: bool = False) -> str:
    """Two flags: do limited jobs wait in the served queues, and may one be taken now?

    The regular statement only probes whether any wait (one index probe per queue that finds
    nothing when none do: cheap to run and to plan) and, if so, claims nothing: the backend
    then uses the full statement, which also asks whether a limited job is within its limits
    and claims unlimited jobs as usual when none is (a backlog at its limit costs one
    statement per claim, not a locked transaction)."""
    if not full:
        # OFFSET 0 keeps the subquery whole: pulled up, its one probe ran once per column
        return (
            f"lim AS (SELECT w AS waiting, w AS claimable FROM (SELECT {_WAITING} AS w OFFSET 0)"
            " AS z)"
        )
    return f"""lim AS (
    SELECT {_WAITING} AS waiting, EXISTS (
        SELECT 1 FROM served s CROSS JOIN LATERAL {_open_groups(_claimable(freed), "1")} AS og
    ) AS claimable
)"""


def _candidates(first: str, gate: str, limit: str) -> str:
    # %(max_lost)s NULL: jobs whatever their lost count; N: jobs never lost, plus at most N
    # lost ones (from their own index; LIMIT 0 when NULL)
    lost = f"""lost_candidates AS (
    SELECT c.id, s.rank, c.eff_priority, c.deadline, c.run_at
    FROM served s CROSS JOIN LATERAL (
        SELECT id, eff_priority, deadline, run_at FROM {{t}}
        WHERE state = 'available' AND {UNLIMITED} AND lost > 0 AND queue = s.queue
        ORDER BY {ORDER}
        LIMIT coalesce(%(max_lost)s::int, 0)
        FOR UPDATE SKIP LOCKED
    ) c
    WHERE {gate}
    ORDER BY {first}c.eff_priority DESC, c.deadline ASC NULLS LAST, c.run_at, c.id
    LIMIT coalesce(%(max_lost)s::int, 0)
)"""
    return f"""{lost}, candidates AS (
    SELECT s.id, s.rank FROM (
        SELECT c.id, s.rank, c.eff_priority, c.deadline, c.run_at
        FROM served s CROSS JOIN LATERAL (
            SELECT id, eff_priority, deadline, run_at FROM {{t}}
            WHERE state = 'available' AND {UNLIMITED} AND queue = s.queue
              AND (%(max_lost)s::int IS NULL OR lost = 0)
            ORDER BY {ORDER}
            LIMIT {limit}
            FOR UPDATE SKIP LOCKED
        ) c
      UNION ALL
        SELECT * FROM lost_candidates
    ) s
    WHERE {gate}
    ORDER BY {first}s.eff_priority DESC, s.deadline ASC NULLS LAST, s.run_at, s.id
    LIMIT {limit}
)"""


_LEASE_SET = f"""state = 'running', attempt = j.attempt + 1, worker_id = %(worker)s,
    lease_token = left(md5(random()::text || j.id::text), 16),
    leased_until = {NOW} + %(lease)s, started_at = {NOW}"""
_CLAIM_UPDATE = f"""claimed AS (
UPDATE {{t}} AS j
SET {_LEASE_SET}
FROM candidates c
WHERE j.id = c.id
RETURNING {J_COLUMNS}, c.rank, j.eff_priority)"""

TERMINAL_KINDS = "('completed', 'dead', 'cancelled', 'expired')"
NEXT_RUN = f"coalesce(o.run_at, {NOW} + o.delay)"


def _outcomes(where: str, returning: str) -> str:
    return f"""
UPDATE {{t}} AS j SET
    state = CASE WHEN o.kind IN {TERMINAL_KINDS} THEN o.kind
                 WHEN {NEXT_RUN} > {NOW} THEN 'scheduled' ELSE 'available' END,
    result = CASE WHEN o.kind = 'completed' THEN o.result ELSE j.result END,
    finished_at = CASE WHEN o.kind IN {TERMINAL_KINDS} THEN {NOW} ELSE j.finished_at END,
    run_at = CASE WHEN o.kind IN ('retry', 'snoozed') THEN {NEXT_RUN} ELSE j.run_at END,
    eff_priority = CASE WHEN o.kind IN ('retry', 'snoozed') THEN j.priority
                        ELSE j.eff_priority END,
    max_attempts = j.max_attempts + CASE WHEN o.kind = 'snoozed' THEN 1 ELSE 0 END,
    leased_until = NULL,
    errors = CASE WHEN o.error IS NULL THEN j.errors
                  ELSE j.errors || jsonb_build_array(o.error::jsonb) END
FROM unnest(%(ids)s::bigint[], %(tokens)s::text[], %(kinds)s::text[], %(results)s::text[],
            %(run_ats)s::timestamptz[], %(delays)s::interval[], %(errors)s::text[])
     AS o(id, token, kind, result, run_at, delay, error)
WHERE j.id = o.id AND j.lease_token = o.token AND j.state = 'running'{where}
RETURNING {returning}
"""


#: Outcomes in their own transaction: the rows say which finished jobs have dependents.
OUTCOMES = _outcomes("", "j.id, j.state, j.has_dependents")


# A claim that records no outcomes commits without waiting for its WAL to reach the disk
# (synchronous_commit off for its own transaction only; about 0.15 ms of the time from enqueue
# to start). What a crash of the server can then cost: a claim made in the last moments before
# it (the WAL writer flushes within three wal_writer_delay, 0.6 s by default, and any later
# durable commit flushes it too) is forgotten, so the job is available again and runs again
# (at-least-once), that run not counted as an attempt; the worker's outcome for the forgotten
# claim no longer matches its lease and changes nothing. Enqueues and outcomes stay durable.
_NO_FLUSH_WAIT = "no_flush_wait AS (SELECT set_config('synchronous_commit', 'off', true))"


def _claim(first: str, full: bool) -> str:
    return (
        "WITH "
        + ",\n".join(
            [
                _SERVED,
                _lim(full),
                _candidates(first, "NOT (SELECT claimable FROM lim)", CLAIM_LIMIT),
                _CLAIM_UPDATE,
                _NO_FLUSH_WAIT,
            ]
        )
        + "\nSELECT claimed.*, lim.waiting, lim.claimable FROM lim CROSS JOIN no_flush_wait"
        " LEFT JOIN claimed ON true"
    )


# A claim in one statement. When a limited job may be taken, it claims nothing and says so
# (the last column): the backend then claims under the limits lock, limited jobs first.
CLAIM = _claim("", full=False)
CLAIM_ORDERED = _claim("s.rank, ", full=False)
CLAIM_FULL = _claim("", full=True)
CLAIM_FULL_ORDERED = _claim("s.rank, ", full=True)


def _exchange(first: str, full: bool) -> str:
    # Outcomes of finished attempts and the next claim in one statement (so one round trip and
    # one commit): the outcomes touch running rows, the claim available ones, so they never
    # meet. A terminal outcome of a job with dependents is left out (not in the returned ids):
    # the backend records it in a transaction that also resolves the dependents.
    done = (
        "done AS ("
        + _outcomes(
            f"\n  AND NOT (j.has_dependents AND o.kind IN {TERMINAL_KINDS})",
            "j.id, j.concurrency_key",
        )
        + ")"
    )
    # jobs this statement takes out of running still look running to the rest of it
    freed = """freed AS (
    SELECT concurrency_key AS key, count(*) AS n FROM done
    WHERE concurrency_key IS NOT NULL GROUP BY concurrency_key
)"""
    return (
        "WITH "
        + ",\n".join(
            [
                done,
                *([freed] if full else []),
                _SERVED,
                _lim(full, freed=True),
                _candidates(first, "NOT (SELECT claimable FROM lim)", CLAIM_LIMIT),
                _CLAIM_UPDATE,
            ]
        )
        + "\nSELECT claimed.*, d.ids, lim.waiting, lim.claimable\n"
        "FROM (SELECT array_agg(id) AS ids FROM done) AS d CROSS JOIN lim\n"
        "LEFT JOIN claimed ON true"
    )


EXCHANGE = _exchange("", full=False)
EXCHANGE_ORDERED = _exchange("s.rank, ", full=False)
EXCHANGE_FULL = _exchange("", full=True)
EXCHANGE_FULL_ORDERED = _exchange("s.rank, ", full=True)


def _limited_candidates(first: str) -> str:
    cols = (
        "l.id, l.concurrency_key, l.concurrency_limit, l.rate_key, l.rate_limit, "
        "l.rate_period, l.eff_priority, l.deadline, l.run_at"
    )
    return f"""
WITH {_SERVED}, open_groups AS (
    SELECT s.queue, s.rank, og.grp
    FROM served s CROSS JOIN LATERAL {_open_groups(_claimable(freed=False), "%(limit)s")} AS og
), cands AS (
    -- the first limited jobs in claim order, those within their limits
    SELECT l.*, s.rank FROM served s CROSS JOIN LATERAL (
        SELECT {cols} FROM {{t}} l
        WHERE l.state = 'available' AND l.limit_group IS NOT NULL AND l.queue = s.queue
        ORDER BY l.eff_priority DESC, l.deadline ASC NULLS LAST, l.run_at, l.id
        LIMIT %(scan)s
    ) l
    WHERE {_claimable(freed=False)}
  UNION
    -- and jobs of groups within their limits that wait behind groups at their limit
    SELECT l.*, og.rank FROM open_groups og CROSS JOIN LATERAL (
        SELECT {cols} FROM {{t}} l
        WHERE l.state = 'available' AND l.limit_group IS NOT NULL AND l.queue = og.queue
          AND l.limit_group = og.grp
        ORDER BY l.eff_priority DESC, l.deadline ASC NULLS LAST, l.run_at, l.id
        LIMIT %(limit)s
    ) l
)
SELECT c.id, c.concurrency_key, c.concurrency_limit, c.rate_key, c.rate_limit,
       (SELECT count(*) FROM {{t}} r
        WHERE r.state = 'running' AND r.concurrency_key = c.concurrency_key),
       (SELECT count(*) FROM {{rs}} x
        WHERE x.key = c.rate_key
          AND x.started_at > {NOW} - coalesce(c.rate_period, interval '0'))
FROM cands c
ORDER BY {first}c.eff_priority DESC, c.deadline ASC NULLS LAST, c.run_at, c.id
LIMIT %(scan)s
"""


# Read under the limits lock: limited candidates within their limits, in claim order, each
# with its key's running count and its rate key's starts in the window.
LIMITED_CANDIDATES = _limited_candidates("")
LIMITED_CANDIDATES_ORDERED = _limited_candidates("s.rank, ")


def _claim_limited(first: str) -> str:
    chosen = f"""chosen AS (
UPDATE {{t}} AS j
SET {_LEASE_SET}
FROM served s
WHERE j.id = ANY(%(chosen)s::bigint[]) AND j.state = 'available' AND j.queue = s.queue
RETURNING {J_COLUMNS}, s.rank, j.eff_priority)"""
    starts = f"""starts AS (
    INSERT INTO {{rs}} (key, started_at)
    SELECT rate_key, {NOW} FROM chosen WHERE rate_key IS NOT NULL
), old_starts AS (
    -- the sliding window only needs starts within the longest period of each key
    DELETE FROM {{rs}} x
    USING (SELECT c.rate_key, max(coalesce(j.rate_period, interval '0')) AS period
           FROM chosen c JOIN {{t}} j ON j.id = c.id
           WHERE c.rate_key IS NOT NULL GROUP BY c.rate_key) k
    WHERE x.key = k.rate_key AND x.started_at <= {NOW} - k.period
)"""
    return (
        "WITH "
        + ",\n".join(
            [_SERVED, chosen, starts, _candidates(first, "true", "%(fill)s"), _CLAIM_UPDATE]
        )
        + "\nSELECT chosen.*, 0 FROM chosen UNION ALL SELECT claimed.*, 1 FROM claimed"
    )


# Under the limits lock: the limited jobs select_limited chose, their rate starts, and
# unlimited jobs for the remaining slots, in one statement.
CLAIM_LIMITED = _claim_limited("")
CLAIM_LIMITED_ORDERED = _claim_limited("s.rank, ")

HEARTBEAT = f"""
UPDATE {{t}} AS j SET leased_until = {NOW} + %(lease)s
FROM unnest(%(ids)s::bigint[], %(tokens)s::text[]) AS l(id, token)
WHERE j.id = l.id AND j.lease_token = l.token AND j.state = 'running'
RETURNING j.id
"""

HELD = """
SELECT j.id FROM {t} AS j
JOIN unnest(%(ids)s::bigint[], %(tokens)s::text[]) AS l(id, token) ON j.id = l.id
WHERE j.lease_token = l.token AND j.state = 'running'
"""

SET_PROGRESS = """
UPDATE {t} SET progress = %(fraction)s, progress_message = %(message)s
WHERE id = %(id)s AND lease_token = %(token)s AND state = 'running'
RETURNING id
"""

RELEASE = """
UPDATE {t} AS j SET state = 'available', attempt = greatest(j.attempt - 1, 0),
    worker_id = NULL, leased_until = NULL, started_at = NULL
FROM unnest(%(ids)s::bigint[], %(tokens)s::text[]) AS l(id, token)
WHERE j.id = l.id AND j.lease_token = l.token AND j.state = 'running'
RETURNING j.id
"""

# -- dependencies ----------------------------------------------------------------------------

_FAILED = "(a.bad_id IS NOT NULL AND NOT j.allow_failed)"
# Dependencies that just ended (ids with their terminal state; a deleted job counts as
# cancelled): their edges are consumed, and each blocked dependent is unblocked when its last
# dependency resolved, or cancelled when one failed and it does not allow failure. Returns the
# dependents it changed; the backend repeats it for cancelled ones that have dependents.
RESOLVE = f"""
WITH fin AS (
    SELECT * FROM unnest(%(ids)s::bigint[], %(states)s::text[]) AS f(id, state)
), e AS (
    DELETE FROM {{d}} AS d USING fin WHERE d.dep_id = fin.id
    RETURNING d.job_id, d.dep_id, fin.state
), a AS (
    SELECT job_id, count(*) AS n,
           min(dep_id) FILTER (WHERE state <> 'completed') AS bad_id,
           (array_agg(state ORDER BY dep_id) FILTER (WHERE state <> 'completed'))[1] AS bad_state
    FROM e GROUP BY job_id
)
UPDATE {{t}} AS j SET
    deps_pending = greatest(j.deps_pending - a.n, 0),
    state = CASE WHEN {_FAILED} THEN 'cancelled'
                 WHEN j.deps_pending - a.n > 0 THEN 'blocked'
                 WHEN j.run_at > {NOW} THEN 'scheduled' ELSE 'available' END,
    finished_at = CASE WHEN {_FAILED} THEN {NOW} END,
    eff_priority = j.priority,
    errors = CASE WHEN {_FAILED} THEN j.errors || jsonb_build_array(jsonb_build_object(
        'attempt', j.attempt, 'at', (extract(epoch FROM {NOW}) * 1000000)::bigint,
        'type', 'DependencyFailed',
        'message', replace(replace(%(message)s, %(dep_mark)s, a.bad_id::text),
                           %(state_mark)s, a.bad_state),
        'traceback', NULL)) ELSE j.errors END
FROM a
WHERE j.id = a.job_id AND j.state = 'blocked'
RETURNING j.id, j.state, j.has_dependents, j.queue
"""

# -- operator actions ----------------------------------------------------------------------

_CANCELLED_ERROR = f"""errors || jsonb_build_array(jsonb_build_object(
        'attempt', 0, 'at', (extract(epoch FROM {NOW}) * 1000000)::bigint,
        'type', 'Cancelled', 'message', 'cancelled through the API', 'traceback', NULL))"""

CANCEL = f"""
UPDATE {{t}} SET state = 'cancelled', finished_at = {NOW}, leased_until = NULL,
    errors = {_CANCELLED_ERROR}
WHERE id = %(id)s AND state IN ({state_list_sql(sources(Action.CANCEL))})
RETURNING {COLUMNS}, has_dependents
"""

#: Which jobs a JobFilter selects (``search`` is an ILIKE pattern with \ escapes, or NULL).
FILTER = """(%(queue)s::text IS NULL OR queue = %(queue)s)
  AND (%(task)s::text IS NULL OR task = %(task)s)
  AND (%(state)s::text IS NULL OR state = %(state)s)
  AND (%(search)s::text IS NULL OR args ILIKE %(search)s ESCAPE '\\'
       OR kwargs ILIKE %(search)s ESCAPE '\\')"""

CANCEL_MANY = f"""
UPDATE {{t}} SET state = 'cancelled', finished_at = {NOW}, leased_until = NULL,
    errors = {_CANCELLED_ERROR}
WHERE state IN ({state_list_sql(sources(Action.CANCEL))}) AND {FILTER}
RETURNING id, has_dependents
"""

_RETRY_SET = f"""state = 'available', run_at = {NOW}, eff_priority = priority,
    max_attempts = greatest(max_attempts, attempt + 1), finished_at = NULL, result = NULL,
    worker_id = NULL, leased_until = NULL"""

RETRY = f"""
UPDATE {{t}} SET {_RETRY_SET}
WHERE id = %(id)s AND state IN ({state_list_sql(sources(Action.MANUAL_RETRY))})
RETURNING {COLUMNS}
"""

RETRY_MANY = f"""
WITH picked AS (
    SELECT x.id FROM (
        SELECT id, unique_key,
               row_number() OVER (PARTITION BY unique_key ORDER BY id DESC) AS rn
        FROM {{t}}
        WHERE state IN ({state_list_sql(sources(Action.MANUAL_RETRY))}) AND {FILTER}
    ) x
    -- one job per unique_key at most, and none whose key an active job holds
    WHERE x.unique_key IS NULL OR (x.rn = 1 AND NOT EXISTS (
        SELECT 1 FROM {{t}} h WHERE h.unique_key = x.unique_key AND h.state IN ({ACTIVE})))
), retried AS (
    UPDATE {{t}} AS j SET {_RETRY_SET}
    FROM picked WHERE j.id = picked.id
      AND j.state IN ({state_list_sql(sources(Action.MANUAL_RETRY))})
    RETURNING j.queue
)
SELECT (SELECT count(*) FROM retried),
       (SELECT count(pg_notify(%(channel)s, queue)) FROM (SELECT DISTINCT queue FROM retried) q)
"""

DELETE = """
DELETE FROM {t} WHERE id = %(id)s AND state <> 'running' RETURNING state, has_dependents
"""

# -- maintenance -----------------------------------------------------------------------------

PROMOTE = f"""
UPDATE {{t}} SET state = 'available', eff_priority = priority
WHERE state = 'scheduled' AND run_at <= {NOW}
"""

RESCUE = f"""
UPDATE {{t}} SET
    state = CASE WHEN attempt >= max_attempts THEN 'dead' ELSE 'available' END,
    finished_at = CASE WHEN attempt >= max_attempts THEN {NOW} END,
    leased_until = NULL, eff_priority = priority, lost = lost + 1,
    errors = errors || jsonb_build_array(jsonb_build_object(
        'attempt', attempt, 'at', (extract(epoch FROM {NOW}) * 1000000)::bigint,
        'type', 'WorkerLost',
        'message', CASE WHEN attempt >= max_attempts
            THEN replace(%(dead)s, %(times_mark)s, (1 + (
                SELECT count(*) FROM jsonb_array_elements(errors) e
                WHERE e->>'type' = 'WorkerLost'))::text)
            ELSE replace(%(lost)s, %(worker_mark)s, coalesce(worker_id, '?')) END,
        'traceback', NULL))
WHERE state = 'running' AND leased_until < {NOW}
RETURNING id, state, has_dependents
"""

BOOST = f"least(%(max_boost)s, floor(extract(epoch FROM {NOW} - run_at) / %(every)s))::int"
AGE = f"""
UPDATE {{t}} SET eff_priority = priority + {BOOST}
WHERE state = 'available' AND run_at <= {NOW} - make_interval(secs => %(every)s)
  AND eff_priority < priority + {BOOST}
"""

PRUNE = f"""
DELETE FROM {{t}} WHERE id IN (
    SELECT id FROM {{t}}
    WHERE state IN ({TERMINAL}) AND state = ANY(%(states)s::text[])
      AND finished_at < {NOW} - %(older)s
    LIMIT %(limit)s)
"""

# Spares the ``keep`` most recently finished jobs of each state: per state, only jobs finished
# before that state's keep-th most recent one (by finished_at, then id) may go.
PRUNE_KEEP = f"""
DELETE FROM {{t}} WHERE id IN (
    SELECT x.id FROM unnest(%(states)s::text[]) AS s(state)
    CROSS JOIN LATERAL (
        SELECT k.finished_at, k.id FROM {{t}} k
        WHERE k.state IN ({TERMINAL}) AND k.state = s.state
        ORDER BY k.finished_at DESC, k.id DESC
        OFFSET %(keep)s - 1 LIMIT 1
    ) AS kept
    CROSS JOIN LATERAL (
        SELECT j.id FROM {{t}} j
        WHERE j.state IN ({TERMINAL}) AND j.state = s.state
          AND j.finished_at < {NOW} - %(older)s
          AND (j.finished_at, j.id) < (kept.finished_at, kept.id)
        LIMIT %(limit)s
    ) AS x
    LIMIT %(limit)s)
"""

LIST = f"""
SELECT {COLUMNS} FROM {{t}}
WHERE {FILTER}
  AND (%(before)s::bigint IS NULL OR id < %(before)s)
ORDER BY id DESC LIMIT %(limit)s
"""

# -- queues, periodic ticks, locks -----------------------------------------------------------

SET_QUEUE = """
INSERT INTO {qs} AS s (queue, paused, max_depth)
VALUES (%(queue)s, coalesce(%(paused)s::boolean, false),
        CASE WHEN %(set_depth)s THEN %(depth)s::integer END)
ON CONFLICT (queue) DO UPDATE SET
    paused = coalesce(%(paused)s::boolean, s.paused),
    max_depth = CASE WHEN %(set_depth)s THEN %(depth)s::integer ELSE s.max_depth END
RETURNING paused, max_depth
"""

QUEUE_SETTINGS = "SELECT queue, paused, max_depth FROM {qs} ORDER BY queue"

# Compare-and-set of a schedule's last tick: a row comes back only if ``tick`` is newer.
ADVANCE_TICK = """
INSERT INTO {ct} AS c (name, tick) VALUES (%(name)s, %(tick)s)
ON CONFLICT (name) DO UPDATE SET tick = excluded.tick WHERE c.tick < excluded.tick
RETURNING name
"""

CRON_TICKS = "SELECT name, tick FROM {ct}"

# Locks: one row per name; the token only ever grows (a released lock keeps its row). A lock
# is held up to and including its expiry instant, free after it.
ACQUIRE_LOCK = f"""
INSERT INTO {{lk}} AS l (name, owner, token, expires_at)
VALUES (%(name)s, %(owner)s, 1, {NOW} + %(ttl)s)
ON CONFLICT (name) DO UPDATE SET
    owner = excluded.owner, token = l.token + 1, expires_at = excluded.expires_at
WHERE l.expires_at IS NULL OR l.expires_at < {NOW}
RETURNING token
"""

RENEW_LOCK = f"""
UPDATE {{lk}} SET expires_at = {NOW} + %(ttl)s
WHERE name = %(name)s AND token = %(token)s AND expires_at IS NOT NULL
RETURNING token
"""

RELEASE_LOCK = """
UPDATE {lk} SET owner = NULL, expires_at = NULL
WHERE name = %(name)s AND token = %(token)s AND expires_at IS NOT NULL
RETURNING token
"""
