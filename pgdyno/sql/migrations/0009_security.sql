-- The enqueue contract, enforced by the database: what a client may write into pgdyno.jobs,
-- within which bounds, and for whom the rules hold.
--
-- pgdyno's own role (the owner of pgdyno.jobs, a member of it, or a superuser) runs workers
-- and dispatchers and may write any column. Every other role may INSERT only the columns of
-- pgdyno.enqueue_columns() (`pgdyno grant-enqueue ROLE` grants exactly those): it cannot choose
-- a job's id, status, attempts, worker, lease, result, progress or timestamps. Bounds hold for
-- every role: timestamps are finite times from 1970 to 2200 (CHECK constraints, so updates keep
-- them too), attempts stay within max_attempts, and the enqueue trigger refuses names with
-- control characters and args too big or too deep for clients to decode. (A number of
-- thousands of digits is accepted: the worker fails such a job alone, see pgdyno/queue.py.)
--
-- Every function here, and every pgdyno function before it, runs with a pinned search_path
-- (pg_catalog, pgdyno, then pg_temp): an object another role creates in a schema such as
-- public can never stand in for the built-in one it shadows.

-- The columns a client may set. `pgdyno grant-enqueue` grants INSERT on exactly these; a new
-- column a client may set (a later migration) is added here and granted again.
CREATE FUNCTION pgdyno.enqueue_columns() RETURNS name[]
    LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pgdyno, pg_temp
    AS $$SELECT ARRAY['queue', 'task', 'args', 'priority', 'run_at', 'max_attempts', 'timeout']::name[]$$;

-- Whether the current role is pgdyno's own: the owner of pgdyno.jobs (what `pgdyno migrate`
-- ran as), a role that has its privileges, or a superuser.
CREATE FUNCTION pgdyno.is_own_role() RETURNS boolean
    LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pgdyno, pg_temp
    AS $$
SELECT pg_has_role(current_user, c.relowner, 'USAGE')
  FROM pg_class AS c
 WHERE c.oid = 'pgdyno.jobs'::regclass
$$;

-- The statements that make `role` an enqueue role: USAGE on the schema, INSERT on the enqueue
-- columns and nothing else that writes (table-level INSERT, which covers every column, is
-- revoked, as are UPDATE, DELETE, TRUNCATE, REFERENCES and TRIGGER on the table and its
-- partitions); with returning_id, SELECT on the id column, which `INSERT ... RETURNING id`,
-- pgdyno.enqueue and pgdyno.enqueue_many need (it lets the role read every job's id, and
-- nothing else of a job). SELECT granted otherwise is left alone.
CREATE FUNCTION pgdyno.grant_enqueue_statements(role regrole, returning_id boolean)
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
$$;

-- Runs those statements (as the caller, who must own pgdyno.jobs) and returns them.
CREATE FUNCTION pgdyno.grant_enqueue(role regrole, returning_id boolean) RETURNS SETOF text
    LANGUAGE plpgsql SET search_path = pg_catalog, pgdyno, pg_temp
    AS $$
DECLARE
    statement text;
BEGIN
    IF pg_has_role(role, (SELECT relowner FROM pg_class WHERE oid = 'pgdyno.jobs'::regclass),
                   'USAGE') THEN
        RAISE EXCEPTION 'role % is pgdyno''s own role (it owns pgdyno.jobs, or has its '
                        'privileges, or is a superuser): the enqueue rules do not apply to it',
                        role
              USING ERRCODE = 'invalid_grant_operation',
                    HINT = 'create a role of its own for the client (on Heroku: heroku '
                           'pg:credentials:create) and grant that one';
    END IF;
    FOR statement IN SELECT s FROM pgdyno.grant_enqueue_statements(role, returning_id) AS s LOOP
        EXECUTE statement;
        RETURN NEXT statement;
    END LOOP;
END
$$;

-- Client-chosen ids: a plain INSERT must not pick one (the owner's COPY of reserved ids in
-- pgdyno.enqueue_many still writes them; OVERRIDING SYSTEM VALUE is the owner's own doing).
ALTER TABLE pgdyno.jobs ALTER COLUMN id SET GENERATED ALWAYS;

-- Existing enqueue roles keep working under the contract: a table-level INSERT (the recipe
-- pgdyno documented before) becomes INSERT on the enqueue columns.
DO $$
DECLARE
    grantee regrole;
BEGIN
    FOR grantee IN
        SELECT DISTINCT a.grantee::regrole
          FROM pg_class AS c, aclexplode(c.relacl) AS a
         WHERE c.oid = 'pgdyno.jobs'::regclass AND a.privilege_type = 'INSERT'
           AND a.grantee <> 0 AND NOT pg_has_role(a.grantee, c.relowner, 'USAGE')
    LOOP
        PERFORM pgdyno.grant_enqueue(grantee, false);
    END LOOP;
END
$$;

-- Rows written before these bounds existed are repaired, so that every row satisfies the
-- constraints below (they are validated) and every statement that reads or moves a job can
-- trust them: a ready or running job that breaks a bound can never run as its client meant,
-- so it fails with a message saying why; any row gets its out-of-range times (infinity, BC
-- dates, years past 2200) clamped into the range and its attempts into 0..max_attempts.
UPDATE pgdyno.jobs AS j
   SET status = 'failed',
       finished_at = now(),
       worker = NULL,
       lease_expires_at = NULL,
       last_error = 'InvalidJob: refused by pgdyno migration 0009: times must be finite, '
                    'from 1970 to 2200, and attempts within max_attempts'
 WHERE j.status IN ('ready', 'running')
   AND NOT (j.run_at >= '1970-01-01 00:00:00+00' AND j.run_at <= '2200-01-01 00:00:00+00'
            AND j.created_at >= '1970-01-01 00:00:00+00' AND j.created_at <= '2200-01-01 00:00:00+00'
            AND coalesce(j.started_at >= '1970-01-01 00:00:00+00'
                         AND j.started_at <= '2200-01-01 00:00:00+00', true)
            AND coalesce(j.lease_expires_at >= '1970-01-01 00:00:00+00'
                         AND j.lease_expires_at <= '2200-01-01 00:00:00+00', true)
            AND j.attempts BETWEEN 0 AND j.max_attempts
            AND (j.status <> 'ready' OR j.attempts < j.max_attempts));

UPDATE pgdyno.jobs AS j
   SET run_at = least(greatest(j.run_at, '1970-01-01 00:00:00+00'), '2200-01-01 00:00:00+00'),
       created_at = least(greatest(j.created_at, '1970-01-01 00:00:00+00'),
                          '2200-01-01 00:00:00+00'),
       started_at = CASE WHEN j.started_at IS NOT NULL THEN
                        least(greatest(j.started_at, '1970-01-01 00:00:00+00'),
                              '2200-01-01 00:00:00+00') END,
       finished_at = CASE WHEN j.finished_at IS NOT NULL THEN
                         least(greatest(j.finished_at, '1970-01-01 00:00:00+00'),
                               '2200-01-01 00:00:00+00') END,
       lease_expires_at = CASE WHEN j.lease_expires_at IS NOT NULL THEN
                              least(greatest(j.lease_expires_at, '1970-01-01 00:00:00+00'),
                                    '2200-01-01 00:00:00+00') END,
       attempts = least(greatest(j.attempts, 0), j.max_attempts)
 WHERE NOT (j.run_at >= '1970-01-01 00:00:00+00' AND j.run_at <= '2200-01-01 00:00:00+00'
            AND j.created_at >= '1970-01-01 00:00:00+00' AND j.created_at <= '2200-01-01 00:00:00+00'
            AND coalesce(j.started_at >= '1970-01-01 00:00:00+00'
                         AND j.started_at <= '2200-01-01 00:00:00+00', true)
            AND coalesce(j.finished_at >= '1970-01-01 00:00:00+00'
                         AND j.finished_at <= '2200-01-01 00:00:00+00', true)
            AND coalesce(j.lease_expires_at >= '1970-01-01 00:00:00+00'
                         AND j.lease_expires_at <= '2200-01-01 00:00:00+00', true)
            AND j.attempts BETWEEN 0 AND j.max_attempts);

-- Constraint names are the error message a bad client sees (queue.py maps them to hints).
-- The bounds are constants, so checking them costs a few comparisons per written row. Every
-- statement pgdyno runs keeps them: a claim only takes ready jobs, which have an attempt left;
-- leases, retries and finish times are now() plus at most 100 years.
ALTER TABLE pgdyno.jobs
    ADD CONSTRAINT run_at_must_be_between_1970_and_2200
        CHECK (run_at >= '1970-01-01 00:00:00+00' AND run_at <= '2200-01-01 00:00:00+00'),
    ADD CONSTRAINT times_must_be_between_1970_and_2200
        CHECK (created_at >= '1970-01-01 00:00:00+00' AND created_at <= '2200-01-01 00:00:00+00'
               AND started_at >= '1970-01-01 00:00:00+00'
               AND started_at <= '2200-01-01 00:00:00+00'
               AND finished_at >= '1970-01-01 00:00:00+00'
               AND finished_at <= '2200-01-01 00:00:00+00'
               AND lease_expires_at >= '1970-01-01 00:00:00+00'
               AND lease_expires_at <= '2200-01-01 00:00:00+00'),
    -- greatest(): a bad max_attempts is reported by its own constraint, checked after this
    -- one (Postgres checks constraints in alphabetical order of their names).
    ADD CONSTRAINT attempts_must_not_exceed_max_attempts
        CHECK (attempts <= greatest(max_attempts, 1)),
    ADD CONSTRAINT ready_job_must_have_an_attempt_left
        CHECK (status <> 'ready' OR attempts < max_attempts);

-- The enqueue trigger, once per INSERT or COPY statement (never for a job moving between the
-- status partitions, which is an UPDATE): checks the inserted rows in one pass over the
-- transition table, then sends one notification per queue at commit as before. What it
-- refuses raises SQLSTATE 23514 (check_violation) or 42501 (insufficient_privilege) naming
-- the rule as a constraint would, so clients handle it as one.
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
           min(CASE WHEN i.queue ~ '[[:cntrl:]]' THEN 'queue_must_not_contain_control_characters'
                    WHEN i.task ~ '[[:cntrl:]]' THEN 'task_must_not_contain_control_characters'
                    WHEN pg_column_size(i.args) > 1048576 THEN 'args_must_be_at_most_1_mb'
                    ELSE 'args_must_nest_at_most_64_levels' END)
               FILTER (WHERE (i.queue || i.task) ~ '[[:cntrl:]]'
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

-- Formation errors recorded before pgdyno redacted URL credentials (HEROKU_API_URL=https://
-- user:password@host) lose them: `pgdyno status` and the dashboard show these rows.
UPDATE pgdyno.scale_events
   SET outcome = regexp_replace(outcome, '(://[^\s/@:]*):[^\s/]*@', '\1:***@', 'g')
 WHERE outcome ~ '://[^\s/@:]*:[^\s/]*@';
UPDATE pgdyno.formations
   SET last_error = regexp_replace(last_error, '(://[^\s/@:]*):[^\s/]*@', '\1:***@', 'g')
 WHERE last_error ~ '://[^\s/@:]*:[^\s/]*@';

-- Every other pgdyno function pins its search_path too (those of earlier migrations:
-- default_max_attempts, delete_report_results, free_handbacks, ...). A later migration's
-- functions say SET search_path themselves (tests/security/test_search_path.py checks all).
DO $$
DECLARE
    fn regprocedure;
BEGIN
    FOR fn IN
        SELECT p.oid::regprocedure FROM pg_proc AS p
         WHERE p.pronamespace = 'pgdyno'::regnamespace AND p.prokind IN ('f', 'p')
           AND NOT coalesce('search_path=pg_catalog, pgdyno, pg_temp' = ANY (p.proconfig), false)
    LOOP
        EXECUTE format('ALTER ROUTINE %s SET search_path = pg_catalog, pgdyno, pg_temp', fn);
    END LOOP;
END
$$;

COMMENT ON TABLE pgdyno.jobs IS
    'pgdyno jobs. Enqueue with INSERT INTO pgdyno.jobs (queue, task, args) VALUES (...); '
    'a client role may set only the columns of pgdyno.enqueue_columns() '
    '(pgdyno grant-enqueue ROLE).';
