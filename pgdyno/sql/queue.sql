-- Named statements of the queue core, loaded by pgdyno/sql.py. Only pgdyno/queue.py runs them.
-- Every value is a bound parameter. `worker` is the claiming worker's id: a statement that
-- finishes, fails, releases or heartbeats a job checks it, so a worker whose lease expired
-- (and whose job was rescued and claimed again) can never overwrite the new owner's work.

-- name: job_insert
INSERT INTO pgdyno.jobs (queue, task, args, priority, run_at, max_attempts)
VALUES (%(queue)s, %(task)s, %(args)s, %(priority)s,
        coalesce(%(run_at)s::timestamptz, now() + coalesce(%(delay)s::interval, '0 s')),
        coalesce(%(max_attempts)s::integer, pgdyno.default_max_attempts()))
RETURNING id;

-- name: job_insert_unique
-- A job with a unique key: nothing happens while a ready or running job of the queue holds the key
-- (ON CONFLICT without a target: the partial unique index on jobs_active is the arbiter, see
-- migration 0009). A concurrent enqueue of the same key waits for the other's commit, then finds
-- the conflict. No row back means "taken": the caller looks the holder up (job_find_unique).
INSERT INTO pgdyno.jobs (queue, task, args, priority, run_at, max_attempts, unique_key)
VALUES (%(queue)s, %(task)s, %(args)s, %(priority)s,
        coalesce(%(run_at)s::timestamptz, now() + coalesce(%(delay)s::interval, '0 s')),
        coalesce(%(max_attempts)s::integer, pgdyno.default_max_attempts()), %(unique_key)s)
ON CONFLICT DO NOTHING
RETURNING id;

-- name: job_find_unique
-- The ready or running job that holds a unique key (none once it has finished). Through the
-- parent table (pruned to jobs_active), so an enqueue role needs no grant on the partition.
SELECT id FROM pgdyno.jobs
 WHERE status IN ('ready', 'running') AND queue = %(queue)s AND unique_key = %(unique_key)s;

-- name: job_reserve_ids
-- For a COPY batch: the transaction's now() and the default attempt budget (what the column
-- defaults would give) and %(n)s ids from the table's own identity sequence.
SELECT now(), pgdyno.default_max_attempts(),
       array(SELECT nextval(pg_get_serial_sequence('pgdyno.jobs', 'id'))
               FROM generate_series(1, %(n)s));

-- name: job_copy_in
COPY pgdyno.jobs (id, queue, task, args, priority, run_at, max_attempts) FROM STDIN (FORMAT BINARY);

-- name: job_complete_and_claim
-- The hot path: in one statement (one round trip, one commit) mark the finished jobs done and
-- claim up to %(limit)s ready jobs, highest priority first, skipping rows other workers hold.
-- Both CTEs see the same snapshot; they touch disjoint rows (running vs ready).
-- The finished jobs are found by `id = ANY(...)`, one primary key probe per id whatever the
-- statistics say, and their results looked up in one JSON object built once (an InitPlan).
-- Never join the target with unnest(ids, results): a plan made while ANALYZE had seen no
-- running job then scans all running jobs and re-reads the whole array for each one
-- (O(done x running): 24 ms instead of 1.5 ms for 300 jobs).
WITH finished AS (
    UPDATE pgdyno.jobs AS j
       SET status = 'done', finished_at = now(), lease_expires_at = NULL, progress = NULL,
           result = (SELECT jsonb_object_agg(d.id::text, d.result::jsonb)
                       FROM unnest(%(done_ids)s::bigint[], %(done_results)s::text[])
                            AS d (id, result)
                      WHERE d.result IS NOT NULL) -> j.id::text
     WHERE j.id = ANY(%(done_ids)s::bigint[]) AND j.status = 'running' AND j.worker = %(worker)s
    RETURNING j.id
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
)
UPDATE pgdyno.jobs AS j
   SET status = 'running', attempts = j.attempts + 1, started_at = now(),
       worker = %(worker)s, lease_expires_at = now() + %(lease)s::interval
  -- = ANY(ARRAY(...)) keeps this an index lookup even in a generic (prepared) plan, which
  -- cannot know how many rows LIMIT %(limit)s gives and would otherwise hash-join a seq scan.
 WHERE j.id = ANY(ARRAY(SELECT id FROM picked)) AND j.status = 'ready'
RETURNING j.id, j.queue, j.task, j.args, j.attempts, j.max_attempts;

-- name: worker_session_setup
-- The worker's own connection plans its prepared statements once (generic plans). Left to
-- itself Postgres re-plans job_complete_and_claim at every execution (a custom plan each
-- time: 0.25 ms of planning per claim, more than claiming one job costs). The generic plans
-- are guarded by tests (the claim index, no O(n^2) join).
SET plan_cache_mode = force_generic_plan;

-- name: job_fail
-- A failed attempt: back to ready after %(retry_in)s, or failed for good when the attempt
-- budget is spent or %(retry_in)s is NULL (retrying cannot help).
-- A job whose cancel was requested (cancel_requested_at) ends cancelled, never retried.
UPDATE pgdyno.jobs AS j
   SET status = CASE WHEN j.cancel_requested_at IS NOT NULL THEN 'cancelled'
                     WHEN %(retry_in)s::interval IS NOT NULL AND j.attempts < j.max_attempts
                     THEN 'ready' ELSE 'failed' END::pgdyno.job_status,
       run_at = CASE WHEN %(retry_in)s::interval IS NOT NULL AND j.attempts < j.max_attempts
                          AND j.cancel_requested_at IS NULL
                     THEN now() + %(retry_in)s::interval ELSE j.run_at END,
       finished_at = CASE WHEN %(retry_in)s::interval IS NOT NULL AND j.attempts < j.max_attempts
                               AND j.cancel_requested_at IS NULL
                          THEN NULL ELSE now() END,
       last_error = %(error)s, worker = NULL, lease_expires_at = NULL, progress = NULL
 WHERE j.id = %(id)s AND j.status = 'running' AND j.worker = %(worker)s
RETURNING j.status::text;

-- name: job_heartbeat
-- Renews the lease of the jobs this worker runs; returns the ones it still holds.
UPDATE pgdyno.jobs
   SET lease_expires_at = now() + %(lease)s::interval
 WHERE id = ANY(%(ids)s::bigint[]) AND status = 'running' AND worker = %(worker)s
RETURNING id;

-- name: job_set_progress
UPDATE pgdyno.jobs
   SET progress = %(progress)s
 WHERE id = %(id)s AND status = 'running' AND worker = %(worker)s;

-- name: job_release
-- Hands running jobs back: ready again at once, the attempt not counted. On shutdown %(ids)s
-- lists the jobs to hand back; after a lost connection %(ids)s is NULL and every job this
-- worker holds except %(keep)s goes back (a claim that committed but whose reply was lost).
-- A job whose cancel was requested is not handed back: it ends cancelled.
WITH released AS (
    UPDATE pgdyno.jobs
       SET status = CASE WHEN cancel_requested_at IS NULL THEN 'ready'
                         ELSE 'cancelled' END::pgdyno.job_status,
           finished_at = CASE WHEN cancel_requested_at IS NULL THEN NULL ELSE now() END,
           attempts = greatest(attempts - 1, 0), run_at = now(),
           started_at = NULL, worker = NULL, lease_expires_at = NULL, progress = NULL
     WHERE status = 'running' AND worker = %(worker)s
       AND (%(ids)s::bigint[] IS NULL OR id = ANY(%(ids)s::bigint[]))
       AND NOT id = ANY(%(keep)s::bigint[])
    RETURNING id, queue, status
)
SELECT r.id, CASE WHEN r.status = 'ready' THEN pg_notify('pgdyno_jobs', r.queue) END IS NULL
  FROM released AS r;

-- name: job_rescue_expired
-- Jobs whose worker stopped renewing the lease (killed, dyno lost) go back to ready, the lost
-- attempt counted; on the last attempt they fail, and a job whose cancel was requested ends
-- cancelled. Any worker or dispatcher may run this.
WITH expired AS (
    SELECT id
      FROM pgdyno.jobs
     WHERE status = 'running' AND lease_expires_at < now()
       FOR UPDATE SKIP LOCKED
), rescued AS (
    UPDATE pgdyno.jobs AS j
       SET status = CASE WHEN j.cancel_requested_at IS NOT NULL THEN 'cancelled'
                         WHEN j.attempts < j.max_attempts
                         THEN 'ready' ELSE 'failed' END::pgdyno.job_status,
           finished_at = CASE WHEN j.attempts < j.max_attempts AND j.cancel_requested_at IS NULL
                              THEN NULL ELSE now() END,
           run_at = now(),
           last_error = format('LeaseExpired: worker %%s stopped renewing its lease during attempt %%s',
                               j.worker, j.attempts),
           worker = NULL, lease_expires_at = NULL, progress = NULL
      FROM expired
     WHERE j.id = expired.id AND j.status = 'running'
    RETURNING j.id, j.queue, j.status::text AS status, j.last_error
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
       progress
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
-- A failed or cancelled job runs again with a fresh attempt budget; the last error stays.
WITH retried AS (
    UPDATE pgdyno.jobs
       SET status = 'ready', attempts = 0, run_at = now(), started_at = NULL, finished_at = NULL,
           cancel_requested_at = NULL
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
