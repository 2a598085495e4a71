-- Named statements for scaling: rules, the per-type lock row, queue load, scale events.

-- name: rules_clear
DELETE FROM pgdyno.scale_rules;

-- name: rule_upsert
INSERT INTO pgdyno.scale_rules (queue, process_type, max_quantity, jobs_per_dyno, dyno_size, linger_s)
VALUES (%(queue)s, %(process_type)s, %(max_quantity)s, %(jobs_per_dyno)s, %(dyno_size)s, %(linger_s)s)
ON CONFLICT (queue) DO UPDATE
   SET process_type = EXCLUDED.process_type, max_quantity = EXCLUDED.max_quantity,
       jobs_per_dyno = EXCLUDED.jobs_per_dyno, dyno_size = EXCLUDED.dyno_size,
       linger_s = EXCLUDED.linger_s, updated_at = now();

-- name: rules_all
SELECT queue, process_type, max_quantity, jobs_per_dyno, dyno_size, linger_s
  FROM pgdyno.scale_rules
 ORDER BY process_type, queue;

-- name: formation_ensure
INSERT INTO pgdyno.formations (process_type) VALUES (%(process_type)s)
ON CONFLICT (process_type) DO NOTHING;

-- name: formation_lock
-- Taken at the start of every scaling decision for a type and held until its commit. The
-- dispatcher and the workers both use SKIP LOCKED: a decision never waits for another (a
-- type's slow API call never delays another type's decision); the one that finds the row
-- locked tries again shortly (see scaling/scaler.py for why no job is stranded).
-- not_before_s: seconds until the formation API may be called for the type (0 or less: now).
SELECT quantity, extract(epoch FROM now() - known_at)::float8 AS known_age_s,
       extract(epoch FROM not_before - now())::float8 AS not_before_s, not_before_cause,
       failures
  FROM pgdyno.formations
 WHERE process_type = %(process_type)s
   FOR UPDATE SKIP LOCKED;

-- name: formation_wait_lock
-- The same, waiting for the lock (tests of the ordering argument hold a decision with it).
SELECT quantity, extract(epoch FROM now() - known_at)::float8 AS known_age_s,
       extract(epoch FROM not_before - now())::float8 AS not_before_s, not_before_cause,
       failures
  FROM pgdyno.formations
 WHERE process_type = %(process_type)s
   FOR UPDATE;

-- name: formation_set
-- A successful call: the quantity the platform reported; the failure state is cleared.
UPDATE pgdyno.formations
   SET quantity = %(quantity)s, dyno_size = %(dyno_size)s, known_at = now(),
       last_error = NULL, last_error_at = NULL, not_before = NULL, not_before_cause = NULL,
       failures = 0
 WHERE process_type = %(process_type)s;

-- name: formation_set_error
-- A failed or unanswered call: the quantity is no longer known (the platform may have applied
-- a PATCH it did not confirm), so the next decision reads the formation again; no call before
-- now() + %(retry_in)s seconds, for %(cause)s (retry_after or backoff).
UPDATE pgdyno.formations
   SET quantity = NULL, known_at = NULL, last_error = %(error)s, last_error_at = now(),
       failures = failures + 1,
       not_before = now() + make_interval(secs => %(retry_in)s), not_before_cause = %(cause)s
 WHERE process_type = %(process_type)s
RETURNING failures;

-- name: formations_clear_backoff
-- A starting dispatcher tries every type at once (its token or rules may have been fixed),
-- except those a Retry-After holds back.
UPDATE pgdyno.formations
   SET not_before = NULL, not_before_cause = NULL
 WHERE not_before_cause = 'backoff';

-- name: formations_all
SELECT process_type, quantity, dyno_size, known_at, last_error, last_error_at,
       CASE WHEN not_before > now() THEN not_before END AS not_before,
       CASE WHEN not_before > now() THEN not_before_cause END AS not_before_cause, failures
  FROM pgdyno.formations
 ORDER BY process_type;

-- name: queue_load
-- Ready (due) and running jobs per queue, for the queues of one process type. Counted from
-- the small active partition only. The ready jobs of a paused queue (pgdyno.queues) want no
-- dyno: they count as none; its running jobs still do.
SELECT q.name,
       count(j.id) FILTER (WHERE j.status = 'ready' AND j.run_at <= now() AND NOT q.paused),
       count(j.id) FILTER (WHERE j.status = 'running'),
       coalesce(extract(epoch FROM now() - min(j.run_at)
                FILTER (WHERE j.status = 'ready' AND j.run_at <= now() AND NOT q.paused)),
                0)::float8
  FROM (SELECT u.name, coalesce(p.paused, false) AS paused
          FROM unnest(%(queues)s::text[]) AS u (name)
          LEFT JOIN pgdyno.queues AS p ON p.name = u.name) AS q
  LEFT JOIN pgdyno.jobs_active AS j ON j.queue = q.name
 GROUP BY q.name;

-- name: type_idle_s
-- Seconds since any worker of the type was last busy, or a job of its queues finished
-- (NULL: neither within the last %(window)s seconds). Finished jobs are exact; the registry's
-- busy_at adds what they do not show (a failed attempt waiting for its retry), written by
-- each worker within a few seconds. Runs under the type's lock, only to time a linger.
SELECT extract(epoch FROM now() - greatest(
           (SELECT max(busy_at) FROM pgdyno.workers
             WHERE process_type = %(process_type)s
               AND busy_at > now() - make_interval(secs => %(window)s)),
           (SELECT max(finished_at) FROM pgdyno.jobs_finished
             WHERE queue = ANY(%(queues)s::text[])
               AND finished_at > now() - make_interval(secs => %(window)s))))::float8;

-- name: scale_event_insert
INSERT INTO pgdyno.scale_events
       (process_type, from_quantity, to_quantity, reason, actor, outcome, request_id, duration_ms)
VALUES (%(process_type)s, %(from_quantity)s, %(to_quantity)s, %(reason)s, %(actor)s,
        %(outcome)s, %(request_id)s, %(duration_ms)s);

-- name: scale_events_recent
SELECT id, at, process_type, from_quantity, to_quantity, reason, actor, outcome, request_id,
       duration_ms
  FROM pgdyno.scale_events
 WHERE (%(process_type)s::text IS NULL OR process_type = %(process_type)s)
 ORDER BY id DESC
 LIMIT %(limit)s;
