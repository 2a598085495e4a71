-- Named statements of the sleepers registry (pgdyno/sleepers.py, pgdyno.sleepers, migration
-- 0011): the sessions waiting for jobs of a queue, the only queues the enqueue trigger
-- notifies.

-- name: sleepers_wait_for_jobs
-- Register (idle: notify me) and wait at most %(wait)s for the enqueuers that decided before
-- the registration to finish committing; true: none is left. The caller claims next.
SELECT pgdyno.wait_for_jobs(%(holder)s, %(queues)s, %(wait)s);

-- name: sleepers_stop_waiting
-- Busy: enqueuers of this session's queues stop notifying for it.
SELECT pgdyno.stop_waiting_for_jobs();

-- name: sleepers_prune
-- Rows of sessions that are gone; how many. An empty registry is not looked at further: in a
-- new session, planning the function's pg_stat_activity lookup is most of its cost (~2 ms of
-- every worker's start, before its first claim).
SELECT CASE WHEN EXISTS (SELECT FROM pgdyno.sleepers) THEN pgdyno.prune_sleepers() ELSE 0 END;
