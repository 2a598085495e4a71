-- Scaling against real platform behaviour: when a type's next formation call may be made
-- (Retry-After, backoff after failures), the workers registry, and counted hand-backs.

-- No process calls the formation API for a type before not_before: set from a 429's
-- Retry-After ('retry_after', honoured by the dispatcher and every worker, across restarts) or
-- after failed calls ('backoff', which a starting dispatcher clears: a restart may have fixed
-- the token or the rule). failures counts consecutive failed calls; a success resets all three.
ALTER TABLE pgdyno.formations
    ADD COLUMN not_before       timestamptz,
    ADD COLUMN not_before_cause text,
    ADD COLUMN failures         integer NOT NULL DEFAULT 0,
    ADD CONSTRAINT not_before_cause_is_known
        CHECK (not_before_cause IS NULL OR not_before_cause IN ('retry_after', 'backoff'));

-- Every worker process registers here and heartbeats (pgdyno/registry.py): which dyno and
-- process type it is, which queues it serves, when it last ran a job. The dispatcher warns
-- about rule queues no worker of the type serves; a type is drained only when every queue its
-- workers serve is; a type's linger counts from the last time any of its workers was busy.
-- A worker is live while stopped_at is NULL and its heartbeat is recent; rows of stopped and
-- lost workers are deleted an hour later by the acting dispatcher.
CREATE TABLE pgdyno.workers (
    -- The worker's id, as in pgdyno.jobs.worker ("winston.1:4242:ab12").
    id           text PRIMARY KEY,
    dyno         text,
    -- Its own process type (DYNO without its number, or --process-type); NULL when unknown.
    process_type text,
    queues       text[]      NOT NULL,
    concurrency  integer     NOT NULL,
    pid          integer,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    -- The last moment it was known to run a job (now while it runs one); NULL: never ran one.
    busy_at      timestamptz,
    -- Jobs running at its last write.
    running      integer     NOT NULL DEFAULT 0,
    -- Set when it exits cleanly.
    stopped_at   timestamptz
);
CREATE INDEX workers_process_type_idx ON pgdyno.workers (process_type, started_at);

-- A job handed back on shutdown (SIGTERM: a scale-down, Heroku's daily restart, a deploy) does
-- not count an attempt the first pgdyno.free_handbacks() times; after that each hand-back
-- counts one, so a job longer than the platform's restart period ends failed instead of being
-- handed back forever. handbacks counts them all.
CREATE FUNCTION pgdyno.free_handbacks() RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS 'SELECT 3';

ALTER TABLE pgdyno.jobs
    ADD COLUMN handbacks integer NOT NULL DEFAULT 0,
    ADD CONSTRAINT handbacks_must_not_be_negative CHECK (handbacks >= 0);
