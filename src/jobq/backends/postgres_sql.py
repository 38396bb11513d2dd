"""The PostgreSQL backend's statements, by name. ``{t}`` is the schema's jobs table, bound by
the backend; ``%(now)s`` is an injected time or NULL for the database's ``now()``."""

from __future__ import annotations

from jobq.states import Action, sources, state_list_sql

COLUMNS = (
    "id, queue, task, args, kwargs, priority, deadline, run_at, attempt, max_attempts, timeout, "
    "unique_key, tags, state, worker_id, lease_token, leased_until, result, errors, created_at, "
    "started_at, finished_at"
)
ORDER = "eff_priority DESC, deadline ASC NULLS LAST, run_at, id"
NOW = "coalesce(%(now)s::timestamptz, now())"

ENQUEUE = f"""
WITH n AS (
    SELECT * FROM unnest(
        %(queue)s::text[], %(task)s::text[], %(args)s::text[], %(kwargs)s::text[],
        %(priority)s::int[], %(deadline)s::timestamptz[], %(run_at)s::timestamptz[],
        %(delay)s::interval[], %(max_attempts)s::int[], %(timeout)s::interval[],
        %(unique_key)s::text[], %(tags)s::text[]
    ) WITH ORDINALITY AS n(queue, task, args, kwargs, priority, deadline, run_at, delay,
                          max_attempts, timeout, unique_key, tags, ord)
), ids AS MATERIALIZED (
    -- ids in list order, so that FIFO among equal jobs follows the order they were given in
    SELECT ord, nextval(%(seq)s::regclass) AS id FROM n
), ins AS (
    INSERT INTO {{t}} AS j (id, queue, task, args, kwargs, priority, eff_priority, deadline,
                           run_at, max_attempts, timeout, unique_key, tags, state, created_at)
    SELECT ids.id, n.queue, n.task, n.args, n.kwargs, n.priority, n.priority, n.deadline,
           coalesce(n.run_at, {NOW} + coalesce(n.delay, interval '0')),
           n.max_attempts, n.timeout, n.unique_key, n.tags::text[],
           CASE WHEN coalesce(n.run_at, {NOW} + coalesce(n.delay, interval '0')) > {NOW}
                THEN 'scheduled' ELSE 'available' END,
           {NOW}
    FROM n JOIN ids USING (ord)
    ORDER BY ids.id
    ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL
        AND state IN ('scheduled', 'blocked', 'available', 'running') DO NOTHING
    RETURNING j.id, j.queue, j.state, j.run_at, j.created_at
), woken AS (
    -- one notification per queue that got available jobs, delivered on commit
    SELECT count(pg_notify(%(channel)s, queue)) AS n
    FROM (SELECT DISTINCT queue FROM ins WHERE state = 'available') AS q
)
SELECT ids.id, ins.state, ins.run_at, ins.created_at, (SELECT n FROM woken)
FROM ids LEFT JOIN ins ON ins.id = ids.id
ORDER BY ids.ord
"""

_CLAIM_CTES = f"""
served AS (
    SELECT queue, rank FROM unnest(%(queues)s::text[]) WITH ORDINALITY AS s(queue, rank)
), candidates AS (
    SELECT c.id, s.rank
    FROM served s CROSS JOIN LATERAL (
        SELECT id, eff_priority, deadline, run_at FROM {{t}}
        WHERE state = 'available' AND queue = s.queue
        ORDER BY {ORDER}
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    ) c
    ORDER BY {{first}}c.eff_priority DESC, c.deadline ASC NULLS LAST, c.run_at, c.id
    LIMIT %(limit)s
)"""
_CLAIM_UPDATE = f"""
UPDATE {{t}} AS j
SET state = 'running', attempt = j.attempt + 1, worker_id = %(worker)s,
    lease_token = left(md5(random()::text || j.id::text), 16),
    leased_until = {NOW} + %(lease)s, started_at = {NOW}
FROM candidates c
WHERE j.id = c.id
RETURNING {", ".join("j." + c.strip() for c in COLUMNS.split(","))}, c.rank, j.eff_priority"""
_CANDIDATES = "WITH " + _CLAIM_CTES + _CLAIM_UPDATE
CLAIM = _CANDIDATES.replace("{first}", "")
CLAIM_ORDERED = _CANDIDATES.replace("{first}", "s.rank, ")

HEARTBEAT = f"""
UPDATE {{t}} AS j SET leased_until = {NOW} + %(lease)s
FROM unnest(%(ids)s::bigint[], %(tokens)s::text[]) AS l(id, token)
WHERE j.id = l.id AND j.lease_token = l.token AND j.state = 'running'
RETURNING j.id
"""

TERMINAL_KINDS = "('completed', 'dead', 'cancelled', 'expired')"
NEXT_RUN = f"coalesce(o.run_at, {NOW} + o.delay)"
OUTCOMES = f"""
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
WHERE j.id = o.id AND j.lease_token = o.token AND j.state = 'running'
RETURNING j.id
"""

# Outcomes of finished attempts and the next claim in one statement (so one round trip and one
# commit): the outcomes touch running rows, the claim available ones, so they never meet.
# Every row carries the ids whose outcome applied; with nothing claimed there is one row.
_EXCHANGE = (
    "WITH done AS (" + OUTCOMES + "), " + _CLAIM_CTES + ", claimed AS (" + _CLAIM_UPDATE + ")\n"
    "SELECT claimed.*, d.ids FROM (SELECT array_agg(id) AS ids FROM done) AS d\n"
    "LEFT JOIN claimed ON true"
)
EXCHANGE = _EXCHANGE.replace("{first}", "")
EXCHANGE_ORDERED = _EXCHANGE.replace("{first}", "s.rank, ")

RELEASE = """
UPDATE {t} AS j SET state = 'available', attempt = greatest(j.attempt - 1, 0),
    worker_id = NULL, leased_until = NULL, started_at = NULL
FROM unnest(%(ids)s::bigint[], %(tokens)s::text[]) AS l(id, token)
WHERE j.id = l.id AND j.lease_token = l.token AND j.state = 'running'
RETURNING j.id
"""

CANCEL = f"""
UPDATE {{t}} SET state = 'cancelled', finished_at = {NOW}, leased_until = NULL,
    errors = errors || jsonb_build_array(jsonb_build_object(
        'attempt', 0, 'at', (extract(epoch FROM {NOW}) * 1000000)::bigint,
        'type', 'Cancelled', 'message', 'cancelled through the API', 'traceback', NULL))
WHERE id = %(id)s AND state IN ({state_list_sql(sources(Action.CANCEL))})
RETURNING {COLUMNS}
"""

RETRY = f"""
UPDATE {{t}} SET state = 'available', run_at = {NOW}, eff_priority = priority,
    max_attempts = greatest(max_attempts, attempt + 1), finished_at = NULL, result = NULL,
    worker_id = NULL, leased_until = NULL
WHERE id = %(id)s AND state IN ({state_list_sql(sources(Action.MANUAL_RETRY))})
RETURNING {COLUMNS}
"""

PROMOTE = f"""
UPDATE {{t}} SET state = 'available', eff_priority = priority
WHERE state = 'scheduled' AND run_at <= {NOW}
"""

RESCUE = f"""
UPDATE {{t}} SET
    state = CASE WHEN attempt >= max_attempts THEN 'dead' ELSE 'available' END,
    finished_at = CASE WHEN attempt >= max_attempts THEN {NOW} END,
    leased_until = NULL, eff_priority = priority,
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
"""

BOOST = f"least(%(max_boost)s, floor(extract(epoch FROM {NOW} - run_at) / %(every)s))::int"
AGE = f"""
UPDATE {{t}} SET eff_priority = priority + {BOOST}
WHERE state = 'available' AND run_at <= {NOW} - make_interval(secs => %(every)s)
  AND eff_priority < priority + {BOOST}
"""

LIST = f"""
SELECT {COLUMNS} FROM {{t}}
WHERE (%(queue)s::text IS NULL OR queue = %(queue)s)
  AND (%(task)s::text IS NULL OR task = %(task)s)
  AND (%(state)s::text IS NULL OR state = %(state)s)
  AND (%(before)s::bigint IS NULL OR id < %(before)s)
ORDER BY id DESC LIMIT %(limit)s
"""
