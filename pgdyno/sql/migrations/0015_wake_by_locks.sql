-- The enqueuer's wake decision without a read (bench/PROFILE.md, "The wake decision's cost").
--
-- An enqueuing transaction decided at its commit (0011) with a try-lock and one read of
-- pgdyno.sleeping_queues: an SPI query of its own, with its plan checked, a fresh snapshot and
-- an executor started at every commit, ~12 µs of the ~40 µs the wake machinery costs a
-- single-row enqueue (embedded PostgreSQL 18, synchronous_commit off so the figure is CPU).
-- Who sleeps on a queue is now told by a lock instead of a row:
--
-- * A sleeper holds the queue's sleep lock (an advisory lock on pgdyno.sleep_lock_key() and
--   hashtext(queue)) in share mode, at session level, from its registration until it stops
--   waiting (pgdyno.stop_waiting_for_jobs) or its session ends. Any number of sleepers of a
--   queue hold it at once. It is taken before the wake lock of 0011, in wait_for_jobs.
-- * The enqueuer's decision at commit: the wake lock in share mode without waiting (as in
--   0011), then a probe of the sleep lock: taken in exclusive mode without waiting and released
--   at once. Granted, nobody else sleeps on the queue: it notifies only if its own session is a
--   sleeper (a session's own locks never refuse it, and the dispatcher enqueues scheduled jobs
--   on the connection it sleeps on: pgdyno.sleeping, a session setting, says so). Refused, a
--   sleeper holds (or awaits) the sleep lock, or another enqueuer's probe holds it for a
--   moment (or for milliseconds, when its process is descheduled in between: with 32 clients on
--   2 cores, notifying on every refusal put 0.3 sessions on average in the NOTIFY lock's queue):
--   0011's decision settles it (notify at REPEATABLE READ or SERIALIZABLE, else read
--   pgdyno.sleeping_queues), sound on its own by 0011's argument. If the wake lock was refused,
--   it notifies. A REPEATABLE READ or SERIALIZABLE transaction thus notifies only after a
--   refused probe (under 0011, always: its snapshot may predate a registration).
--
-- Why no job is left waiting for a poll while a sleeper waits: take an enqueuer E and a sleeper
-- S of its queue. S takes the sleep lock, then asks for the wake lock in exclusive mode, waits
-- for it, and claims. E takes the wake lock (share) and then probes the sleep lock. If E probed
-- while S held the sleep lock, the probe was refused and E decided as in 0011, whose argument
-- holds for that decision alone (S wrote its registration before asking for the wake lock,
-- and still does). If E probed before S took
-- it, E already held the wake lock when S asked for it in exclusive mode, and holds it until its
-- commit is over: S's wait ends only then, and S's claim sees E's job. If E's try of the wake
-- lock was refused, E notifies. (0011's argument, with the registration's visibility replaced
-- by the sleep lock's hold, which takes effect at once rather than at a commit.)
--
-- The registry pgdyno.sleepers stays, written as before: for people, for the pruning of
-- sessions that are gone, and for the refused probes. A sleeper that ends without stopping
-- releases its sleep locks with its session, so enqueuers stop notifying for it at once.
--
-- Upgrading: a session registered before this migration holds no sleep lock, so enqueuers
-- notify it only after a refused probe, until it registers again (a worker when it turns idle
-- after a busy spell, the dispatcher after each decision, both when they restart, which the
-- release that runs the migration does on Heroku); meanwhile it finds jobs by its poll
-- (PGDYNO_POLL_INTERVAL, 2 s by default).

-- The sleep lock's first key ("pgdz"); the wake lock's is pgdyno.wake_lock_key() ("pgdy").
CREATE FUNCTION pgdyno.sleep_lock_key() RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pgdyno, pg_temp
    AS 'SELECT 1885824122';  -- 0x7067647a, "pgdz"

-- The second keys (hashtext of a queue) of the sleep locks the calling session holds now.
CREATE FUNCTION pgdyno.held_sleep_locks() RETURNS SETOF integer
    LANGUAGE sql VOLATILE SET search_path = pg_catalog, pgdyno, pg_temp AS $$
SELECT l.objid::integer FROM pg_locks AS l
 WHERE l.locktype = 'advisory' AND l.pid = pg_backend_pid() AND l.granted
   AND l.classid = pgdyno.sleep_lock_key()::oid AND l.objsubid = 2 AND l.mode = 'ShareLock'
$$;

-- As in 0011, plus the sleep locks: the session holds those of `queues` (once each), and no
-- other, before it asks for the wake locks; pgdyno.sleeping is 'on' for the session (its own
-- enqueues notify).
CREATE OR REPLACE FUNCTION pgdyno.wait_for_jobs(holder text, queues text[], wait interval)
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
    PERFORM set_config('pgdyno.sleeping', 'on', false);
    FOR key IN SELECT h FROM pgdyno.held_sleep_locks() AS h
                WHERE h <> ALL (SELECT hashtext(q) FROM unnest(wait_for_jobs.queues) AS q) LOOP
        PERFORM pg_advisory_unlock_shared(pgdyno.sleep_lock_key(), key);
    END LOOP;
    PERFORM set_config('lock_timeout', (extract(epoch FROM wait) * 1000)::bigint::text || 'ms',
                       true);
    BEGIN
        -- A sleep lock waits only for an enqueuer's probe (a moment). A session-level lock
        -- stays when this block is left by an error: the next call counts what is held.
        FOR key IN SELECT DISTINCT hashtext(q) AS k FROM unnest(wait_for_jobs.queues) AS q
                    WHERE hashtext(q) NOT IN (SELECT h FROM pgdyno.held_sleep_locks() AS h)
                    ORDER BY k LOOP
            PERFORM pg_advisory_lock_shared(pgdyno.sleep_lock_key(), key);
        END LOOP;
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
CREATE OR REPLACE FUNCTION pgdyno.stop_waiting_for_jobs() RETURNS void
    LANGUAGE plpgsql SET search_path = pg_catalog, pgdyno, pg_temp AS $$
DECLARE
    key integer;
BEGIN
    UPDATE pgdyno.sleepers SET sleeping = false WHERE pid = pg_backend_pid() AND sleeping;
    FOR key IN SELECT h FROM pgdyno.held_sleep_locks() AS h LOOP
        PERFORM pg_advisory_unlock_shared(pgdyno.sleep_lock_key(), key);
    END LOOP;
    PERFORM set_config('pgdyno.sleeping', '', false);
END
$$;

-- At commit (or at SET CONSTRAINTS ... IMMEDIATE): decide the queues the transaction listed.
-- The keys are written out (1885824121: pgdyno.wake_lock_key(), 1885824122:
-- pgdyno.sleep_lock_key()): every enqueue runs this, and a call of a function with its own
-- search_path costs more than the rest of the decision. The flags are cleared by assignment,
-- not PERFORM (an SPI query: ~5 µs more).
CREATE OR REPLACE FUNCTION pgdyno.wake_sleepers() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pgdyno, pg_temp AS $$
DECLARE
    queues text[] := string_to_array(nullif(current_setting('pgdyno.wake_queues', true), ''),
                                     E'\n');
    wake_queue text;
    key integer;
BEGIN
    -- Disarmed: the transaction's later statements are decided by the statement trigger.
    wake_queue := set_config('pgdyno.wake_queues', '', true);
    wake_queue := set_config('pgdyno.wake_armed', '', true);
    IF queues IS NULL
       OR coalesce(current_setting('pgdyno.skip_notify', true), '') IN ('on', 'true', '1') THEN
        RETURN NULL;
    END IF;
    FOREACH wake_queue IN ARRAY queues LOOP
        key := hashtext(wake_queue);
        IF NOT pg_try_advisory_xact_lock_shared(1885824121, key) THEN
            PERFORM pg_notify('pgdyno_jobs', wake_queue);
        ELSIF (CASE WHEN pg_try_advisory_lock(1885824122, key)
                    THEN pg_advisory_unlock(1885824122, key) ELSE false END) THEN
            -- Nobody else holds the sleep lock; this session may (see the top).
            IF current_setting('pgdyno.sleeping', true) = 'on' THEN
                PERFORM pg_notify('pgdyno_jobs', wake_queue);
            END IF;
        -- Refused: a sleeper, or another enqueuer's probe. 0011's read tells which.
        ELSIF current_setting('transaction_isolation') <> 'read committed'
              OR EXISTS (SELECT 1 FROM pgdyno.sleeping_queues AS s WHERE s.queue = wake_queue)
        THEN
            PERFORM pg_notify('pgdyno_jobs', wake_queue);
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;

COMMENT ON TABLE pgdyno.sleepers IS
    'Sessions waiting for jobs (idle workers, the dispatcher), written by '
    'pgdyno.wait_for_jobs; each also holds its queues'' sleep locks, which the enqueue trigger '
    'probes (migrations 0011, 0015).';
