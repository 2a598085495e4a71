-- Dashboard and Prometheus metrics: what `pgdyno web` reads besides the jobs and scaling tables.
--
-- metrics_samples: the queue depth and formation quantity over time, for the scaling timeline.
-- The acting dispatcher writes a sample on its reconcile ticks (pgdyno/web/sampler.py): one row
-- per queue, for a group of queues (those of one process type) whose figures changed, and at
-- least once a minute otherwise. `pgdyno prune` removes samples with the jobs.
--
-- metrics_counters: how many jobs of each queue reached each finished status, counted by the
-- same ticks from the finished_at index, a window at a time (metrics_state.counted_until), so
-- neither the dashboard nor a Prometheus scrape ever counts the whole history, and the counts
-- survive `pgdyno prune` (they back pgdyno_jobs_finished_total, a true counter).

CREATE TABLE pgdyno.metrics_samples (
    at             timestamptz NOT NULL,
    queue          text        NOT NULL,
    -- The process type the queue scales (from pgdyno.scale_rules); NULL for an unscaled queue.
    process_type   text,
    -- The type's formation quantity as pgdyno last knew it; NULL when unknown.
    quantity       integer,
    -- Due ready jobs and running jobs at `at`.
    ready          integer     NOT NULL,
    running        integer     NOT NULL,
    -- metrics_counters' total for the queue (all finished statuses) at `at`.
    finished_total bigint      NOT NULL
);
CREATE INDEX metrics_samples_type_at_idx ON pgdyno.metrics_samples (process_type, at);
CREATE INDEX metrics_samples_at_idx ON pgdyno.metrics_samples (at);

-- The same per process type and minute (the most dynos, the most ready + running jobs of its
-- queues), written with each sample: the day and week timelines read 1,440 or 10,080 rows per
-- type, not every sample.
CREATE TABLE pgdyno.metrics_minutes (
    process_type text        NOT NULL,
    minute       timestamptz NOT NULL,
    quantity     integer,
    depth        integer     NOT NULL,
    PRIMARY KEY (process_type, minute)
);

CREATE TABLE pgdyno.metrics_counters (
    queue  text              NOT NULL,
    status pgdyno.job_status NOT NULL,
    total  bigint            NOT NULL,
    PRIMARY KEY (queue, status)
);

-- One row: jobs that finished before counted_until are in metrics_counters.
CREATE TABLE pgdyno.metrics_state (
    singleton     boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    counted_until timestamptz NOT NULL
);

WITH start AS (
    INSERT INTO pgdyno.metrics_state (counted_until) VALUES (now()) RETURNING counted_until
)
INSERT INTO pgdyno.metrics_counters (queue, status, total)
SELECT j.queue, j.status, count(*)
  FROM pgdyno.jobs_finished AS j, start
 WHERE j.finished_at < start.counted_until
 GROUP BY j.queue, j.status;

-- The dashboard's job list filters by queue, task and status, newest first, over all the
-- history: without these, a filter that matches few of a million finished jobs would read
-- them all. The status index only holds failed and cancelled jobs (done is the common case,
-- found by the primary key).
CREATE INDEX jobs_finished_queue_id_idx ON pgdyno.jobs_finished (queue, id);
CREATE INDEX jobs_finished_task_id_idx ON pgdyno.jobs_finished (task, id);
CREATE INDEX jobs_finished_unsuccessful_idx ON pgdyno.jobs_finished (status, id)
    WHERE status IN ('failed', 'cancelled');
