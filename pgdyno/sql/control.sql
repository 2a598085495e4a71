-- Named statements for controlling jobs and queues from outside a worker: cancelling a running
-- job, waiting for a result, pausing queues. Run by pgdyno/cancellation.py, pgdyno/results.py,
-- pgdyno/worker/cancels.py and pgdyno/pausing.py. Every value is a bound parameter.

-- name: job_request_cancel
-- Asks the worker running the job to stop it: the job ends cancelled once the worker has (or
-- when its lease expires, if the worker is gone). The NOTIFY reaches that worker at commit.
WITH requested AS (
    UPDATE pgdyno.jobs
       SET cancel_requested_at = coalesce(cancel_requested_at, now())
     WHERE id = %(id)s AND status = 'running'
    RETURNING id, worker
)
SELECT r.id, r.worker, pg_notify('pgdyno_control', 'cancel ' || r.id) IS NULL
  FROM requested AS r;

-- name: jobs_cancel_requested
-- Which of these running jobs of this worker have a cancel request.
SELECT id
  FROM pgdyno.jobs
 WHERE id = ANY(%(ids)s::bigint[]) AND status = 'running' AND worker = %(worker)s
   AND cancel_requested_at IS NOT NULL;

-- name: job_mark_awaited
-- pgdyno.result() waits for this job: it will NOTIFY pgdyno_finished with its id when it
-- finishes (the trigger of migration 0010).
UPDATE pgdyno.jobs
   SET awaited = true
 WHERE id = %(id)s AND status IN ('ready', 'running') AND awaited IS NOT TRUE;

-- name: result_unlisten
UNLISTEN pgdyno_finished;

-- name: job_outcome
SELECT status::text, result, last_error FROM pgdyno.jobs WHERE id = %(id)s;

-- name: queue_pause
INSERT INTO pgdyno.queues AS q (name, paused, paused_at)
VALUES (%(name)s, true, now())
    ON CONFLICT (name) DO UPDATE
   SET paused = true, paused_at = coalesce(q.paused_at, now()), updated_at = now();

-- name: queue_resume
-- Wakes the queue's workers (they claim at once) and the dispatcher (it scales up for it).
WITH resumed AS (
    UPDATE pgdyno.queues
       SET paused = false, paused_at = NULL, updated_at = now()
     WHERE name = %(name)s AND paused
    RETURNING name
)
SELECT pg_notify('pgdyno_jobs', %(name)s) IS NULL, (SELECT count(*) FROM resumed);

-- name: queues_paused
SELECT name, paused_at FROM pgdyno.queues WHERE paused ORDER BY name;
