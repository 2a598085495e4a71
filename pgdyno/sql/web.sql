-- Named statements of the dashboard (pgdyno/web/) and of the metrics sampler the dispatcher
-- runs. Names start with metrics_ or web_. Every value is a bound parameter.

-- name: metrics_counters_advance
-- Counts the jobs that finished in [counted_until, now() - settle) into metrics_counters and
-- moves the mark. `settle` leaves time for a finishing transaction that started before the
-- window's end to commit. The dispatcher's sampler and the dashboard both run it: the state
-- row serializes them, and one that finds it locked counts nothing this time.
-- The counters stay bounded whatever queue names clients invent: a queue gets counters of its
-- own when it matters (%(known)s, from web_queues_that_matter), already has some, or while fewer
-- than %(most)s queues have any (the busiest of a window first); the jobs of any other queue
-- are counted under the queue '' (no job's queue can have an empty name).
WITH mark AS (
    SELECT counted_until AS since, now() - %(settle)s::interval AS until
      FROM pgdyno.metrics_state
       FOR UPDATE SKIP LOCKED
), finished AS (
    SELECT j.queue, j.status, count(*) AS n
      FROM pgdyno.jobs_finished AS j, mark
     WHERE j.finished_at >= mark.since AND j.finished_at < mark.until
     GROUP BY j.queue, j.status
), newcomers AS (
    SELECT f.queue
      FROM finished AS f
     WHERE f.queue <> ALL(%(known)s::text[])
       AND NOT EXISTS (SELECT 1 FROM pgdyno.metrics_counters AS c WHERE c.queue = f.queue)
     GROUP BY f.queue
     ORDER BY sum(f.n) DESC, f.queue
     LIMIT greatest(%(most)s - (SELECT count(DISTINCT queue) FROM pgdyno.metrics_counters
                                 WHERE queue <> ''), 0)
), keyed AS (
    SELECT CASE WHEN f.queue = ANY(%(known)s::text[])
                  OR f.queue IN (SELECT queue FROM newcomers)
                  OR EXISTS (SELECT 1 FROM pgdyno.metrics_counters AS c WHERE c.queue = f.queue)
                THEN f.queue ELSE '' END AS queue,
           f.status, sum(f.n) AS n
      FROM finished AS f
     GROUP BY 1, 2
), counted AS (
    INSERT INTO pgdyno.metrics_counters AS c (queue, status, total)
    SELECT queue, status, n FROM keyed
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

-- name: web_queues_that_matter
-- The queues always shown one by one (pgdyno/web/summary.py): those a scale rule names, those
-- a live worker serves (heartbeat within %(expiry)s s) and the paused ones. Each is there by an
-- operator's doing (a --scale rule, a worker's --queue, a pause), never an enqueuing client's:
-- their number does not grow with the queue names clients invent.
SELECT coalesce(array_agg(name ORDER BY name), '{}')
  FROM (SELECT queue AS name FROM pgdyno.scale_rules
         UNION SELECT name FROM pgdyno.queues WHERE paused
         UNION SELECT unnest(queues) FROM pgdyno.workers
                WHERE stopped_at IS NULL
                  AND heartbeat_at > now() - make_interval(secs => %(expiry)s)) AS n;

-- name: web_queue_summary
-- The queues as the dashboard, /metrics, the sampler and `pgdyno queue list` show them: one
-- row per queue that matters (%(known)s, from web_queues_that_matter) and per queue among the
-- %(others)s deepest of the rest (most due ready + running jobs, then most scheduled, then by
-- name), in name order; then, when any is left, one row named '' (no job's queue can have an
-- empty name) summing all the others, `queues` saying how many. So at most known + others + 1
-- rows, however many queue names clients invent. A queue is known to this statement by a job
-- ready or running, a finished-jobs counter, a scale rule or a row in pgdyno.queues (a pause).
-- Figures: due ready, scheduled (ready, not yet due) and running jobs from the active partition
-- (read once: the claim index holds no running jobs), the oldest due ready job's wait in
-- seconds, finished jobs per status from the counters (kept bounded by
-- metrics_counters_advance), the scale rule's process type and its formation quantity, and
-- whether the queue is paused (pgdyno/pausing.py) and since when. The deepest are found by a
-- top-N sort (ties by byte order: no locale comparisons), never a sort of every queue.
WITH figures AS (
    -- One aggregate over every source of queue names (no join of 20,000 rows to another);
    -- by-value states only (counts, a minimum): the finished sums come from the small counters
    -- table afterwards.
    SELECT queue,
           count(*) FILTER (WHERE status = 'ready' AND run_at <= now()) AS ready,
           count(*) FILTER (WHERE status = 'ready' AND run_at > now()) AS scheduled,
           count(*) FILTER (WHERE status = 'running') AS running,
           min(run_at) FILTER (WHERE status = 'ready' AND run_at <= now()) AS oldest_run_at
      FROM (SELECT queue, status, run_at FROM pgdyno.jobs_active
            UNION ALL
            SELECT queue, NULL, NULL FROM pgdyno.metrics_counters
            UNION ALL
            SELECT queue, NULL, NULL FROM pgdyno.scale_rules
            UNION ALL
            SELECT name, NULL, NULL FROM pgdyno.queues) AS sources
     GROUP BY queue
), deepest AS (
    SELECT queue
      FROM figures
     WHERE queue <> ALL(%(known)s::text[]) AND queue <> ''
     ORDER BY ready + running DESC, scheduled DESC, queue COLLATE "C"
     LIMIT %(others)s
), summed AS (
    -- One pass: each queue shown is a group of its own, the rest one group named ''.
    SELECT CASE WHEN queue = ANY(%(known)s::text[]) OR queue IN (SELECT queue FROM deepest)
                THEN queue ELSE '' END AS name,
           count(*) FILTER (WHERE queue <> '') AS queues,
           sum(ready)::bigint AS ready, sum(scheduled)::bigint AS scheduled,
           sum(running)::bigint AS running, min(oldest_run_at) AS oldest_run_at
      FROM figures
     GROUP BY 1
), finished AS (
    SELECT CASE WHEN queue IN (SELECT name FROM summed) THEN queue ELSE '' END AS name,
           coalesce(sum(total) FILTER (WHERE status = 'done'), 0)::bigint AS done,
           coalesce(sum(total) FILTER (WHERE status = 'failed'), 0)::bigint AS failed,
           coalesce(sum(total) FILTER (WHERE status = 'cancelled'), 0)::bigint AS cancelled
      FROM pgdyno.metrics_counters
     GROUP BY 1
)
SELECT s.name AS queue, s.queues, r.process_type, f.quantity, s.ready, s.scheduled, s.running,
       greatest(extract(epoch FROM now() - s.oldest_run_at), 0)::float8 AS oldest_ready_age_s,
       coalesce(c.done, 0) AS done, coalesce(c.failed, 0) AS failed,
       coalesce(c.cancelled, 0) AS cancelled,
       coalesce(p.paused, false) AS paused,
       CASE WHEN p.paused THEN p.paused_at END AS paused_at
  FROM summed AS s
  LEFT JOIN finished AS c ON c.name = s.name
  LEFT JOIN pgdyno.scale_rules AS r ON r.queue = s.name
  LEFT JOIN pgdyno.formations AS f ON f.process_type = r.process_type
  LEFT JOIN pgdyno.queues AS p ON p.name = s.name
 ORDER BY s.name = '', s.name;

-- name: web_queue_status
-- `pgdyno status`: jobs per queue and status (every row of pgdyno.jobs, finished ones until
-- pruned) and the oldest due ready job's wait in seconds, for the queues that matter
-- (%(known)s) that have jobs and the %(others)s deepest others (most ready + running jobs,
-- then by name), in name order; then, when any is left, one row named '' summing the others,
-- `queues` saying how many.
WITH counts AS (
    SELECT queue,
           count(*) FILTER (WHERE status = 'ready') AS ready,
           count(*) FILTER (WHERE status = 'running') AS running,
           count(*) FILTER (WHERE status = 'done') AS done,
           count(*) FILTER (WHERE status = 'failed') AS failed,
           count(*) FILTER (WHERE status = 'cancelled') AS cancelled,
           min(run_at) FILTER (WHERE status = 'ready' AND run_at <= now()) AS oldest_run_at
      FROM pgdyno.jobs
     GROUP BY queue
), deepest AS (
    SELECT queue
      FROM counts
     WHERE queue <> ALL(%(known)s::text[])
     ORDER BY ready + running DESC, queue COLLATE "C"
     LIMIT %(others)s
)
SELECT * FROM (
    -- One pass: each queue shown is a group of its own, the rest one group named ''.
    SELECT CASE WHEN queue = ANY(%(known)s::text[]) OR queue IN (SELECT queue FROM deepest)
                THEN queue ELSE '' END AS queue,
           count(*) AS queues, sum(ready)::bigint AS ready, sum(running)::bigint AS running,
           sum(done)::bigint AS done, sum(failed)::bigint AS failed,
           sum(cancelled)::bigint AS cancelled,
           extract(epoch FROM now() - min(oldest_run_at))::float8 AS oldest_ready_age_s
      FROM counts
     GROUP BY 1
) AS summed
ORDER BY queue = '', queue;

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

-- name: metrics_scale_events_count
-- Scale events per type and outcome ('ok' or 'error'; the error's text stays out of labels).
SELECT process_type, CASE WHEN outcome = 'ok' THEN 'ok' ELSE 'error' END, count(*)
  FROM pgdyno.scale_events
 GROUP BY 1, 2
 ORDER BY 1, 2;

-- name: web_queue_rates
-- Throughput of the queues shown (%(queues)s): finished jobs per minute over the last hour of
-- samples (the `at` index: an hour of the sampler's bounded rows).
SELECT queue,
       (max(finished_total) - min(finished_total))::float8
         / greatest(extract(epoch FROM max(at) - min(at)) / 60.0, 1.0) AS per_minute
  FROM pgdyno.metrics_samples
 WHERE at >= now() - interval '1 hour' AND queue = ANY(%(queues)s::text[])
 GROUP BY queue;

-- name: metrics_counted_until
-- Jobs that finished before this time are in the counters.
SELECT counted_until FROM pgdyno.metrics_state;

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
