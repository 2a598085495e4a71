-- Bulk enqueue at the cost of the rows, not of the rules: the same enqueue contract, checked
-- with less work per row (bench/PROFILE.md, "Bulk enqueue, again").
--
-- Profiled on a COPY of 20,000 jobs into pgdyno.jobs (embedded PostgreSQL 18): the statement
-- trigger's query ran three regular expressions and pg_has_role() for every row (29 ms of
-- 128); the CHECK constraints ran four more regular expressions per row (24 ms); and a COPY
-- into a partitioned table whose statement trigger has a transition table inserts one row at
-- a time (copyfrom.c: CIM_SINGLE), where a plain table gets batched inserts. So:
--
-- 1. The enqueue trigger (0009-0011) checks what belongs to a row once per distinct (queue,
--    task) of the statement, and only the rest per row: the same rules, the same first rule
--    reported (the least rule name over the rows, as before), the same errors.
-- 2. jobs_active carries the same trigger, so that pgdyno.enqueue_many COPYs straight into it
--    (batched inserts, no tuple routing). A statement names one table and fires only that
--    table's statement triggers: an INSERT into pgdyno.jobs fires the parent's once, as
--    before; an INSERT or COPY into jobs_active fires the partition's once. Either way every
--    rule holds, and the privilege rule reads the privileges of the table the statement names:
--    a role that may insert other columns of jobs_active (a stray GRANT ... ON ALL TABLES) is
--    refused there as on the parent, where before 0012 nothing checked an insert into the
--    partition at all. Enqueue roles may not insert into the partitions (grant-enqueue revokes
--    it); the wake trigger of 0011 is a row trigger, cloned onto jobs_active since 0011.
-- 3. The CHECK constraints on names answer without a regular expression when the answer is
--    plain: a name whose first (and last) byte is printable ASCII other than the space
--    (0x21-0x7E) starts (and ends) with a character that no locale counts as [[:space:]], and in
--    every server encoding such a byte is a whole character; any other name is asked the same
--    regular expression as before. The times and the timeout skip comparing NULLs. Each CHECK
--    accepts exactly the values it accepted (tests/integration/test_bulk_contract.py compares
--    old and new expressions under every collation of the server), under the same name, so the
--    same error. Re-adding them validates every existing row once, as 0009 did.

-- --- 1. the enqueue trigger ---------------------------------------------------------------------

CREATE OR REPLACE FUNCTION pgdyno.notify_jobs_inserted() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pgdyno, pg_temp AS $$
DECLARE
    own boolean;
    beyond text;
    rule text;
    queues text[];
    listed text;
BEGIN
    -- Whether the role is pgdyno's own (is_own_role()), once per statement.
    own := pg_has_role(current_user, (SELECT c.relowner FROM pg_class AS c
                                       WHERE c.oid = 'pgdyno.jobs'::regclass), 'USAGE');
    -- One pass over the statement's rows, grouped by (queue, task): per row only what differs
    -- per row (the unique key's prefix, the args' size and depth), per group the names and
    -- whether it has a job due now; then the least rule broken (a row's first broken rule in
    -- the order queue, task, unique key, size, depth, as in 0009-0011) and the queues to wake.
    -- Args 64 levels deep take more than 500 bytes (jsonb: 8 bytes a level at least), so only
    -- bigger ones are walked. The column's collation is deterministic (a database's default
    -- collation always is), so a group holds byte-equal names only.
    SELECT min(CASE WHEN g.queue ~ pgdyno.invisible_characters()
                    THEN 'queue_must_not_contain_control_characters'
                    WHEN g.task ~ pgdyno.invisible_characters()
                    THEN 'task_must_not_contain_control_characters'
                    ELSE g.rule END),
           array_agg(DISTINCT g.queue) FILTER (WHERE g.due)
      INTO rule, queues
      FROM (SELECT i.queue, i.task,
                   bool_or(i.status = 'ready' AND i.run_at <= now()) AS due,
                   min(CASE WHEN i.unique_key ~ '^(schedule|report):' AND NOT own
                            THEN 'unique_key_prefixes_schedule_and_report_are_pgdyno_s_own'
                            WHEN pg_column_size(i.args) > 1048576 THEN 'args_must_be_at_most_1_mb'
                            WHEN pg_column_size(i.args) > 500
                                 AND jsonb_path_exists(i.args, 'strict $.**{64 to last}')
                            THEN 'args_must_nest_at_most_64_levels' END) AS rule
              FROM inserted_jobs AS i
             GROUP BY i.queue, i.task) AS g;
    -- Who: a role other than pgdyno's own may only have set the enqueue columns. A role that
    -- could INSERT any other column (an id, a status, a lease) of the table the statement
    -- names (pgdyno.jobs, or the partition jobs_active) is refused outright: the rows cannot
    -- tell whether it did (an id looks the same whoever picked it).
    IF NOT own THEN
        SELECT string_agg(a.attname, ', ' ORDER BY a.attnum) INTO beyond
          FROM pg_attribute AS a
         WHERE a.attrelid = TG_RELID AND a.attnum > 0 AND NOT a.attisdropped
           AND a.attname <> ALL (pgdyno.enqueue_columns())
           AND has_column_privilege(a.attrelid, a.attnum, 'INSERT');
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

-- --- 3. the CHECK constraints, cheaper ------------------------------------------------------------

ALTER TABLE pgdyno.jobs
    DROP CONSTRAINT queue_must_be_a_non_empty_name,
    DROP CONSTRAINT task_must_be_a_non_empty_name,
    DROP CONSTRAINT queue_must_not_start_or_end_with_whitespace,
    DROP CONSTRAINT task_must_not_start_or_end_with_whitespace,
    DROP CONSTRAINT unique_key_must_be_a_non_empty_key_of_at_most_200_characters,
    DROP CONSTRAINT timeout_must_be_between_1_second_and_1_day,
    DROP CONSTRAINT times_must_be_between_1970_and_2200,
    ADD CONSTRAINT queue_must_be_a_non_empty_name
        CHECK (((queue COLLATE "C" >= '!' AND queue COLLATE "C" < E'\x7f')
                OR queue ~ '[^[:space:]]')
               AND length(queue) <= 128),
    ADD CONSTRAINT task_must_be_a_non_empty_name
        CHECK (((task COLLATE "C" >= '!' AND task COLLATE "C" < E'\x7f')
                OR task ~ '[^[:space:]]')
               AND length(task) <= 200),
    ADD CONSTRAINT queue_must_not_start_or_end_with_whitespace
        CHECK ((queue COLLATE "C" >= '!' AND queue COLLATE "C" < E'\x7f'
                AND right(queue, 1) COLLATE "C" >= '!' AND right(queue, 1) COLLATE "C" < E'\x7f')
               OR queue !~ '^[[:space:]]|[[:space:]]$'),
    ADD CONSTRAINT task_must_not_start_or_end_with_whitespace
        CHECK ((task COLLATE "C" >= '!' AND task COLLATE "C" < E'\x7f'
                AND right(task, 1) COLLATE "C" >= '!' AND right(task, 1) COLLATE "C" < E'\x7f')
               OR task !~ '^[[:space:]]|[[:space:]]$'),
    ADD CONSTRAINT unique_key_must_be_a_non_empty_key_of_at_most_200_characters
        CHECK (unique_key IS NULL
               OR (((unique_key COLLATE "C" >= '!' AND unique_key COLLATE "C" < E'\x7f')
                    OR unique_key ~ '[^[:space:]]')
                   AND length(unique_key) <= 200)),
    ADD CONSTRAINT timeout_must_be_between_1_second_and_1_day
        CHECK (timeout IS NULL
               OR (timeout >= interval '1 second' AND timeout <= interval '1 day')),
    ADD CONSTRAINT times_must_be_between_1970_and_2200
        CHECK (created_at >= '1970-01-01 00:00:00+00' AND created_at <= '2200-01-01 00:00:00+00'
               AND (started_at IS NULL
                    OR (started_at >= '1970-01-01 00:00:00+00'
                        AND started_at <= '2200-01-01 00:00:00+00'))
               AND (finished_at IS NULL
                    OR (finished_at >= '1970-01-01 00:00:00+00'
                        AND finished_at <= '2200-01-01 00:00:00+00'))
               AND (lease_expires_at IS NULL
                    OR (lease_expires_at >= '1970-01-01 00:00:00+00'
                        AND lease_expires_at <= '2200-01-01 00:00:00+00')));
