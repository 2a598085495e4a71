-- Claiming a job and moving it to history without re-checking what cannot have changed
-- (bench/PROFILE.md, "The drain's statement: CHECK constraints").
--
-- PostgreSQL evaluates every CHECK constraint of a table on every row an UPDATE or INSERT writes,
-- whatever the columns it changes. The CHECKs of 0001-0010 sat on pgdyno.jobs, so on both
-- partitions: a worker's claim (an UPDATE of jobs_active) and the move of a finished job into
-- jobs_finished each ran all fourteen, four of them regular expressions on the queue and task
-- names, which never change after insert. In a drain that was 4 of the ~30 µs of server time a
-- job costs (the complete-and-claim statement in a loop, 20,000 jobs, 300 a statement:
-- 33,000 jobs/s as before, 38,300 with these changes, 39,500 with no CHECK at all).
--
-- 1. The four name rules (queue and task: a non-empty name of at most 128 / 200 characters, no
--    whitespace at either end) move into the enqueue trigger, which already checks the names
--    for control characters once per statement when its rows share one queue and task (0012):
--    the same rules, constraint names, SQLSTATE (23514, check_violation) and message, for INSERT
--    and COPY, through pgdyno.jobs and jobs_active, for every role. A row that breaks one rule
--    is refused with that rule as before. A row or statement that breaks several is refused as
--    before, but the rule its error names may differ: the remaining CHECKs fire as each row is
--    written, the trigger's rules at the end of the statement (the least rule name over its
--    rows). A row that ON CONFLICT DO NOTHING skips is not checked by the trigger (it is not
--    written), as for the trigger's other rules.
-- 2. The other CHECK constraints move from pgdyno.jobs to jobs_active, the partition every
--    enqueued row goes to and every claim, heartbeat and retry updates: same names, same
--    expressions. jobs_finished receives rows only from pgdyno's own statements, which move
--    them out of jobs_active (checked there) and set status, finish time, result and memory
--    peak; no client role may write it. A later migration that adds a rule adds it to
--    jobs_active.

-- --- 1. the name rules, in the enqueue trigger ---------------------------------------------------

ALTER TABLE pgdyno.jobs
    DROP CONSTRAINT queue_must_be_a_non_empty_name,
    DROP CONSTRAINT queue_must_not_start_or_end_with_whitespace,
    DROP CONSTRAINT task_must_be_a_non_empty_name,
    DROP CONSTRAINT task_must_not_start_or_end_with_whitespace;

CREATE OR REPLACE FUNCTION pgdyno.notify_jobs_inserted() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pgdyno, pg_temp AS $$
DECLARE
    own boolean;
    beyond text;
    rule text;
    queues text[];
    listed text;
    queue_first text;
    queue_last text;
    task_first text;
    task_last text;
    due boolean;
BEGIN
    -- One pass over the statement's rows: whether the role is pgdyno's own (is_own_role(), an
    -- InitPlan: once per statement), the least and greatest queue and task (bytewise), whether
    -- a job is due now, and the least rule a row breaks among those that differ per row (the
    -- unique key's prefix, the args' size and depth). Args 64 levels deep take more than 500
    -- bytes (jsonb: 8 bytes a level at least), so only bigger ones are walked.
    SELECT (SELECT pg_has_role(current_user, c.relowner, 'USAGE') FROM pg_class AS c
             WHERE c.oid = 'pgdyno.jobs'::regclass),
           min(i.queue COLLATE "C"), max(i.queue COLLATE "C"),
           min(i.task COLLATE "C"), max(i.task COLLATE "C"),
           bool_or(i.status = 'ready' AND i.run_at <= now()),
           min(CASE WHEN i.unique_key ~ '^(schedule|report):'
                         AND NOT (SELECT pg_has_role(current_user, c.relowner, 'USAGE')
                                    FROM pg_class AS c WHERE c.oid = 'pgdyno.jobs'::regclass)
                    THEN 'unique_key_prefixes_schedule_and_report_are_pgdyno_s_own'
                    WHEN pg_column_size(i.args) > 1048576 THEN 'args_must_be_at_most_1_mb'
                    WHEN pg_column_size(i.args) > 500
                         AND jsonb_path_exists(i.args, 'strict $.**{64 to last}')
                    THEN 'args_must_nest_at_most_64_levels' END)
      INTO own, queue_first, queue_last, task_first, task_last, due, rule
      FROM inserted_jobs AS i;
    IF queue_first IS NOT DISTINCT FROM queue_last AND task_first IS NOT DISTINCT FROM task_last
    THEN
        -- One queue and one task (or no row): their names are checked once. A row's first
        -- broken rule is in the order of the name rules (as the CHECK constraints of 0001 fired:
        -- by name), the control characters of queue and task, then unique key, size, depth, and
        -- the error names the least over the rows: with one name each, the names' rule if they
        -- break one.
        IF NOT (queue_first ~ '[^[:space:]]' AND length(queue_first) <= 128) THEN
            rule := 'queue_must_be_a_non_empty_name';
        ELSIF queue_first ~ '^[[:space:]]|[[:space:]]$' THEN
            rule := 'queue_must_not_start_or_end_with_whitespace';
        ELSIF NOT (task_first ~ '[^[:space:]]' AND length(task_first) <= 200) THEN
            rule := 'task_must_be_a_non_empty_name';
        ELSIF task_first ~ '^[[:space:]]|[[:space:]]$' THEN
            rule := 'task_must_not_start_or_end_with_whitespace';
        ELSIF queue_first ~ pgdyno.invisible_characters() THEN
            rule := 'queue_must_not_contain_control_characters';
        ELSIF task_first ~ pgdyno.invisible_characters() THEN
            rule := 'task_must_not_contain_control_characters';
        END IF;
        queues := CASE WHEN due THEN ARRAY[queue_first] END;
    ELSE
        -- Several names: every row's first broken rule, as 0009-0011 did (the least over the
        -- rows), and the distinct queues to wake.
        SELECT min(CASE WHEN NOT (i.queue ~ '[^[:space:]]' AND length(i.queue) <= 128)
                        THEN 'queue_must_be_a_non_empty_name'
                        WHEN i.queue ~ '^[[:space:]]|[[:space:]]$'
                        THEN 'queue_must_not_start_or_end_with_whitespace'
                        WHEN NOT (i.task ~ '[^[:space:]]' AND length(i.task) <= 200)
                        THEN 'task_must_be_a_non_empty_name'
                        WHEN i.task ~ '^[[:space:]]|[[:space:]]$'
                        THEN 'task_must_not_start_or_end_with_whitespace'
                        WHEN i.queue ~ pgdyno.invisible_characters()
                        THEN 'queue_must_not_contain_control_characters'
                        WHEN i.task ~ pgdyno.invisible_characters()
                        THEN 'task_must_not_contain_control_characters'
                        WHEN i.unique_key ~ '^(schedule|report):' AND NOT own
                        THEN 'unique_key_prefixes_schedule_and_report_are_pgdyno_s_own'
                        WHEN pg_column_size(i.args) > 1048576 THEN 'args_must_be_at_most_1_mb'
                        WHEN pg_column_size(i.args) > 500
                             AND jsonb_path_exists(i.args, 'strict $.**{64 to last}')
                        THEN 'args_must_nest_at_most_64_levels' END),  -- NULL: no rule broken
               array_agg(DISTINCT i.queue) FILTER (WHERE i.status = 'ready' AND i.run_at <= now())
          INTO rule, queues
          FROM inserted_jobs AS i;
    END IF;
    -- Who: a role other than pgdyno's own may only have set the enqueue columns. A role that
    -- could INSERT any other column (an id, a status, a lease) of the table the statement
    -- names (pgdyno.jobs, or the partition jobs_active) is refused outright: the rows cannot
    -- tell whether it did (an id looks the same whoever picked it).
    -- The table is a constant in each query, not TG_RELID: with a parameter there PL/pgSQL
    -- planned the query anew at every statement (its generic plan looked dearer than the
    -- custom ones), +117 µs on every enqueue role's single-row INSERT.
    IF NOT own AND TG_RELID = 'pgdyno.jobs'::regclass THEN
        SELECT string_agg(a.attname, ', ' ORDER BY a.attnum) INTO beyond
          FROM pg_attribute AS a
         WHERE a.attrelid = 'pgdyno.jobs'::regclass AND a.attnum > 0 AND NOT a.attisdropped
           AND a.attname <> ALL (pgdyno.enqueue_columns())
           AND has_column_privilege(a.attrelid, a.attnum, 'INSERT');
    ELSIF NOT own THEN
        SELECT string_agg(a.attname, ', ' ORDER BY a.attnum) INTO beyond
          FROM pg_attribute AS a
         WHERE a.attrelid = 'pgdyno.jobs_active'::regclass AND a.attnum > 0
           AND NOT a.attisdropped AND a.attname <> ALL (pgdyno.enqueue_columns())
           AND has_column_privilege(a.attrelid, a.attnum, 'INSERT');
    END IF;
    IF beyond IS NOT NULL THEN
        RAISE EXCEPTION 'role % may insert columns of %.% that clients must not set '
                        '(%): it may only set %', current_user, TG_TABLE_SCHEMA,
                        TG_TABLE_NAME, beyond, array_to_string(pgdyno.enqueue_columns(), ', ')
              USING ERRCODE = 'insufficient_privilege',
                    CONSTRAINT = 'enqueue_role_must_only_insert_enqueue_columns',
                    SCHEMA = 'pgdyno', TABLE = TG_TABLE_NAME,
                    HINT = format('run `pgdyno grant-enqueue %s` as the owner of pgdyno',
                                  current_user);
    END IF;
    -- What: bounds the column types do not give, on values that never change after insert.
    -- Named as rules of pgdyno.jobs whichever table the statement named.
    IF rule IS NOT NULL THEN
        RAISE EXCEPTION 'new row for relation "jobs" violates check constraint "%"', rule
              USING ERRCODE = 'check_violation', CONSTRAINT = rule, SCHEMA = 'pgdyno',
                    TABLE = 'jobs';
    END IF;
    IF queues IS NULL
       OR coalesce(current_setting('pgdyno.skip_notify', true), '') IN ('on', 'true', '1') THEN
        RETURN NULL;
    END IF;
    -- The decision is the commit's (0011) while the transaction's deferred trigger is armed.
    -- Once it has fired (SET CONSTRAINTS ... IMMEDIATE: at the end of each statement, before
    -- this trigger), this statement's queues are notified as before 0011.
    IF current_setting('pgdyno.wake_armed', true) IS DISTINCT FROM 'on' THEN
        FOREACH listed IN ARRAY queues LOOP
            PERFORM pg_notify('pgdyno_jobs', listed);
        END LOOP;
        RETURN NULL;
    END IF;
    -- Queue names never contain control characters (refused above): a newline separates them.
    listed := current_setting('pgdyno.wake_queues', true);
    IF coalesce(listed, '') = '' THEN
        listed := array_to_string(queues, E'\n');
    ELSE
        listed := array_to_string(ARRAY(SELECT DISTINCT q FROM unnest(
                      string_to_array(listed, E'\n') || queues) AS q), E'\n');
    END IF;
    listed := set_config('pgdyno.wake_queues', listed, true);
    RETURN NULL;
END
$$;

-- --- 2. the other rules, on jobs_active only -----------------------------------------------------

ALTER TABLE pgdyno.jobs
    DROP CONSTRAINT args_must_be_a_json_object,
    DROP CONSTRAINT attempts_must_not_be_negative,
    DROP CONSTRAINT attempts_must_not_exceed_max_attempts,
    DROP CONSTRAINT handbacks_must_not_be_negative,
    DROP CONSTRAINT max_attempts_must_be_between_1_and_1000,
    DROP CONSTRAINT priority_must_be_between_minus_1000_and_1000,
    DROP CONSTRAINT ready_job_must_have_an_attempt_left,
    DROP CONSTRAINT run_at_must_be_between_1970_and_2200,
    DROP CONSTRAINT running_job_must_have_a_lease,
    DROP CONSTRAINT timeout_must_be_between_1_second_and_1_day,
    DROP CONSTRAINT times_must_be_between_1970_and_2200,
    DROP CONSTRAINT unique_key_must_be_a_non_empty_key_of_at_most_200_characters;

ALTER TABLE pgdyno.jobs_active
    ADD CONSTRAINT args_must_be_a_json_object CHECK (jsonb_typeof(args) = 'object'),
    ADD CONSTRAINT attempts_must_not_be_negative CHECK (attempts >= 0),
    ADD CONSTRAINT attempts_must_not_exceed_max_attempts
        CHECK (attempts <= GREATEST(max_attempts, 1)),
    ADD CONSTRAINT handbacks_must_not_be_negative CHECK (handbacks >= 0),
    ADD CONSTRAINT max_attempts_must_be_between_1_and_1000
        CHECK (max_attempts >= 1 AND max_attempts <= 1000),
    ADD CONSTRAINT priority_must_be_between_minus_1000_and_1000
        CHECK (priority >= -1000 AND priority <= 1000),
    ADD CONSTRAINT ready_job_must_have_an_attempt_left
        CHECK (status <> 'ready' OR attempts < max_attempts),
    ADD CONSTRAINT run_at_must_be_between_1970_and_2200
        CHECK (run_at >= '1970-01-01 00:00:00+00' AND run_at <= '2200-01-01 00:00:00+00'),
    ADD CONSTRAINT running_job_must_have_a_lease
        CHECK (status <> 'running' OR lease_expires_at IS NOT NULL),
    ADD CONSTRAINT timeout_must_be_between_1_second_and_1_day
        CHECK (timeout >= '1 second' AND timeout <= '1 day'),
    ADD CONSTRAINT times_must_be_between_1970_and_2200
        CHECK (created_at >= '1970-01-01 00:00:00+00' AND created_at <= '2200-01-01 00:00:00+00'
               AND started_at >= '1970-01-01 00:00:00+00'
               AND started_at <= '2200-01-01 00:00:00+00'
               AND finished_at >= '1970-01-01 00:00:00+00'
               AND finished_at <= '2200-01-01 00:00:00+00'
               AND lease_expires_at >= '1970-01-01 00:00:00+00'
               AND lease_expires_at <= '2200-01-01 00:00:00+00'),
    ADD CONSTRAINT unique_key_must_be_a_non_empty_key_of_at_most_200_characters
        CHECK (unique_key IS NULL OR (unique_key ~ '[^[:space:]]' AND length(unique_key) <= 200));
