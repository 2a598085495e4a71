-- Named statements of schedules (pgdyno.schedules), run by pgdyno/schedules/. Every value is a
-- bound parameter.

-- name: schedule_insert
INSERT INTO pgdyno.schedules (name, task, queue, args, cron, every, timezone, source)
VALUES (%(name)s, %(task)s, %(queue)s, %(args)s, %(cron)s, %(every)s, %(timezone)s, %(source)s)
    ON CONFLICT (name) DO NOTHING
RETURNING name;

-- name: schedule_upsert_declared
-- A schedule declared with @pgdyno.periodic. A row of the same name from another source (the
-- CLI, a client's INSERT) is left alone: no row back. Pausing survives (not in the SET list).
INSERT INTO pgdyno.schedules AS s (name, task, queue, args, cron, every, timezone, source)
VALUES (%(name)s, %(task)s, %(queue)s, %(args)s, %(cron)s, %(every)s, %(timezone)s, 'python')
    ON CONFLICT (name) DO UPDATE
   SET task = excluded.task, queue = excluded.queue, args = excluded.args,
       cron = excluded.cron, every = excluded.every, timezone = excluded.timezone
 WHERE s.source = 'python'
   AND (s.task, s.queue, s.args, s.cron, s.every, s.timezone)
       IS DISTINCT FROM (excluded.task, excluded.queue, excluded.args, excluded.cron,
                         excluded.every, excluded.timezone)
RETURNING name;

-- name: schedules_remove_undeclared
DELETE FROM pgdyno.schedules
 WHERE source = 'python' AND NOT name = ANY(%(names)s::text[])
RETURNING name;

-- name: schedule_delete
DELETE FROM pgdyno.schedules WHERE name = %(name)s RETURNING name;

-- name: schedule_set_paused
UPDATE pgdyno.schedules SET paused = %(paused)s WHERE name = %(name)s RETURNING name;

-- name: schedules_all
SELECT name, task, queue, args, cron, every, timezone, paused, source, next_run_at,
       last_run_at, last_job_id, last_error
  FROM pgdyno.schedules
 ORDER BY name;

-- name: schedules_active
-- What the acting dispatcher goes through on each of its schedule turns, with the database's
-- clock (all dispatchers agree on it).
SELECT name, cron, every, timezone, next_run_at, last_error, now()
  FROM pgdyno.schedules
 WHERE NOT paused
 ORDER BY name;

-- name: schedule_set_first_run
-- The first scheduled time of a new (or changed, or resumed) schedule.
UPDATE pgdyno.schedules
   SET next_run_at = %(next_run_at)s
 WHERE name = %(name)s AND next_run_at IS NULL AND NOT paused;

-- name: schedule_advance
-- Claims the run due at %(expected)s: moves next_run_at on only if it still holds that time (the
-- row lock makes a second dispatcher wait, then find the new value and do nothing), in the
-- transaction that enqueues the run's job. No row back: another dispatcher did it, or the
-- schedule was changed or paused meanwhile.
UPDATE pgdyno.schedules
   SET next_run_at = %(next_run_at)s, last_run_at = %(scheduled_at)s, last_error = NULL
 WHERE name = %(name)s AND next_run_at = %(expected)s AND NOT paused
RETURNING task, queue, args;

-- name: schedule_set_job
UPDATE pgdyno.schedules SET last_job_id = %(job_id)s WHERE name = %(name)s;

-- name: schedule_set_error
UPDATE pgdyno.schedules SET last_error = %(error)s WHERE name = %(name)s;

-- name: schedule_run_lock_timeout
-- For the transaction that enqueues a run: the dispatcher never waits long on a lock another
-- session holds (an uncommitted job with the run's unique key, a schedule row being updated):
-- it gives up after 2 s and tries the run again shortly, while its other work goes on.
SET LOCAL lock_timeout = '2s';
