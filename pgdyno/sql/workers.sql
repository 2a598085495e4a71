-- Named statements of the workers registry (pgdyno/registry.py, pgdyno.workers). A worker is
-- live while stopped_at is NULL and its heartbeat is younger than %(expiry)s seconds.

-- name: worker_register
-- A worker's first write, and every later one: its row as of now. busy_at is now() while it
-- runs jobs, the moment it last stopped running one (%(idle_s)s seconds ago) otherwise, and
-- stays NULL until it ran one.
INSERT INTO pgdyno.workers AS w
       (id, dyno, process_type, queues, concurrency, pid, busy_at, running)
VALUES (%(id)s, %(dyno)s, %(process_type)s, %(queues)s, %(concurrency)s, %(pid)s,
        CASE WHEN %(running)s > 0 THEN now()
             WHEN %(idle_s)s::float8 IS NOT NULL THEN now() - make_interval(secs => %(idle_s)s)
        END,
        %(running)s)
    ON CONFLICT (id) DO UPDATE
   SET heartbeat_at = now(), running = excluded.running, stopped_at = NULL,
       busy_at = coalesce(excluded.busy_at, w.busy_at);

-- name: worker_stopped
UPDATE pgdyno.workers SET stopped_at = now(), running = 0, heartbeat_at = now()
 WHERE id = %(id)s;

-- name: workers_prune
-- Rows of workers that stopped or stopped heartbeating an hour ago (the dispatcher's timer).
DELETE FROM pgdyno.workers
 WHERE heartbeat_at < now() - make_interval(secs => %(older_than)s);

-- name: workers_queues_of_type
-- The queues the workers of a type serve: those of its live workers; when none is live, those
-- of its most recently started worker (what the type's command line was last seen to serve).
-- One row per queue; none when no worker of the type was ever seen.
WITH live AS (
    SELECT queues FROM pgdyno.workers
     WHERE process_type = %(process_type)s AND stopped_at IS NULL
       AND heartbeat_at > now() - make_interval(secs => %(expiry)s)
), latest AS (
    SELECT queues FROM pgdyno.workers
     WHERE process_type = %(process_type)s AND NOT EXISTS (SELECT 1 FROM live)
     ORDER BY started_at DESC
     LIMIT 1
)
SELECT DISTINCT unnest(queues) AS queue, (SELECT count(*) FROM live) AS live
  FROM (SELECT queues FROM live UNION ALL SELECT queues FROM latest) AS q
 ORDER BY 1;

-- name: workers_all
-- Every registered worker with its state: live, stopped (a clean exit) or lost (no heartbeat
-- for %(expiry)s seconds: killed, or its dyno vanished). For `pgdyno status` and the dashboard.
SELECT id, dyno, process_type, queues, concurrency, pid, started_at, heartbeat_at, busy_at,
       running, stopped_at,
       CASE WHEN stopped_at IS NOT NULL THEN 'stopped'
            WHEN heartbeat_at > now() - make_interval(secs => %(expiry)s) THEN 'live'
            ELSE 'lost' END AS state
  FROM pgdyno.workers
 ORDER BY process_type NULLS LAST, started_at;
