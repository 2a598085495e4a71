-- A worker that survives its jobs (issue 11): a per-job timeout a plain INSERT can set, and the
-- peak memory of a job's own process (process isolation, `pgdyno worker --pool process`).
--
-- timeout: how long one attempt may run; NULL: the task's own default (@pgdyno.task(timeout=)),
-- else none. An attempt that runs longer is stopped (process pool) or abandoned (thread pool)
-- and fails with `JobTimeout`, retried per the job's attempt budget.
--   INSERT INTO pgdyno.jobs (queue, task, args, timeout) VALUES ('q', 't', '{}', '2 seconds');
-- peak_rss_bytes: the job process's peak resident memory in its last attempt (process pool
-- only; NULL for jobs run in the worker's threads). `pgdyno jobs show` prints it.

ALTER TABLE pgdyno.jobs
    ADD COLUMN timeout interval,
    ADD COLUMN peak_rss_bytes bigint,
    -- A day is longer than any dyno lives (Heroku restarts every dyno daily). At least a
    -- second: any client may set it, and a job that times out at once on every attempt would
    -- wake its process type once per retry for weeks (1,000 attempts, backoff capped at 1 h).
    ADD CONSTRAINT timeout_must_be_between_1_second_and_1_day
        CHECK (timeout >= interval '1 second' AND timeout <= interval '1 day');
