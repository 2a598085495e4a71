-- Jobs per day, queue and status: a report that runs on any pgdyno database.
-- param: since date = 2026-01-01           -- the first day counted
-- param: queues text[] = null              -- e.g. {reports,default}; null: every queue
-- set: statement_timeout = 5min            -- reports get their own limits
SELECT date_trunc('day', created_at)::date AS day, queue, status::text AS status,
       count(*) AS jobs
  FROM pgdyno.jobs
 WHERE created_at >= %(since)s
   AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[]))
 GROUP BY 1, 2, 3
 ORDER BY 1, 2, 3;
