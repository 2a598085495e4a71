-- Enqueue without the NOTIFY commit lock: notify a queue only when someone waits on it.
--
-- A transaction that sent NOTIFY takes a cluster-wide lock at commit and holds it until its
-- commit is durable, so notifying commits are serialised: with 32 clients enqueueing at once,
-- pgdyno.jobs took a third of the jobs it took without notifying. Most enqueues need no
-- notification: nobody sleeps on their queue (its workers are busy, or at zero and the
-- dispatcher already heard of the queue). So:
--
-- * A session that waits for jobs of some queues (an idle worker, the dispatcher) registers in
--   pgdyno.sleepers with pgdyno.wait_for_jobs(), and then looks at the queues again (claims).
-- * An enqueueing transaction decides at its commit, once per queue it enqueued to: it takes
--   the queue's wake lock in share mode without waiting (pg_try_advisory_xact_lock_shared), and
--   notifies if it could not (someone registers right now) or if a sleeper is registered
--   (read after taking the lock, with a fresh snapshot). The lock is held until its commit is
--   over.
-- * wait_for_jobs() writes the registration, then takes every wake lock of its queues in
--   exclusive mode, which waits for the enqueuers holding it in share mode (those that decided
--   before the registration) to finish committing, and commits.
--
-- Why no job is left waiting for a poll while a sleeper waits: take an enqueuer E and a sleeper
-- S of its queue. If E took the share lock before S asked for the exclusive one, S's wait ends
-- only once E has committed, so S's next claim sees E's job. If E tried while S waited for or
-- held the exclusive lock, E's try failed and E notifies. If E tried after S released it, S had
-- committed its registration before (locks are released after a commit becomes visible), so E's
-- read sees it and E notifies. A transaction at REPEATABLE READ or SERIALIZABLE reads with its
-- first snapshot, which may be older than a registration: it always notifies.
--
-- The decision runs at commit (a deferred constraint trigger) rather than at the INSERT, so the
-- share lock is held only while the enqueuer commits, never while a request's transaction does
-- other work for seconds: a sleeper waits at most for the commits in progress. The deferred
-- trigger fires once per transaction, whatever the number of rows (its WHEN arms it for the
-- first ready row only); the statement trigger of 0009 collects the queues.

-- Who waits for jobs of which queue: one row per session (pid) and queue. `sleeping` is true
-- while the session waits; rows stay (and are updated in place: heap-only updates) while the
-- session lives. Unlogged: a registration means nothing after a crash, when every session
-- ends; its sessions register again when they reconnect. Rows of a session that ended without
-- removing them are removed by the next worker that starts and by the dispatcher's timer.
CREATE UNLOGGED TABLE pgdyno.sleepers (
    queue    text        NOT NULL,
    -- pg_backend_pid() of the registering session.
    pid      integer     NOT NULL,
    -- The worker's id or the dispatcher's name, for people.
    holder   text        NOT NULL,
    sleeping boolean     NOT NULL DEFAULT true,
    since    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (queue, pid)
);

-- What an enqueueing transaction reads (any role may: it says no more than which queue names
-- have a session waiting on them).
CREATE VIEW pgdyno.sleeping_queues AS
    SELECT s.queue FROM pgdyno.sleepers AS s WHERE s.sleeping;
GRANT SELECT ON pgdyno.sleeping_queues TO PUBLIC;

-- The wake lock of a queue: an advisory lock on two int4 keys (pgdyno's own first key, then
-- hashtext(queue)). Two queues whose hashes collide share one lock: a sleeper of one then waits
-- for the other's commits too, and its enqueuers notify more often, nothing worse.
CREATE FUNCTION pgdyno.wake_lock_key() RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pgdyno, pg_temp
    AS 'SELECT 1885824121';  -- 0x70676479, "pgdy"

-- Registers the calling session as waiting for jobs of `queues` (its other registrations end),
-- then waits at most `wait` for the transactions that decided not to notify these queues
-- before it and are still committing. Returns true when none is left: every job they enqueued
-- is visible to the caller's next statement, and every later enqueue notifies. Returns false
-- when one was still committing after `wait` (a commit that slow, or a role holding the lock):
-- the registration stands, and the caller claims, then calls again later. The caller's next
-- statement must look at the queues (claim): a job committed before the registration sent no
-- notification.
CREATE FUNCTION pgdyno.wait_for_jobs(holder text, queues text[], wait interval)
    RETURNS boolean
    LANGUAGE plpgsql SET search_path = pg_catalog, pgdyno, pg_temp AS $$
DECLARE
    key integer;
BEGIN
    DELETE FROM pgdyno.sleepers AS s
     WHERE s.pid = pg_backend_pid() AND s.queue <> ALL (wait_for_jobs.queues);
    INSERT INTO pgdyno.sleepers AS s (queue, pid, holder)
    SELECT DISTINCT q, pg_backend_pid(), wait_for_jobs.holder FROM unnest(wait_for_jobs.queues) AS q
        ON CONFLICT (queue, pid) DO UPDATE
       SET sleeping = true, holder = excluded.holder, since = now()
     WHERE NOT s.sleeping OR s.holder <> excluded.holder;
    PERFORM set_config('lock_timeout', (extract(epoch FROM wait) * 1000)::bigint::text || 'ms',
                       true);
    BEGIN
        -- In one order for every sleeper, so two sleepers of overlapping queues never deadlock.
        FOR key IN SELECT DISTINCT hashtext(q) AS k FROM unnest(wait_for_jobs.queues) AS q
                    ORDER BY k LOOP
            PERFORM pg_advisory_xact_lock(pgdyno.wake_lock_key(), key);
        END LOOP;
    EXCEPTION WHEN lock_not_available THEN
        RETURN false;
    END;
    RETURN true;
END
$$;

-- The calling session stops waiting (it is busy): enqueuers of its queues stop notifying for it.
CREATE FUNCTION pgdyno.stop_waiting_for_jobs() RETURNS void
    LANGUAGE sql SET search_path = pg_catalog, pgdyno, pg_temp AS $$
UPDATE pgdyno.sleepers SET sleeping = false WHERE pid = pg_backend_pid() AND sleeping
$$;

-- Rows of sessions that are gone (a worker killed, a connection lost).
CREATE FUNCTION pgdyno.prune_sleepers() RETURNS integer
    LANGUAGE sql SET search_path = pg_catalog, pgdyno, pg_temp AS $$
WITH gone AS (
    DELETE FROM pgdyno.sleepers AS s
     WHERE NOT EXISTS (SELECT 1 FROM pg_stat_activity AS a WHERE a.pid = s.pid)
    RETURNING 1
)
SELECT count(*)::integer FROM gone
$$;

-- The enqueue trigger of 0010 (0009's checks, invisible characters, pgdyno's own unique-key
-- prefixes), unchanged in every check of the enqueue contract; only its end
-- differs: instead of notifying every statement's queues, it adds them to the transaction's
-- list (pgdyno.wake_queues, a transaction-local setting: a rolled-back savepoint takes its
-- queues back), for pgdyno.wake_sleepers() to decide at commit.
CREATE OR REPLACE FUNCTION pgdyno.notify_jobs_inserted() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pgdyno, pg_temp AS $$
DECLARE
    own boolean;
    beyond text;
    rule text;
    queues text[];
    listed text;
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
    -- The decision is the commit's (see the top) while the transaction's deferred trigger is
    -- armed. Once it has fired (SET CONSTRAINTS ... IMMEDIATE: at the end of each statement,
    -- before this trigger), this statement's queues are notified as before 0011: such a
    -- transaction pays the commit lock, no other does.
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

-- At commit (or at SET CONSTRAINTS ... IMMEDIATE): decide the queues the transaction listed.
CREATE FUNCTION pgdyno.wake_sleepers() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pgdyno, pg_temp AS $$
DECLARE
    queues text[] := string_to_array(nullif(current_setting('pgdyno.wake_queues', true), ''),
                                     E'\n');
    wake_queue text;
BEGIN
    -- Disarmed: the transaction's later statements are decided by the statement trigger.
    PERFORM set_config('pgdyno.wake_queues', '', true), set_config('pgdyno.wake_armed', '', true);
    IF queues IS NULL
       OR coalesce(current_setting('pgdyno.skip_notify', true), '') IN ('on', 'true', '1') THEN
        RETURN NULL;
    END IF;
    FOREACH wake_queue IN ARRAY queues LOOP
        -- The lock first, the registrations after it, in separate statements: the read's
        -- snapshot is taken once the lock is held. 1885824121 is pgdyno.wake_lock_key(),
        -- written out: every enqueue runs this, and a call of a function with its own
        -- search_path costs more than the rest of the decision.
        IF current_setting('transaction_isolation') <> 'read committed'
           OR NOT pg_try_advisory_xact_lock_shared(1885824121, hashtext(wake_queue)) THEN
            PERFORM pg_notify('pgdyno_jobs', wake_queue);
        ELSIF EXISTS (SELECT 1 FROM pgdyno.sleeping_queues AS s WHERE s.queue = wake_queue) THEN
            PERFORM pg_notify('pgdyno_jobs', wake_queue);
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;

-- Fires at commit for the first ready job a transaction enqueues, and only for it: the WHEN
-- sets a transaction-local flag with its first true answer (wake_sleepers() clears it).
-- Finished jobs moved into jobs_finished, never ready, do not arm it.
CREATE CONSTRAINT TRIGGER jobs_wake_sleepers
    AFTER INSERT ON pgdyno.jobs
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW
    WHEN (NEW.status = 'ready'
          AND pg_catalog.current_setting('pgdyno.wake_armed', true) IS DISTINCT FROM 'on'
          AND pg_catalog.set_config('pgdyno.wake_armed', 'on', true) = 'on')
    EXECUTE FUNCTION pgdyno.wake_sleepers();

COMMENT ON TABLE pgdyno.sleepers IS
    'Sessions waiting for jobs (idle workers, the dispatcher): the enqueue trigger notifies '
    'only the queues in here (pgdyno.wait_for_jobs, migration 0011).';
