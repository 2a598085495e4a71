-- Named statements of the dashboard (pgdyno/web/) and of the metrics sampler the dispatcher
-- runs. Names start with metrics_ or web_. Every value is a bound parameter.

-- name: metrics_counters_advance
-- Counts the jobs that finished in [counted_until, now() - settle) into metrics_counters and
-- moves the mark. `settle` leaves time for a finishing transaction that started before the
-- window's end to commit. The dispatcher's sampler and the dashboard both run it: the state
-- row serializes them, and one that finds it locked counts nothing this time.
WITH mark AS (
    SELECT counted_until AS since, now() - %(settle)s::interval AS until
      FROM pgdyno.metrics_state
       FOR UPDATE SKIP LOCKED
), finished AS (
    SELECT j.queue, j.status, count(*) AS n
      FROM pgdyno.jobs_finished AS j, mark
     WHERE j.finished_at >= mark.since AND j.finished_at < mark.until
     GROUP BY j.queue, j.status
), counted AS (
    INSERT INTO pgdyno.metrics_counters AS c (queue, status, total)
    SELECT queue, status, n FROM finished
        ON CONFLICT (queue, status) DO UPDATE SET total = c.total + excluded.total
    RETURNING 1
), moved AS (
    UPDATE pgdyno.metrics_state AS s
       SET counted_until = mark.until
      FROM mark
     WHERE mark.until > mark.since
    RETURNING 1
)
SELECT (SELECT count(*) FROM counted), (SELECT count(*) FROM moved);

-- name: metrics_current
-- Per queue, now: its process type and that type's quantity, due ready and running jobs
-- (from the small active partition), and its finished-jobs total.
WITH active AS (
    SELECT queue,
           count(*) FILTER (WHERE status = 'ready' AND run_at <= now()) AS ready,
           count(*) FILTER (WHERE status = 'running') AS running
      FROM pgdyno.jobs_active
     GROUP BY queue
), finished AS (
    SELECT queue, sum(total)::bigint AS total FROM pgdyno.metrics_counters GROUP BY queue
), names AS (
    SELECT queue FROM active
     UNION SELECT queue FROM finished
     UNION SELECT queue FROM pgdyno.scale_rules
)
SELECT n.queue, r.process_type, f.quantity, coalesce(a.ready, 0)::integer,
       coalesce(a.running, 0)::integer, coalesce(t.total, 0)::bigint
  FROM names AS n
  LEFT JOIN active AS a USING (queue)
  LEFT JOIN finished AS t USING (queue)
  LEFT JOIN pgdyno.scale_rules AS r USING (queue)
  LEFT JOIN pgdyno.formations AS f ON f.process_type = r.process_type
 ORDER BY n.queue;

-- name: metrics_samples_insert
-- The tick's rows, and per process type the minute's most dynos and jobs (its queues summed).
WITH tick AS (
    SELECT s.*
      FROM unnest(%(queues)s::text[], %(process_types)s::text[], %(quantities)s::integer[],
                  %(ready)s::integer[], %(running)s::integer[], %(finished)s::bigint[])
           AS s (queue, process_type, quantity, ready, running, finished_total)
), samples AS (
    INSERT INTO pgdyno.metrics_samples
           (at, queue, process_type, quantity, ready, running, finished_total)
    SELECT now(), queue, process_type, quantity, ready, running, finished_total FROM tick
)
INSERT INTO pgdyno.metrics_minutes AS m (process_type, minute, quantity, depth)
SELECT process_type, date_trunc('minute', now()), max(quantity), sum(ready + running)
  FROM tick
 WHERE process_type IS NOT NULL
 GROUP BY process_type
    ON CONFLICT (process_type, minute) DO UPDATE
   SET quantity = greatest(m.quantity, excluded.quantity), depth = greatest(m.depth, excluded.depth);

-- name: metrics_samples_prune
WITH minutes AS (
    DELETE FROM pgdyno.metrics_minutes WHERE minute < now() - %(older_than)s::interval
)
DELETE FROM pgdyno.metrics_samples WHERE at < now() - %(older_than)s::interval;

-- name: metrics_counters_all
SELECT queue, status::text, total FROM pgdyno.metrics_counters ORDER BY queue, status;

-- name: metrics_scale_events_count
-- Scale events per type and outcome ('ok' or 'error'; the error's text stays out of labels).
SELECT process_type, CASE WHEN outcome = 'ok' THEN 'ok' ELSE 'error' END, count(*)
  FROM pgdyno.scale_events
 GROUP BY 1, 2
 ORDER BY 1, 2;

-- name: web_queue_overview
-- One row per known queue (jobs ready or running, finished jobs counted, a scaling rule, a row
-- in pgdyno.queues): live counts from jobs_active, finished counts from the counters,
-- throughput from the last hour of samples (finished jobs per minute), the counters' mark, and
-- whether the queue is paused (pgdyno/pausing.py) and since when.
WITH active AS (
    SELECT queue,
           count(*) FILTER (WHERE status = 'ready' AND run_at <= now()) AS ready,
           count(*) FILTER (WHERE status = 'ready' AND run_at > now()) AS scheduled,
           count(*) FILTER (WHERE status = 'running') AS running,
           extract(epoch FROM now() - min(run_at)
                   FILTER (WHERE status = 'ready' AND run_at <= now()))::float8 AS oldest
      FROM pgdyno.jobs_active
     GROUP BY queue
), finished AS (
    SELECT queue,
           sum(total) FILTER (WHERE status = 'done')::bigint AS done,
           sum(total) FILTER (WHERE status = 'failed')::bigint AS failed,
           sum(total) FILTER (WHERE status = 'cancelled')::bigint AS cancelled
      FROM pgdyno.metrics_counters
     GROUP BY queue
), rate AS (
    SELECT queue,
           (max(finished_total) - min(finished_total))::float8
             / greatest(extract(epoch FROM max(at) - min(at)) / 60.0, 1.0) AS per_minute
      FROM pgdyno.metrics_samples
     WHERE at >= now() - interval '1 hour'
     GROUP BY queue
), names AS (
    SELECT queue FROM active
     UNION SELECT queue FROM finished
     UNION SELECT queue FROM pgdyno.scale_rules
     UNION SELECT name FROM pgdyno.queues
)
SELECT n.queue, r.process_type,
       coalesce(a.ready, 0) AS ready, coalesce(a.scheduled, 0) AS scheduled,
       coalesce(a.running, 0) AS running, coalesce(f.done, 0) AS done,
       coalesce(f.failed, 0) AS failed, coalesce(f.cancelled, 0) AS cancelled,
       greatest(a.oldest, 0) AS oldest_ready_age_s, t.per_minute,
       (SELECT counted_until FROM pgdyno.metrics_state) AS counted_until,
       coalesce(p.paused, false) AS paused, CASE WHEN p.paused THEN p.paused_at END AS paused_at
  FROM names AS n
  LEFT JOIN active AS a USING (queue)
  LEFT JOIN finished AS f USING (queue)
  LEFT JOIN rate AS t USING (queue)
  LEFT JOIN pgdyno.scale_rules AS r USING (queue)
  LEFT JOIN pgdyno.queues AS p ON p.name = n.queue
 ORDER BY n.queue;

-- name: web_jobs_list
-- Newest first, a page at a time (`before`: the last id of the previous page). Run unprepared:
-- the planner sees the values, drops the filters that are NULL and picks the index that fits
-- (see the EXPLAIN guard in tests/web/test_queries.py).
SELECT id, queue, task, status::text AS status, priority, attempts, max_attempts, run_at,
       created_at, started_at, finished_at, worker, left(last_error, 300) AS last_error
  FROM pgdyno.jobs
 WHERE (%(queue)s::text IS NULL OR queue = %(queue)s::text)
   AND (%(status)s::pgdyno.job_status IS NULL OR status = %(status)s::pgdyno.job_status)
   AND (%(task)s::text IS NULL OR task = %(task)s::text)
   AND (%(before)s::bigint IS NULL OR id < %(before)s::bigint)
 ORDER BY id DESC
 LIMIT %(limit)s;

-- name: web_running_jobs
-- The running jobs and the worker that holds each (pgdyno.jobs.worker is the worker's id in
-- pgdyno.workers), for the Process types page: what each worker runs. From the small active
-- partition; at most %(limit)s rows.
SELECT worker, id, queue, task, started_at, cancel_requested_at
  FROM pgdyno.jobs_active
 WHERE status = 'running'
 ORDER BY worker, id
 LIMIT %(limit)s;

-- name: web_report_runs
SELECT j.id, j.status::text AS status, j.args ->> 'name' AS report, j.args -> 'params' AS params,
       j.queue, j.created_at, j.started_at, j.finished_at, j.result, j.progress,
       left(j.last_error, 300) AS last_error
  FROM pgdyno.jobs AS j
 WHERE j.task = 'report'
 ORDER BY j.id DESC
 LIMIT %(limit)s;

-- name: web_timeline_samples
-- A process type's samples of the last hour, one point per tick: its quantity and its queues'
-- ready + running jobs (summed: a type's queues are sampled together, at one `at`). Samples
-- are written when a figure changes (or once a minute), so each value holds until the next.
SELECT extract(epoch FROM at)::float8 AS t, max(quantity) AS quantity,
       sum(ready + running) AS depth
  FROM pgdyno.metrics_samples
 WHERE process_type = %(process_type)s AND at >= now() - %(range)s::interval
 GROUP BY at
 ORDER BY at;

-- name: web_timeline_minutes
-- The same from the per-minute table (a day, a week).
SELECT extract(epoch FROM date_bin(%(bucket)s::interval, minute, timestamptz '2000-01-01'))::float8
       AS t, max(quantity) AS quantity, max(depth) AS depth
  FROM pgdyno.metrics_minutes
 WHERE process_type = %(process_type)s AND minute >= now() - %(range)s::interval
 GROUP BY 1
 ORDER BY 1;

-- name: web_timeline_events
SELECT extract(epoch FROM at)::float8 AS t, from_quantity, to_quantity, reason, actor, outcome,
       request_id, duration_ms
  FROM pgdyno.scale_events
 WHERE process_type = %(process_type)s AND at >= now() - %(range)s::interval
 ORDER BY at
 LIMIT 2000;

-- name: web_now
SELECT extract(epoch FROM now())::float8;

-- name: web_session_setup
-- Each dashboard connection: a statement timeout, and read-only sessions in read-only mode.
SELECT set_config('statement_timeout', %(timeout)s, false),
       set_config('default_transaction_read_only', %(read_only)s, false);
