-- Named statements of the queue core, loaded by pgdyno/sql.py. Only pgdyno/queue.py runs them.
-- Every value is a bound parameter. `worker` is the claiming worker's id: a statement that
-- finishes, fails, releases or heartbeats a job checks it, so a worker whose lease expired
-- (and whose job was rescued and claimed again) can never overwrite the new owner's work.
-- Fencing: finish, fail, heartbeat and progress also check the attempt (`attempts`) the worker
-- ran, so not even the same worker records an old attempt over a newer one of the same job.
--
-- No statement moves a row between partitions with UPDATE. A job that finishes is DELETEd from
-- jobs_active and INSERTed into jobs_finished (what Postgres does for such an UPDATE anyway):
-- a claim whose snapshot still saw the job `ready` then finds it deleted and skips it, where a
-- moved row would raise "tuple to be locked was already moved to another partition due to
-- concurrent update" (SQLSTATE 40001) and put an ERROR line in the server log. The statements
-- name the partitions, so the parent table's statement triggers do not fire: the enqueue
-- NOTIFY (0001) is not for finished jobs, and the report-results cleanup (0003) is for
-- `pgdyno prune`'s deletes only. Every INSERT INTO pgdyno.jobs_finished below lists every
-- column of pgdyno.jobs (tests/integration/test_fencing.py checks it against the table):
-- a migration that adds a column adds it there too.

-- The enqueue statements run on the caller's connection, whose search_path pgdyno does not
-- set: every function, operator and type in them is schema-qualified, so nothing another role
-- created in a schema on that path (public, say) can stand in for the built-in one.

-- name: job_insert
INSERT INTO pgdyno.jobs (queue, task, args, priority, run_at, max_attempts, timeout)
VALUES (%(queue)s, %(task)s, %(args)s, %(priority)s,
        coalesce(%(run_at)s::pg_catalog.timestamptz,
                 pg_catalog.now() OPERATOR(pg_catalog.+)
                 coalesce(%(delay)s::pg_catalog.interval, '0 s')),
        coalesce(%(max_attempts)s::pg_catalog.int4, pgdyno.default_max_attempts()),
        %(timeout)s::pg_catalog.interval)
RETURNING id;

-- name: job_insert_unique
-- A job with a unique key: nothing happens while a ready or running job of the queue holds the key
-- (ON CONFLICT without a target: the partial unique index on jobs_active is the arbiter, see
-- migration 0010). A concurrent enqueue of the same key waits for the other's commit, then finds
-- the conflict. No row back means "taken": the caller looks the holder up (job_find_unique).
INSERT INTO pgdyno.jobs (queue, task, args, priority, run_at, max_attempts, timeout, unique_key)
VALUES (%(queue)s, %(task)s, %(args)s, %(priority)s,
        coalesce(%(run_at)s::pg_catalog.timestamptz,
                 pg_catalog.now() OPERATOR(pg_catalog.+)
                 coalesce(%(delay)s::pg_catalog.interval, '0 s')),
        coalesce(%(max_attempts)s::pg_catalog.int4, pgdyno.default_max_attempts()),
        %(timeout)s::pg_catalog.interval, %(unique_key)s)
ON CONFLICT DO NOTHING
RETURNING id;

-- name: job_find_unique
-- The ready or running job that holds a unique key (NULL once it has finished), through
-- pgdyno.unique_key_holder (migration 0010): an enqueue role granted --returning-id may call
-- it without reading the table.
SELECT pgdyno.unique_key_holder(%(queue)s, %(unique_key)s);

-- name: job_reserve_ids
-- For a batch: the transaction's now() and the default attempt budget (what the column
-- defaults would give) and, for a role that may write ids and COPY into jobs_active (pgdyno's
-- own), %(n)s ids from the table's own identity sequence for a COPY; NULL for any other role,
-- which inserts the batch with job_insert_many instead. The ids come ascending (nextval() in
-- one session only grows), as an array of one, the first, when they are consecutive (no other
-- session took one meanwhile: the usual case, which spares sending 20,000 numbers back and
-- forth), else all of them. The sequence is looked up once (an InitPlan; looked up for every
-- id before, it took most of this statement's time), then nextval() runs once per id inside
-- this one statement, as the column default would: a sequence hands out no block of values
-- atomically.
SELECT pg_catalog.now(), pgdyno.default_max_attempts(),
       CASE WHEN pg_catalog.has_column_privilege('pgdyno.jobs', 'id', 'INSERT')
                 AND pg_catalog.has_table_privilege('pgdyno.jobs_active', 'INSERT')
                 AND pgdyno.is_own_role()
            THEN (SELECT CASE WHEN pg_catalog.max(r.id) - pg_catalog.min(r.id) + 1 = %(n)s
                              THEN ARRAY[pg_catalog.min(r.id)]
                              ELSE pg_catalog.array_agg(r.id ORDER BY r.id) END
                    FROM (SELECT pg_catalog.nextval(
                                     (SELECT pg_catalog.pg_get_serial_sequence('pgdyno.jobs', 'id')
                                                 ::pg_catalog.regclass)) AS id
                            FROM (SELECT pg_catalog.generate_series(1, %(n)s)) AS g) AS r)
       END;

-- name: job_copy_in
-- {columns}: the columns some job of the batch sets (id, queue and task always; see
-- pgdyno/bulk.py), identifiers filled in by the caller from its fixed list; the others take
-- their defaults, which are the parent's. Text format, escaped by pgdyno/bulk.py. Straight into
-- the active partition, where every new job (status ready) goes: COPY then inserts in batches
-- (into the partitioned parent, whose statement trigger has a transition table, PostgreSQL
-- copies one row at a time). jobs_active's own enqueue trigger checks the rows and wakes their
-- queues as the parent's does (migration 0012).
COPY pgdyno.jobs_active ({columns}) FROM STDIN;

-- name: job_insert_many
-- A batch for a role that may not write ids: the ids come back in the order of the arrays
-- (rows are inserted, and returned, in ORDER BY order).
INSERT INTO pgdyno.jobs (queue, task, args, priority, run_at, max_attempts, timeout)
SELECT b.queue, b.task, b.args, b.priority, b.run_at, b.max_attempts, b.timeout
  FROM ROWS FROM (pg_catalog.unnest(%(queues)s::pg_catalog.text[]),
                 pg_catalog.unnest(%(tasks)s::pg_catalog.text[]),
                 pg_catalog.unnest(%(args)s::pg_catalog.jsonb[]),
                 pg_catalog.unnest(%(priorities)s::pg_catalog.int4[]),
                 pg_catalog.unnest(%(run_ats)s::pg_catalog.timestamptz[]),
                 pg_catalog.unnest(%(max_attempts)s::pg_catalog.int4[]),
                 pg_catalog.unnest(%(timeouts)s::pg_catalog.interval[]))
       WITH ORDINALITY AS b (queue, task, args, priority, run_at, max_attempts, timeout, n)
 ORDER BY b.n
RETURNING id;

-- name: job_complete_and_claim
-- The hot path: in one statement (one round trip, one commit) move the finished jobs to
-- jobs_finished as done and claim up to %(limit)s ready jobs, highest priority first, skipping
-- rows other workers hold. All CTEs see the same snapshot; they touch disjoint rows (running
-- vs ready). A finished job is recorded only while this worker still holds that attempt
-- (fencing); the ids it no longer held come back as 'refused' rows, after the claimed ones.
-- The finished jobs are found by `id = ANY(...)`, one primary key probe per id whatever the
-- statistics say; their attempts, and their results and peak memory where they have one, are
-- looked up in JSON objects built once (InitPlans). When every finished job ran the same
-- attempt (the usual case: all first attempts), %(done_attempt)s holds it and no attempt
-- object is built. Never join the target with unnest(ids, results): a plan made while ANALYZE
-- had seen no running job then scans all running jobs and re-reads the whole array for each
-- one (O(done x running): 24 ms instead of 1.5 ms for 300 jobs).
WITH reported AS (
    SELECT jsonb_object_agg(d.id::text, d.attempt)
               FILTER (WHERE %(done_attempt)s::integer IS NULL) AS attempts,
           jsonb_object_agg(d.id::text, jsonb_build_array(d.result::jsonb, d.peak))
               FILTER (WHERE d.result IS NOT NULL OR d.peak IS NOT NULL) AS outcomes
      FROM unnest(%(done_ids)s::bigint[], %(done_attempts)s::integer[],
                  %(done_results)s::text[], %(done_peaks)s::bigint[])
           AS d (id, attempt, result, peak)
), finished AS (
    DELETE FROM pgdyno.jobs_active AS j
     WHERE j.id = ANY(%(done_ids)s::bigint[]) AND j.status = 'running' AND j.worker = %(worker)s
       AND j.attempts = coalesce(%(done_attempt)s::integer,
                                 ((SELECT attempts FROM reported) ->> j.id::text)::integer,
                                 j.attempts)
    RETURNING j.*
), moved AS (
    INSERT INTO pgdyno.jobs_finished (
           id, queue, task, args, status, priority, run_at, attempts, max_attempts, last_error,
           created_at, started_at, finished_at, worker, lease_expires_at, result, progress,
           handbacks, timeout, peak_rss_bytes, unique_key, cancel_requested_at, awaited)
    OVERRIDING SYSTEM VALUE  -- the job keeps its id (0009 made it GENERATED ALWAYS)
    SELECT id, queue, task, args, 'done', priority, run_at, attempts, max_attempts, last_error,
           created_at, started_at, now(), worker, NULL,
           nullif((SELECT outcomes FROM reported) -> id::text -> 0, 'null'), NULL,
           handbacks, timeout, ((SELECT outcomes FROM reported) -> id::text ->> 1)::bigint,
           unique_key, cancel_requested_at, awaited
      FROM finished
    RETURNING id
), picked AS (
    -- One index scan per queue (each in claim order on the partial index), then merged.
    SELECT c.id
      FROM unnest(%(queues)s::text[]) AS q (name)
     CROSS JOIN LATERAL (
           SELECT id, priority, run_at
             FROM pgdyno.jobs
            WHERE status = 'ready' AND queue = q.name AND run_at <= now()
            ORDER BY priority DESC, run_at, id
            LIMIT %(limit)s
              FOR UPDATE SKIP LOCKED) AS c
     -- Paused queues (pgdyno.queues) are left out before their index is scanned: a filter on q
     -- alone, with the paused names read once per statement (an InitPlan on a tiny table).
     WHERE q.name <> ALL (ARRAY(SELECT p.name FROM pgdyno.queues AS p WHERE p.paused))
     ORDER BY c.priority DESC, c.run_at, c.id
     LIMIT %(limit)s
), claimed AS (
    UPDATE pgdyno.jobs AS j
       SET status = 'running', attempts = j.attempts + 1, started_at = now(),
           worker = %(worker)s, lease_expires_at = now() + %(lease)s::interval
      -- = ANY(ARRAY(...)) keeps this an index lookup even in a generic (prepared) plan, which
      -- cannot know how many rows LIMIT %(limit)s gives and would otherwise hash-join a seq scan.
     WHERE j.id = ANY(ARRAY(SELECT id FROM picked)) AND j.status = 'ready'
    -- args as text: the worker decodes each job's args on its own (queue.py), so args no
    -- client can decode fail that job alone instead of the whole claim.
    RETURNING j.id, j.queue, j.task, j.args::text AS args, j.attempts, j.max_attempts,
              extract(epoch FROM j.timeout)::float8 AS timeout
)
SELECT 'claimed' AS kind, c.* FROM claimed AS c
UNION ALL
SELECT 'refused', d.id, NULL, NULL, NULL, NULL, NULL, NULL
  FROM unnest(%(done_ids)s::bigint[]) AS d (id)
 WHERE (SELECT count(*) FROM moved) < cardinality(%(done_ids)s::bigint[])  -- once, cheap
   AND d.id NOT IN (SELECT id FROM moved);

-- name: worker_session_setup
-- The worker's own connection plans its prepared statements once (generic plans). Left to
-- itself Postgres re-plans job_complete_and_claim at every execution (a custom plan each
-- time: 0.25 ms of planning per claim, more than claiming one job costs). The generic plans
-- are guarded by tests (the claim index, no O(n^2) join).
SET plan_cache_mode = force_generic_plan;

-- name: worker_listen_probe
-- The LISTEN check (pgdyno/worker/health.py): a notification to the worker's private channel,
-- sent on its work connection, expected back on its LISTEN connection.
SELECT pg_notify(%(channel)s, %(token)s);

-- name: job_fail
-- A failed attempt: back to ready after %(retry_in)s (the row stays in jobs_active), or failed
-- for good when the attempt budget is spent or %(retry_in)s is NULL (retrying cannot help): moved
-- to jobs_finished. Only while this worker holds attempt %(attempt)s (NULL: any attempt it
-- holds); returns the job's new status, no row when the write was refused. A job whose cancel
-- was requested (cancel_requested_at) ends cancelled, never retried.
WITH held AS (
    SELECT j.id, %(retry_in)s::interval IS NOT NULL AND j.attempts < j.max_attempts
                 AND j.cancel_requested_at IS NULL AS retry
      FROM pgdyno.jobs_active AS j
     WHERE j.id = %(id)s AND j.status = 'running' AND j.worker = %(worker)s
       AND j.attempts = coalesce(%(attempt)s::integer, j.attempts)
), retried AS (
    UPDATE pgdyno.jobs_active AS j
       SET status = 'ready', run_at = now() + %(retry_in)s::interval, last_error = %(error)s,
           worker = NULL, lease_expires_at = NULL, progress = NULL,
           peak_rss_bytes = %(peak)s::bigint
      FROM held
     WHERE j.id = held.id AND held.retry AND j.status = 'running' AND j.worker = %(worker)s
    RETURNING j.status::text
), failed AS (
    DELETE FROM pgdyno.jobs_active AS j
     USING held
     WHERE j.id = held.id AND NOT held.retry AND j.status = 'running' AND j.worker = %(worker)s
    RETURNING j.*
), moved AS (
    INSERT INTO pgdyno.jobs_finished (
           id, queue, task, args, status, priority, run_at, attempts, max_attempts, last_error,
           created_at, started_at, finished_at, worker, lease_expires_at, result, progress,
           handbacks, timeout, peak_rss_bytes, unique_key, cancel_requested_at, awaited)
    OVERRIDING SYSTEM VALUE  -- the job keeps its id (0009 made it GENERATED ALWAYS)
    SELECT id, queue, task, args,
           CASE WHEN cancel_requested_at IS NULL THEN 'failed' ELSE 'cancelled' END::pgdyno.job_status,
           priority, run_at, attempts, max_attempts, %(error)s,
           created_at, started_at, now(), NULL, NULL, result, NULL, handbacks, timeout,
           %(peak)s::bigint, unique_key, cancel_requested_at, awaited
      FROM failed
    RETURNING status::text
)
SELECT status FROM retried
UNION ALL
SELECT status FROM moved;

-- name: job_heartbeat
-- Renews the lease of the attempts this worker runs (%(attempts)s[i] is the attempt of
-- %(ids)s[i]; NULL: any attempt it holds); returns the ids it holds. An attempt that was
-- rescued while this worker could not renew it (Postgres down longer than the lease, a stalled
-- loop) and that no one has claimed since is taken back (re-claimed): it still runs here.
UPDATE pgdyno.jobs_active AS j
   SET status = 'running', worker = %(worker)s, lease_expires_at = now() + %(lease)s::interval
 WHERE j.id = ANY(%(ids)s::bigint[])
   AND j.attempts = coalesce(
           (%(attempts)s::integer[])[array_position(%(ids)s::bigint[], j.id)], j.attempts)
   AND (j.status = 'running' AND j.worker = %(worker)s
        OR j.status = 'ready' AND j.worker IS NULL AND %(attempts)s::integer[] IS NOT NULL)
RETURNING j.id;

-- name: job_set_progress
-- Returns the id when written; no row when this worker no longer holds that attempt.
UPDATE pgdyno.jobs_active
   SET progress = %(progress)s::jsonb
 WHERE id = %(id)s AND status = 'running' AND worker = %(worker)s
   AND attempts = coalesce(%(attempt)s::integer, attempts)
RETURNING id;

-- name: job_release
-- Hands running jobs back: ready again at once, the attempt not counted. On shutdown %(ids)s
-- lists the jobs to hand back; after a lost connection %(ids)s is NULL and every job this
-- worker holds except %(keep)s goes back (a claim that committed but whose reply was lost).
-- Hand-backs on shutdown are counted (issue 12, migration 0008): after the first
-- pgdyno.free_handbacks() of a job each one keeps its attempt, and a job whose attempts are
-- then spent fails (HandedBack), instead of being handed back forever by a platform that
-- restarts dynos more often than the job takes. Lost-reply releases (%(ids)s NULL) never count.
-- A job whose cancel was requested is not handed back: it ends cancelled.
WITH released AS (
    UPDATE pgdyno.jobs
       SET status = CASE WHEN cancel_requested_at IS NOT NULL THEN 'cancelled'
                         WHEN %(ids)s::bigint[] IS NOT NULL
                          AND handbacks >= pgdyno.free_handbacks() AND attempts >= max_attempts
                         THEN 'failed' ELSE 'ready' END::pgdyno.job_status,
           finished_at = CASE WHEN cancel_requested_at IS NOT NULL THEN now()
                              WHEN %(ids)s::bigint[] IS NOT NULL
                               AND handbacks >= pgdyno.free_handbacks()
                               AND attempts >= max_attempts THEN now() END,
           last_error = CASE WHEN cancel_requested_at IS NULL AND %(ids)s::bigint[] IS NOT NULL
                              AND handbacks >= pgdyno.free_handbacks()
                              AND attempts >= max_attempts
                             THEN format('HandedBack: handed back %%s times on shutdown (the worker '
                                         'was stopped before the job finished, each time); its '
                                         'last attempt is spent', handbacks + 1)
                             ELSE last_error END,
           attempts = CASE WHEN %(ids)s::bigint[] IS NOT NULL
                            AND handbacks >= pgdyno.free_handbacks() THEN attempts
                           ELSE greatest(attempts - 1, 0) END,
           handbacks = handbacks + CASE WHEN %(ids)s::bigint[] IS NOT NULL THEN 1 ELSE 0 END,
           run_at = now(), started_at = NULL, worker = NULL, lease_expires_at = NULL, progress = NULL
     WHERE status = 'running' AND worker = %(worker)s
       AND (%(ids)s::bigint[] IS NULL OR id = ANY(%(ids)s::bigint[]))
       AND NOT id = ANY(%(keep)s::bigint[])
    RETURNING id, queue, status
)
SELECT r.id, CASE WHEN r.status = 'ready' THEN pg_notify('pgdyno_jobs', r.queue) END IS NULL
  FROM released AS r;

-- name: job_rescue_expired
-- Jobs whose worker stopped renewing the lease (killed, dyno lost) go back to ready, the lost
-- attempt counted; on the last attempt they fail (moved to jobs_finished), and a job whose
-- cancel was requested ends cancelled. Any worker or dispatcher may run this; a worker renews
-- its own leases before it rescues anything.
WITH expired AS (
    SELECT id, attempts < max_attempts AND cancel_requested_at IS NULL AS retry,
           format('LeaseExpired: worker %%s stopped renewing its lease during attempt %%s',
                  worker, attempts) AS error
      FROM pgdyno.jobs_active
     WHERE status = 'running' AND lease_expires_at < now()
       FOR UPDATE SKIP LOCKED
), retried AS (
    UPDATE pgdyno.jobs_active AS j
       SET status = 'ready', run_at = now(), last_error = expired.error,
           worker = NULL, lease_expires_at = NULL, progress = NULL
      FROM expired
     WHERE j.id = expired.id AND expired.retry AND j.status = 'running'
    RETURNING j.id, j.queue, j.status::text AS status, j.last_error
), failed AS (
    DELETE FROM pgdyno.jobs_active AS j
     USING expired
     WHERE j.id = expired.id AND NOT expired.retry AND j.status = 'running'
    RETURNING j.*, expired.error
), moved AS (
    INSERT INTO pgdyno.jobs_finished (
           id, queue, task, args, status, priority, run_at, attempts, max_attempts, last_error,
           created_at, started_at, finished_at, worker, lease_expires_at, result, progress,
           handbacks, timeout, peak_rss_bytes, unique_key, cancel_requested_at, awaited)
    OVERRIDING SYSTEM VALUE  -- the job keeps its id (0009 made it GENERATED ALWAYS)
    SELECT id, queue, task, args,
           CASE WHEN cancel_requested_at IS NULL THEN 'failed' ELSE 'cancelled' END::pgdyno.job_status,
           priority, now(), attempts, max_attempts, error,
           created_at, started_at, now(), NULL, NULL, result, NULL, handbacks, timeout,
           peak_rss_bytes, unique_key, cancel_requested_at, awaited
      FROM failed
    RETURNING id, queue, status::text AS status, last_error
), rescued AS (
    SELECT * FROM retried UNION ALL SELECT * FROM moved
)
SELECT r.id, r.queue, r.status, r.last_error,
       CASE WHEN r.status = 'ready' THEN pg_notify('pgdyno_jobs', r.queue) END IS NULL
  FROM rescued AS r;

-- name: hot_table_vacuum
-- See pgdyno/maintenance.py: workers keep jobs_active small between autovacuum's visits.
VACUUM (SKIP_LOCKED, TRUNCATE false) pgdyno.jobs_active;

-- name: job_next_due_in
-- Seconds until the earliest ready job of these queues is due (by the database's clock, so
-- worker clock skew does not matter); NULL when none is waiting.
SELECT extract(epoch FROM min(run_at) - now())::float8
  FROM pgdyno.jobs
 WHERE status = 'ready' AND queue = ANY(%(queues)s::text[]);

-- name: queue_status
SELECT queue, status::text, count(*),
       extract(epoch FROM now() - min(run_at) FILTER (WHERE status = 'ready' AND run_at <= now()))
  FROM pgdyno.jobs
 GROUP BY queue, status
 ORDER BY queue, status;

-- name: job_get
SELECT id, queue, task, args, status::text AS status, priority, run_at, attempts, max_attempts,
       last_error, created_at, started_at, finished_at, worker, lease_expires_at, result,
       progress, handbacks, timeout, peak_rss_bytes, unique_key, cancel_requested_at, awaited
  FROM pgdyno.jobs
 WHERE id = %(id)s;

-- name: job_list
SELECT id, queue, task, status::text AS status, priority, attempts, max_attempts, run_at,
       created_at, finished_at, last_error
  FROM pgdyno.jobs
 WHERE (%(queue)s::text IS NULL OR queue = %(queue)s)
   AND (%(status)s::text IS NULL OR status = %(status)s::pgdyno.job_status)
 ORDER BY id DESC
 LIMIT %(limit)s;

-- name: job_retry
-- A failed or cancelled job runs again with a fresh attempt budget (and free hand-backs);
-- the last error stays.
WITH retried AS (
    UPDATE pgdyno.jobs
       SET status = 'ready', attempts = 0, handbacks = 0, run_at = now(), started_at = NULL,
           finished_at = NULL, cancel_requested_at = NULL
     WHERE id = %(id)s AND status IN ('failed', 'cancelled')
    RETURNING id, queue
)
SELECT r.id, pg_notify('pgdyno_jobs', r.queue) IS NULL FROM retried AS r;

-- name: job_cancel
-- Only a job that has not started can be cancelled.
UPDATE pgdyno.jobs
   SET status = 'cancelled', finished_at = now()
 WHERE id = %(id)s AND status = 'ready'
RETURNING id;

-- name: job_prune
DELETE FROM pgdyno.jobs
 WHERE status IN ('done', 'failed', 'cancelled') AND finished_at < now() - %(older_than)s::interval;
