-- What users of Sidekiq, Oban, River and Procrastinate look for first: unique jobs, schedules,
-- paused queues, cancelling a running job, and waiting for a job's result.
--
-- Every function here pins its search_path, so a role that can create objects in a schema on a
-- caller's path cannot slip its own operators or functions into them.

-- --- unique jobs ---------------------------------------------------------------------------------

-- While a job with this key is ready or running in its queue, enqueuing another one with the same
-- key gives the existing job (pgdyno.enqueue(..., unique_key=...), `pgdyno enqueue --unique-key`);
-- once it has finished, the key is free again. A plain INSERT may set it.
ALTER TABLE pgdyno.jobs ADD COLUMN unique_key text;
ALTER TABLE pgdyno.jobs ADD CONSTRAINT unique_key_must_be_a_non_empty_key_of_at_most_200_characters
    CHECK (unique_key IS NULL OR (unique_key ~ '[^[:space:]]' AND length(unique_key) <= 200));

-- On the active partition only, so finished jobs never hold a key. Postgres cannot infer this
-- index as the arbiter of `INSERT INTO pgdyno.jobs ... ON CONFLICT (queue, unique_key)` (the
-- parent has no such index, and a unique index on the parent would have to include the status),
-- so enqueuers write `ON CONFLICT DO NOTHING` without a target: the row goes to jobs_active,
-- whose unique indexes are the arbiters. Without ON CONFLICT, the INSERT fails with this name and
-- `Key (queue, unique_key)=(reports, daily-revenue) already exists.`
CREATE UNIQUE INDEX unique_key_is_taken_by_a_ready_or_running_job
    ON pgdyno.jobs_active (queue, unique_key) WHERE unique_key IS NOT NULL;

-- A plain INSERT from an enqueue role may set it (the enqueue contract of 0009): it joins the
-- enqueue columns, and the roles granted before get INSERT on it.
CREATE OR REPLACE FUNCTION pgdyno.enqueue_columns() RETURNS name[]
    LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pgdyno, pg_temp
    AS $$SELECT ARRAY['queue', 'task', 'args', 'priority', 'run_at', 'max_attempts', 'timeout',
                      'unique_key']::name[]$$;

-- The id of the ready or running job of `queue` that holds `key` (NULL: none), for
-- pgdyno.enqueue(..., unique_key=) run by an enqueue role, which may read no column of the
-- table but id. SECURITY DEFINER reads as the owner; only roles granted --returning-id (which
-- may read every job's id anyway) may call it.
CREATE FUNCTION pgdyno.unique_key_holder(queue text, key text) RETURNS bigint
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pgdyno, pg_temp
    AS $$
SELECT j.id FROM pgdyno.jobs_active AS j
 WHERE j.queue = unique_key_holder.queue AND j.unique_key = unique_key_holder.key
   AND j.status IN ('ready', 'running')
$$;
REVOKE EXECUTE ON FUNCTION pgdyno.unique_key_holder(text, text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION pgdyno.grant_enqueue_statements(role regrole, returning_id boolean)
    RETURNS SETOF text
    LANGUAGE sql STABLE SET search_path = pg_catalog, pgdyno, pg_temp
    AS $$
SELECT format('REVOKE INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON %s FROM %s',
              'pgdyno.jobs, pgdyno.jobs_active, pgdyno.jobs_finished', role)
UNION ALL
SELECT format('GRANT USAGE ON SCHEMA pgdyno TO %s', role)
UNION ALL
SELECT format('GRANT INSERT (%s) ON pgdyno.jobs TO %s',
              (SELECT string_agg(quote_ident(c), ', ') FROM unnest(pgdyno.enqueue_columns()) AS c),
              role)
UNION ALL
SELECT format('GRANT SELECT (id) ON pgdyno.jobs TO %s', role) WHERE returning_id
UNION ALL
SELECT format('GRANT EXECUTE ON FUNCTION pgdyno.unique_key_holder(text, text) TO %s', role)
 WHERE returning_id
$$;

-- Enqueue roles granted before this migration: the same grants again (they now include
-- unique_key, and the holder look-up for those that may read ids).
DO $$
DECLARE
    grantee regrole;
BEGIN
    FOR grantee IN
        SELECT r.oid::regrole
          FROM pg_roles AS r
         WHERE has_column_privilege(r.oid, 'pgdyno.jobs', 'queue', 'INSERT')
           AND NOT pg_has_role(r.oid, (SELECT relowner FROM pg_class
                                        WHERE oid = 'pgdyno.jobs'::regclass), 'USAGE')
    LOOP
        PERFORM pgdyno.grant_enqueue(
            grantee, has_column_privilege(grantee, 'pgdyno.jobs', 'id', 'SELECT'));
    END LOOP;
END
$$;

-- --- what clients may write, again -------------------------------------------------------------

-- Names that look like another: besides control characters (0009), queue and task names may not
-- hold invisible or look-alike characters (no-break and zero-width spaces, bidirectional
-- overrides, variation selectors, the byte order mark): 'reports' followed by a no-break space
-- reads as 'reports' in every listing, and no worker of `reports` would ever claim its jobs.
-- The same rule names as 0009's (`..._must_not_contain_control_characters`).
CREATE FUNCTION pgdyno.invisible_characters() RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pgdyno, pg_temp
    AS $$SELECT '[[:cntrl:]\u00a0\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u2000-\u200f\u2028-\u202f\u205f-\u206f\u3000\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufffb]'::text$$;

-- Unique keys starting `schedule:` or `report:` are pgdyno's own (a schedule's runs, and
-- `pgdyno report run --unique`): a client role taking one could hold back a scheduled run (a
-- held key makes the run's enqueue wait, or find the client's job instead of its own). The
-- enqueue trigger of 0009, with that rule and the invisible characters:
CREATE OR REPLACE FUNCTION pgdyno.notify_jobs_inserted() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pgdyno, pg_temp AS $$
DECLARE
    own boolean;
    beyond text;
    rule text;
    queues text[];
    queue text;
BEGIN
    -- One pass over the statement's rows: whether the role is pgdyno's own (is_own_role()),
    -- the first rule a row breaks, and the queues to notify. Args 64 levels deep take more
    -- than 500 bytes (jsonb: 8 bytes a level at least), so only bigger ones are walked.
    SELECT pg_has_role(current_user, (SELECT c.relowner FROM pg_class AS c
                                       WHERE c.oid = 'pgdyno.jobs'::regclass), 'USAGE'),
           min(CASE WHEN i.queue ~ pgdyno.invisible_characters()
                    THEN 'queue_must_not_contain_control_characters'
                    WHEN i.task ~ pgdyno.invisible_characters()
                    THEN 'task_must_not_contain_control_characters'
                    WHEN i.unique_key ~ '^(schedule|report):'
                         AND NOT pg_has_role(current_user, (SELECT c.relowner FROM pg_class AS c
                                              WHERE c.oid = 'pgdyno.jobs'::regclass), 'USAGE')
                    THEN 'unique_key_prefixes_schedule_and_report_are_pgdyno_s_own'
                    WHEN pg_column_size(i.args) > 1048576 THEN 'args_must_be_at_most_1_mb'
                    ELSE 'args_must_nest_at_most_64_levels' END)
               FILTER (WHERE (i.queue || i.task) ~ pgdyno.invisible_characters()
                          OR (i.unique_key ~ '^(schedule|report):'
                              AND NOT pg_has_role(current_user,
                                                  (SELECT c.relowner FROM pg_class AS c
                                                    WHERE c.oid = 'pgdyno.jobs'::regclass),
                                                  'USAGE'))
                          OR pg_column_size(i.args) > 1048576
                          OR (pg_column_size(i.args) > 500
                              AND jsonb_path_exists(i.args, 'strict $.**{64 to last}'))),
           array_agg(DISTINCT i.queue) FILTER (WHERE i.status = 'ready' AND i.run_at <= now())
      INTO own, rule, queues
      FROM inserted_jobs AS i;
    -- Who: a role other than pgdyno's own may only have set the enqueue columns. A role that
    -- could INSERT any other column (an id, a status, a lease) is refused outright: the rows
    -- cannot tell whether it did (an id looks the same whoever picked it).
    IF NOT own THEN
        SELECT string_agg(a.attname, ', ' ORDER BY a.attnum) INTO beyond
          FROM pg_attribute AS a
         WHERE a.attrelid = 'pgdyno.jobs'::regclass AND a.attnum > 0 AND NOT a.attisdropped
           AND a.attname <> ALL (pgdyno.enqueue_columns())
           AND has_column_privilege(a.attrelid, a.attnum, 'INSERT');
        IF beyond IS NOT NULL THEN
            RAISE EXCEPTION 'role % may insert columns of pgdyno.jobs that clients must not set '
                            '(%): it may only set %', current_user, beyond,
                            array_to_string(pgdyno.enqueue_columns(), ', ')
                  USING ERRCODE = 'insufficient_privilege',
                        CONSTRAINT = 'enqueue_role_must_only_insert_enqueue_columns',
                        SCHEMA = 'pgdyno', TABLE = 'jobs',
                        HINT = format('run `pgdyno grant-enqueue %s` as the owner of pgdyno',
                                      current_user);
        END IF;
    END IF;
    -- What: bounds the column types do not give, on values that never change after insert.
    IF rule IS NOT NULL THEN
        RAISE EXCEPTION 'new row for relation "jobs" violates check constraint "%"', rule
              USING ERRCODE = 'check_violation', CONSTRAINT = rule, SCHEMA = 'pgdyno',
                    TABLE = 'jobs';
    END IF;
    IF queues IS NULL
       OR coalesce(current_setting('pgdyno.skip_notify', true), '') IN ('on', 'true', '1') THEN
        RETURN NULL;
    END IF;
    FOREACH queue IN ARRAY queues LOOP
        PERFORM pg_notify('pgdyno_jobs', queue);
    END LOOP;
    RETURN NULL;
END
$$;

-- --- cancelling a running job ----------------------------------------------------------------------

-- Set by `pgdyno jobs cancel` / pgdyno.cancel() on a running job; the worker running it learns
-- of it by `NOTIFY pgdyno_control, 'cancel <id>'` (and by its poll), tells the task and stops its
-- query; the job then ends cancelled, never retried (the statements that would put it back to
-- ready finish it as cancelled instead).
ALTER TABLE pgdyno.jobs ADD COLUMN cancel_requested_at timestamptz;

-- --- waiting for a result ---------------------------------------------------------------------------

-- Set by pgdyno.result() on a job it waits for. Only such jobs notify when they finish, so the
-- hot path pays one boolean test per finished job, not a NOTIFY.
ALTER TABLE pgdyno.jobs ADD COLUMN awaited boolean;

CREATE FUNCTION pgdyno.notify_awaited_job_finished() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pgdyno, pg_temp AS $$
BEGIN
    PERFORM pg_notify('pgdyno_finished', NEW.id::text);
    RETURN NULL;
END
$$;

-- A job that finishes moves from jobs_active to jobs_finished: Postgres runs that UPDATE as a
-- DELETE and an INSERT, and fires the destination partition's AFTER INSERT row triggers.
CREATE TRIGGER jobs_finished_notify_awaited
    AFTER INSERT ON pgdyno.jobs_finished
    FOR EACH ROW WHEN (NEW.awaited) EXECUTE FUNCTION pgdyno.notify_awaited_job_finished();

-- --- paused queues ----------------------------------------------------------------------------------

-- `pgdyno queue pause|resume|list`. A paused queue's ready jobs are not claimed (running ones
-- finish) and do not ask for a dyno. A queue without a row is not paused.
CREATE TABLE pgdyno.queues (
    name       text        PRIMARY KEY,
    paused     boolean     NOT NULL DEFAULT false,
    paused_at  timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT queue_must_be_a_non_empty_name
        CHECK (name ~ '[^[:space:]]' AND length(name) <= 128),
    CONSTRAINT queue_must_not_start_or_end_with_whitespace
        CHECK (name !~ '^[[:space:]]|[[:space:]]$')
);

-- --- schedules ----------------------------------------------------------------------------------------

-- Recurring jobs. Written by `pgdyno schedule add`, by @pgdyno.periodic in the modules the
-- dispatcher imports (source 'python'), or by any client with a plain INSERT (a Rails app):
--
--   INSERT INTO pgdyno.schedules (name, task, queue, cron, timezone, args)
--   VALUES ('nightly-revenue', 'report', 'reports', '0 3 * * *', 'Europe/London',
--           '{"name": "revenue_by_month"}');
--
-- The acting dispatcher computes next_run_at (NULL until then) and, when it comes, enqueues one
-- job and moves next_run_at on, in one transaction that only succeeds if next_run_at still holds
-- the time it read: two dispatchers, a restart or a change of leader never enqueue one scheduled
-- time twice. The job's unique_key is 'schedule:<name>:<scheduled time in UTC>'.
CREATE TABLE pgdyno.schedules (
    name        text        PRIMARY KEY,
    task        text        NOT NULL,
    queue       text        NOT NULL DEFAULT 'default',
    args        jsonb       NOT NULL DEFAULT '{}',
    -- A cron expression (5 fields, or 6 with seconds first; @hourly, @daily, @weekly, @monthly,
    -- @yearly), read in `timezone`; or a fixed period, on a grid counted from the Unix epoch
    -- (every 15 minutes: at :00, :15, :30 and :45 UTC).
    cron        text,
    every       interval,
    timezone    text        NOT NULL DEFAULT 'UTC',
    paused      boolean     NOT NULL DEFAULT false,
    -- 'cli', 'python' (kept in step with the dispatcher's imports) or 'sql'.
    source      text        NOT NULL DEFAULT 'sql',
    -- The next scheduled time not enqueued yet. An UPDATE moves the next run (now(): at once).
    next_run_at timestamptz,
    -- The scheduled time of the last run enqueued, and its job.
    last_run_at timestamptz,
    last_job_id bigint,
    -- Why the dispatcher could not compute or enqueue the last run (bad cron expression, unknown
    -- time zone, a job the database refused); NULL once a run is enqueued.
    last_error  text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT schedule_name_must_be_a_non_empty_name_of_at_most_128_characters
        CHECK (name ~ '[^[:space:]]' AND length(name) <= 128),
    CONSTRAINT task_must_be_a_non_empty_name
        CHECK (task ~ '[^[:space:]]' AND length(task) <= 200),
    CONSTRAINT queue_must_be_a_non_empty_name
        CHECK (queue ~ '[^[:space:]]' AND length(queue) <= 128),
    CONSTRAINT queue_must_not_start_or_end_with_whitespace
        CHECK (queue !~ '^[[:space:]]|[[:space:]]$'),
    CONSTRAINT args_must_be_a_json_object CHECK (jsonb_typeof(args) = 'object'),
    -- As the enqueue trigger's rules for jobs: a schedule's runs are jobs.
    CONSTRAINT schedule_name_must_not_contain_control_characters
        CHECK (name !~ pgdyno.invisible_characters()),
    CONSTRAINT task_must_not_contain_control_characters
        CHECK (task !~ pgdyno.invisible_characters()),
    CONSTRAINT queue_must_not_contain_control_characters
        CHECK (queue !~ pgdyno.invisible_characters()),
    CONSTRAINT args_must_be_at_most_1_mb CHECK (pg_column_size(args) <= 1048576),
    CONSTRAINT schedule_needs_either_cron_or_every CHECK ((cron IS NULL) <> (every IS NULL)),
    CONSTRAINT cron_must_be_at_most_200_printable_characters
        CHECK (length(cron) <= 200 AND cron !~ pgdyno.invisible_characters()),
    CONSTRAINT every_must_be_between_1_second_and_100_years
        CHECK (every >= interval '1 second' AND every <= interval '100 years'),
    CONSTRAINT timezone_must_be_a_name_of_at_most_64_characters
        CHECK (timezone ~ '^[[:alnum:]_+/-]{1,64}$'),
    CONSTRAINT source_must_be_cli_python_or_sql CHECK (source IN ('cli', 'python', 'sql'))
);

-- A changed definition, or a resumed schedule, starts afresh from the next time after now: the
-- dispatcher recomputes next_run_at (runs skipped while paused are not made up for).
CREATE FUNCTION pgdyno.schedule_changed() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pgdyno, pg_temp AS $$
BEGIN
    IF (NEW.cron, NEW.every, NEW.timezone) IS DISTINCT FROM (OLD.cron, OLD.every, OLD.timezone)
       OR (OLD.paused AND NOT NEW.paused) THEN
        IF NEW.next_run_at IS NOT DISTINCT FROM OLD.next_run_at THEN
            NEW.next_run_at := NULL;
        END IF;
        NEW.last_error := NULL;
    END IF;
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

CREATE TRIGGER schedules_changed
    BEFORE UPDATE ON pgdyno.schedules
    FOR EACH ROW EXECUTE FUNCTION pgdyno.schedule_changed();

-- The acting dispatcher LISTENs on pgdyno_control: a schedule written by anyone is seen at once.
CREATE FUNCTION pgdyno.notify_schedules_changed() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pgdyno, pg_temp AS $$
BEGIN
    PERFORM pg_notify('pgdyno_control', 'schedules');
    RETURN NULL;
END
$$;

CREATE TRIGGER schedules_notify_changed
    AFTER INSERT OR UPDATE OR DELETE ON pgdyno.schedules
    FOR EACH STATEMENT EXECUTE FUNCTION pgdyno.notify_schedules_changed();

COMMENT ON TABLE pgdyno.schedules IS
    'pgdyno schedules. Add with INSERT INTO pgdyno.schedules (name, task, queue, cron, timezone, args) VALUES (...).';
