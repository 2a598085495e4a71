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
-- Taken at the start of every scaling decision for a type and held until its commit.
SELECT quantity, extract(epoch FROM now() - known_at)::float8 AS known_age_s
  FROM pgdyno.formations
 WHERE process_type = %(process_type)s
   FOR UPDATE;

-- name: formation_try_lock
-- A worker's variant: it never waits for a dispatcher that is deciding (it would block its
-- loop, and its SIGTERM handling, for as long as an API call takes); it tries again later.
SELECT quantity, extract(epoch FROM now() - known_at)::float8 AS known_age_s
  FROM pgdyno.formations
 WHERE process_type = %(process_type)s
   FOR UPDATE SKIP LOCKED;

-- name: formation_set
UPDATE pgdyno.formations
   SET quantity = %(quantity)s, dyno_size = %(dyno_size)s, known_at = now(),
       last_error = NULL, last_error_at = NULL
 WHERE process_type = %(process_type)s;

-- name: formation_set_error
UPDATE pgdyno.formations
   SET last_error = %(error)s, last_error_at = now()
 WHERE process_type = %(process_type)s;

-- name: formations_all
SELECT process_type, quantity, dyno_size, known_at, last_error, last_error_at
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
