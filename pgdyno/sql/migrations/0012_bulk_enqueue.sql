-- Bulk enqueue at the cost of the rows, not of the rules: the same enqueue contract, checked
-- with less work per row (bench/PROFILE.md, "Bulk enqueue, again").
--
-- Profiled on a COPY of 20,000 jobs into pgdyno.jobs (embedded PostgreSQL 18): the statement
-- trigger's query ran three regular expressions and pg_has_role() for every row (29 ms of
-- 128), and a COPY into a partitioned table whose statement trigger has a transition table
-- inserts one row at a time (copyfrom.c: CIM_SINGLE), where a plain table gets batched
-- inserts. So:
--
-- 1. The enqueue trigger (0009-0011) checks the names once when a statement's rows share one
--    queue and one task (a bulk batch of one kind of job, a single-row INSERT), asks
--    pg_has_role() once per statement, and only the rest per row: the same rules, the same
--    first rule reported (the least rule name over the rows, as before), the same errors.
--    Rows of several queues or tasks are checked row by row as before. (Grouping the rows by
--    (queue, task) instead cost every single-row INSERT 3 µs for its hash table.)
-- 2. jobs_active carries the same trigger, so that pgdyno.enqueue_many COPYs straight into it
--    (batched inserts, no tuple routing). A statement names one table and fires only that
--    table's statement triggers: an INSERT into pgdyno.jobs fires the parent's once, as
--    before; an INSERT or COPY into jobs_active fires the partition's once. Either way every
--    rule holds, and the privilege rule reads the privileges of the table the statement names:
--    a role that may insert other columns of jobs_active (a stray GRANT ... ON ALL TABLES) is
--    refused there as on the parent, where before 0012 nothing checked an insert into the
--    partition at all. Enqueue roles may not insert into the partitions (grant-enqueue revokes
--    it); the wake trigger of 0011 is a row trigger, cloned onto jobs_active since 0011.
--
-- Not changed: the CHECK constraints. Rewritten to answer a plain name without a regular
-- expression (first and last byte printable ASCII, else the same regex) and the times
-- without comparing NULLs, they took 10 ms off this COPY but cost every single-row INSERT 29 µs
-- more (PostgreSQL reads and prepares each CHECK expression once per statement, and the
-- rewritten ones were three times bigger): the single enqueue is the common one.

-- --- 1. the enqueue trigger ---------------------------------------------------------------------

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
        -- broken rule is in the order queue, task, unique key, size, depth, and the error names
        -- the least over the rows: with one name each, the names' rule if they break one.
        IF queue_first ~ pgdyno.invisible_characters() THEN
            rule := 'queue_must_not_contain_control_characters';
        ELSIF task_first ~ pgdyno.invisible_characters() THEN
            rule := 'task_must_not_contain_control_characters';
        END IF;
        queues := CASE WHEN due THEN ARRAY[queue_first] END;
    ELSE
        -- Several names: every row's first broken rule, as 0009-0011 did (the least over the
        -- rows), and the distinct queues to wake.
        SELECT min(CASE WHEN i.queue ~ pgdyno.invisible_characters()
                        THEN 'queue_must_not_contain_control_characters'
                        WHEN i.task ~ pgdyno.invisible_characters()
                        THEN 'task_must_not_contain_control_characters'
                        WHEN i.unique_key ~ '^(schedule|report):' AND NOT own
                        THEN 'unique_key_prefixes_schedule_and_report_are_pgdyno_s_own'
                        WHEN pg_column_size(i.args) > 1048576 THEN 'args_must_be_at_most_1_mb'
                        ELSE 'args_must_nest_at_most_64_levels' END)
                   FILTER (WHERE (i.queue || i.task) ~ pgdyno.invisible_characters()
                              OR (i.unique_key ~ '^(schedule|report):' AND NOT own)
                              OR pg_column_size(i.args) > 1048576
                              OR (pg_column_size(i.args) > 500
                                  AND jsonb_path_exists(i.args, 'strict $.**{64 to last}'))),
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

-- --- 2. the same trigger on the active partition ---------------------------------------------

CREATE TRIGGER jobs_active_notify_inserted
    AFTER INSERT ON pgdyno.jobs_active
    REFERENCING NEW TABLE AS inserted_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION pgdyno.notify_jobs_inserted();

