"""Issue 15, scenario 1: an enqueue notifies only a queue a session waits on (migration 0011).

Each order in which an enqueuing transaction and a registering sleeper can meet is forced here
(a transaction's commit-time decision is made early with SET CONSTRAINTS ... IMMEDIATE, which
runs it and keeps its lock until the commit), and the hammer test at the end races them
freely. Counting notifications is exact: a sentinel NOTIFY committed after the statements under
test arrives after every notification they sent.
"""

from __future__ import annotations

import contextlib
import random
import threading
from collections import Counter
from collections.abc import Iterator

import psycopg
import pytest
from helpers import slow_commit_sql, wait_until
from psycopg import IsolationLevel
from psycopg import sql as pgsql
from psycopg.conninfo import make_conninfo

import pgdyno
from pgdyno import roles, sleepers

CHANNEL = "pgdyno_jobs"
SENTINEL = "--sentinel--"
INSERT = "INSERT INTO pgdyno.jobs (queue, task) VALUES (%s, 'noop')"
#: Deferred triggers on one row fire in the order of their names: this one after pgdyno's.
SLOW_COMMIT = slow_commit_sql(0.003)


@pytest.fixture
def listener(database_url: str) -> Iterator[psycopg.Connection]:
    """A session that LISTENs (as every worker does) and registers when a test says so."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"LISTEN {CHANNEL}")
        yield conn


def received(listener: psycopg.Connection, conn: psycopg.Connection) -> Counter[str]:
    conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, SENTINEL))
    payloads: Counter[str] = Counter()
    for notify in listener.notifies(timeout=15):
        if notify.payload == SENTINEL:
            return payloads
        payloads[notify.payload] += 1
    raise AssertionError("the sentinel notification never arrived")


def decided(conn: psycopg.Connection, queue: str) -> None:
    """INSERT a job in an open transaction and make its commit-time decision now: it holds
    the queue's wake lock (share mode) until it commits."""
    conn.execute(INSERT, (queue,))
    conn.execute("SET CONSTRAINTS ALL IMMEDIATE")


def lock_waiters(conn: psycopg.Connection) -> int:
    return conn.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        " AND classid = pgdyno.wake_lock_key()::oid"
    ).fetchone()[0]


def test_nobody_waiting_means_no_notification(conn, listener):
    pgdyno.enqueue(conn, "noop", queue="q")
    conn.execute(INSERT, ("q",))
    pgdyno.enqueue_many(conn, [{"task": "noop", "queue": "q"}] * 50)
    assert received(listener, conn) == {}


def test_a_waiting_session_is_notified_for_its_queues_only(conn, listener):
    assert sleepers.wait_for_jobs(listener, holder="w1", queues=["q", "r"])
    conn.execute(INSERT, ("q",))
    conn.execute(INSERT, ("r",))
    conn.execute(INSERT, ("other",))
    assert received(listener, conn) == {"q": 1, "r": 1}
    sleepers.stop_waiting(listener)  # busy
    conn.execute(INSERT, ("q",))
    assert received(listener, conn) == {}
    assert sleepers.wait_for_jobs(listener, holder="w1", queues=["r"])  # q no longer
    conn.execute(INSERT, ("q",))
    conn.execute(INSERT, ("r",))
    assert received(listener, conn) == {"r": 1}


def test_an_enqueue_role_wakes_a_sleeper(database_url, conn, listener):
    conn.execute("CREATE ROLE wake_client LOGIN")
    roles.grant_enqueue(conn, "wake_client", returning_id=False)
    assert sleepers.wait_for_jobs(listener, holder="w1", queues=["q"])
    with psycopg.connect(make_conninfo(database_url, user="wake_client"), autocommit=True) as c:
        c.execute(INSERT, ("q",))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("SELECT * FROM pgdyno.sleepers")  # the registry itself stays private
        assert c.execute("SELECT count(*) FROM pgdyno.sleeping_queues").fetchone()[0] == 1
    assert received(listener, conn) == {"q": 1}


def test_a_transaction_open_across_the_registration_notifies_at_its_commit(
    database_url, conn, listener
):
    """The request's transaction enqueued before the worker went idle and commits after: the
    decision is the commit's, so the registration does not wait for it, and it notifies."""
    with psycopg.connect(database_url) as app:
        app.execute(INSERT, ("q",))
        assert sleepers.wait_for_jobs(listener, holder="w1", queues=["q"], wait=5.0)
        assert received(listener, conn) == {}
        app.commit()
    assert received(listener, conn) == {"q": 1}


def test_a_registration_waits_for_a_transaction_that_decided_before_it(database_url, listener):
    """E decided (nobody waited) and is committing when the sleeper registers: the
    registration returns only once E's job is visible, so the sleeper's claim finds it."""
    with psycopg.connect(database_url) as app:
        decided(app, "q")
        assert not sleepers.wait_for_jobs(listener, holder="w1", queues=["q"], wait=0.2)
        outcome: list[bool] = []
        waiter = threading.Thread(
            target=lambda: outcome.append(
                sleepers.wait_for_jobs(listener, holder="w1", queues=["q"], wait=10.0)
            )
        )
        with psycopg.connect(database_url, autocommit=True) as observer:
            waiter.start()
            wait_until(lambda: lock_waiters(observer) == 1, message="the registration to wait")
            app.commit()
            waiter.join(10)
    assert outcome == [True]
    ready = listener.execute("SELECT count(*) FROM pgdyno.jobs WHERE queue = 'q'").fetchone()[0]
    assert ready == 1


def test_an_enqueue_during_a_registration_notifies(database_url, conn, listener):
    """While the sleeper waits for the wake lock, its registration is not committed (not
    visible): a transaction deciding then cannot take the lock, and notifies."""
    with psycopg.connect(database_url) as app:
        decided(app, "q")
        waiter = threading.Thread(
            target=lambda: sleepers.wait_for_jobs(listener, holder="w1", queues=["q"], wait=10)
        )
        waiter.start()
        wait_until(lambda: lock_waiters(conn) == 1, message="the registration to wait")
        with psycopg.connect(database_url, autocommit=True) as other:
            other.execute(INSERT, ("q",))
            other.execute("SELECT pg_notify(%s, %s)", (CHANNEL, SENTINEL))
        app.commit()
        waiter.join(10)
    payloads = []
    for notify in listener.notifies(timeout=15):
        if notify.payload == SENTINEL:
            break
        payloads.append(notify.payload)
    assert payloads == ["q"]


def test_a_repeatable_read_transaction_notifies_a_sleeper_registered_after_its_snapshot(
    database_url, conn, listener
):
    """The decision reads no table (0015): a snapshot older than the registration is no
    matter, the sleeper's lock is held at once."""
    with psycopg.connect(database_url) as app:
        app.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        app.execute("SELECT 1")  # the snapshot is taken: nobody waits yet
        assert sleepers.wait_for_jobs(listener, holder="w1", queues=["q"])
        app.execute(INSERT, ("q",))
        app.commit()
    assert received(listener, conn) == {"q": 1}


@pytest.mark.parametrize("isolation", ["REPEATABLE READ", "SERIALIZABLE"])
def test_a_transaction_of_any_isolation_with_nobody_waiting_does_not_notify(
    database_url, conn, listener, isolation
):
    """Before 0015 such a transaction always notified (its snapshot could not be trusted to
    show a registration): each of its commits was serialised with every other notifying one."""
    with psycopg.connect(database_url) as app:
        app.execute(pgsql.SQL("SET TRANSACTION ISOLATION LEVEL {}").format(pgsql.SQL(isolation)))
        app.execute(INSERT, ("q",))
        app.commit()
    assert received(listener, conn) == {}


def test_a_sleeping_session_hears_its_own_enqueue(conn, listener):
    """The dispatcher enqueues a scheduled job on the connection it sleeps on, and scales up for
    it when it hears the notification: a session's own sleep lock never refuses its probe, so
    its own registration is told by pgdyno.sleeping."""
    assert sleepers.wait_for_jobs(listener, holder="dispatcher", queues=["q"])
    listener.execute(INSERT, ("q",))
    assert received(listener, conn) == {"q": 1}
    sleepers.stop_waiting(listener)
    listener.execute(INSERT, ("q",))
    assert received(listener, conn) == {}


def held_sleep_locks(conn: psycopg.Connection, pid: int) -> list[str]:
    """The queues (of QUEUE_KEYS) whose sleep lock session `pid` holds, once per hold."""
    rows = conn.execute(
        "SELECT k.queue FROM pg_locks AS l"
        "  JOIN (SELECT q AS queue, hashtext(q)::oid AS objid"
        "          FROM unnest(ARRAY['a', 'b', 'c']) AS q) AS k USING (objid)"
        " WHERE l.locktype = 'advisory' AND l.pid = %s AND l.granted AND l.objsubid = 2"
        "   AND l.classid = pgdyno.sleep_lock_key()::oid AND l.mode = 'ShareLock'"
        " ORDER BY 1",
        (pid,),
    ).fetchall()
    return [queue for (queue,) in rows]


def test_a_session_holds_the_sleep_locks_of_its_registered_queues_only(conn, listener):
    """Registering again neither takes a lock twice (a stop would leave it held: enqueuers
    would notify a busy worker forever) nor keeps one of a queue it no longer waits on."""
    pid = listener.info.backend_pid
    assert sleepers.wait_for_jobs(listener, holder="w1", queues=["a", "b"])
    assert sleepers.wait_for_jobs(listener, holder="w1", queues=["a", "b"])
    assert held_sleep_locks(conn, pid) == ["a", "b"]
    assert conn.execute(
        "SELECT count(*) FROM pg_locks WHERE pid = %s AND locktype = 'advisory'"
        " AND classid = pgdyno.sleep_lock_key()::oid",
        (pid,),
    ).fetchone() == (2,)
    assert sleepers.wait_for_jobs(listener, holder="w1", queues=["b", "c"])
    assert held_sleep_locks(conn, pid) == ["b", "c"]
    conn.execute(INSERT, ("a",))
    conn.execute(INSERT, ("c",))
    assert received(listener, conn) == {"c": 1}
    sleepers.stop_waiting(listener)
    assert held_sleep_locks(conn, pid) == []
    conn.execute(INSERT, ("b",))
    conn.execute(INSERT, ("c",))
    assert received(listener, conn) == {}
    # Held from an earlier call whose transaction was rolled back: counted, not taken again.
    with listener.transaction(force_rollback=True):
        assert sleepers.wait_for_jobs(listener, holder="w1", queues=["a"])
    assert held_sleep_locks(conn, pid) == ["a"]
    assert sleepers.wait_for_jobs(listener, holder="w1", queues=["a"])
    sleepers.stop_waiting(listener)
    assert held_sleep_locks(conn, pid) == []


def test_a_probe_refused_by_another_enqueuers_probe_reads_the_registry(
    database_url, conn, listener
):
    """An enqueuer's probe holds the sleep lock in exclusive mode for a moment (for long if its
    process is descheduled then): another enqueuer's probe is refused meanwhile. Such a refusal
    is settled by 0011's read rather than by a notification for nothing (with 32 clients on 2
    cores, notifying on every refusal put 0.3 sessions on average in the NOTIFY lock's queue)."""
    with psycopg.connect(database_url, autocommit=True) as prober:
        prober.execute(
            "SELECT pg_advisory_lock(pgdyno.sleep_lock_key(), hashtext('q'))"
        )  # as a descheduled probe does
        conn.execute(INSERT, ("q",))
        assert received(listener, conn) == {}
        # Registered in the registry (as before 0015, without the sleep lock: it waits for the
        # prober's): the read finds it.
        listener.execute(
            "INSERT INTO pgdyno.sleepers (queue, pid, holder) VALUES ('q', pg_backend_pid(), 'w1')"
        )
        conn.execute(INSERT, ("q",))
        assert received(listener, conn) == {"q": 1}


def test_a_sleeper_whose_session_ended_is_notified_no_more(database_url, conn, listener):
    """Its sleep lock ended with its session: enqueuers stop notifying at once, before its
    registry row is pruned (0011 notified until the prune)."""
    with psycopg.connect(database_url, autocommit=True) as gone:
        assert sleepers.wait_for_jobs(gone, holder="w-gone", queues=["q"])
        pid = gone.info.backend_pid
    wait_until(
        lambda: (
            not conn.execute(
                "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE pid = %s)", (pid,)
            ).fetchone()[0]
        ),
        message="the sleeper's backend to exit",
    )
    conn.execute(INSERT, ("q",))
    assert received(listener, conn) == {}
    assert conn.execute("SELECT count(*) FROM pgdyno.sleepers").fetchone() == (1,)


def test_each_transaction_decides_once_with_all_its_queues(conn, listener):
    assert sleepers.wait_for_jobs(listener, holder="w1", queues=["a", "b"])
    with conn.transaction():
        conn.execute(INSERT, ("a",))
        pgdyno.enqueue_many(conn, [{"task": "noop", "queue": q} for q in ("a", "b", "x") * 30])
        conn.execute(INSERT, ("b",))
    assert received(listener, conn) == {"a": 1, "b": 1}
    # Decided early (SET CONSTRAINTS ... IMMEDIATE), then more jobs: decided again.
    with conn.transaction():
        conn.execute(INSERT, ("a",))
        conn.execute("SET CONSTRAINTS ALL IMMEDIATE")
        conn.execute(INSERT, ("b",))
    assert received(listener, conn) == {"a": 1, "b": 1}
    # A rolled-back savepoint takes its queues back; finished and later jobs arm nothing.
    with conn.transaction():
        with pytest.raises(psycopg.errors.CheckViolation), conn.transaction():
            conn.execute(INSERT, ("a",))
            conn.execute("INSERT INTO pgdyno.jobs (queue, task) VALUES ('b', '')")
        conn.execute(
            "INSERT INTO pgdyno.jobs (queue, task, run_at)"
            " VALUES ('b', 'noop', now() + interval '1 hour')"
        )
    assert received(listener, conn) == {}


def test_skip_notify_silences_even_a_waited_on_queue(conn, listener):
    assert sleepers.wait_for_jobs(listener, holder="w1", queues=["q"])
    with conn.transaction():
        conn.execute("SET LOCAL pgdyno.skip_notify = on")
        conn.execute(INSERT, ("q",))
    assert received(listener, conn) == {}


def test_rows_of_sessions_that_ended_are_pruned(database_url, conn, listener):
    with psycopg.connect(database_url, autocommit=True) as gone:
        assert sleepers.wait_for_jobs(gone, holder="w-gone", queues=["q"])
    assert sleepers.wait_for_jobs(listener, holder="w1", queues=["r"])
    # The session's backend exits after the client closes it: wait for that.
    wait_until(lambda: sleepers.prune(conn) == 1, message="the gone session's row pruned")
    rows = conn.execute("SELECT holder, queue FROM pgdyno.sleepers").fetchall()
    assert rows == [("w1", "r")]


@pytest.mark.parametrize(
    "isolation", [IsolationLevel.READ_COMMITTED, IsolationLevel.REPEATABLE_READ]
)
def test_hammer_no_job_committed_while_a_session_sleeps_is_missed(database_url, conn, isolation):
    """Round after round, enqueuers commit one job each (some holding their transaction open a
    few ms after the INSERT, as a request does) at random moments around a sleeper that
    registers and claims. A job the claim did not take must have notified its queue (one queue
    per enqueuer, so each notification names its job): else it would wait for a poll while its
    worker slept. At REPEATABLE READ too, which decides by the locks alone since 0015 (before,
    it always notified)."""
    enqueuers, rounds = 4, 300
    queues = [f"hammer{slot}" for slot in range(enqueuers)]
    start = threading.Barrier(enqueuers + 1)
    done = threading.Barrier(enqueuers + 1)
    stop = threading.Event()

    def enqueue(slot: int) -> None:
        rng = random.Random(slot)
        with psycopg.connect(database_url) as app:
            app.isolation_level = isolation
            while True:
                start.wait()
                if stop.is_set():
                    return
                stop.wait(rng.random() * 0.003)
                app.execute(INSERT, (queues[slot],))
                if rng.random() < 0.5:
                    stop.wait(rng.random() * 0.003)
                app.commit()
                done.wait()

    # A commit takes a while on a real disk (this server does not fsync): after its decision
    # (the deferred trigger jobs_wake_sleepers), each enqueuer's commit lasts up to 3 ms more.
    conn.execute(SLOW_COMMIT)
    claim = (
        "WITH c AS (DELETE FROM pgdyno.jobs_active WHERE queue LIKE 'hammer%'"
        " RETURNING queue) SELECT array_agg(queue) FROM c"
    )
    rng = random.Random(0)
    threads = [threading.Thread(target=enqueue, args=(slot,)) for slot in range(enqueuers)]
    seen = Counter[str]()  # which way each job reached the sleeper
    misses = []
    with psycopg.connect(database_url, autocommit=True) as worker:
        worker.execute(f"LISTEN {CHANNEL}")
        for thread in threads:
            thread.start()
        try:
            for _ in range(rounds):
                sleepers.stop_waiting(worker)  # busy until now
                list(worker.notifies(timeout=0))
                start.wait()
                stop.wait(rng.random() * 0.004)
                assert sleepers.wait_for_jobs(worker, holder="hammer", queues=queues)
                claimed = set(worker.execute(claim).fetchone()[0] or [])
                done.wait()
                conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, SENTINEL))
                notified = set()
                for notify in worker.notifies(timeout=15):
                    if notify.payload == SENTINEL:
                        break
                    notified.add(notify.payload)
                left = set(worker.execute(claim).fetchone()[0] or [])
                misses += sorted(left - notified)
                seen.update(
                    "claimed, not notified"
                    if q in claimed and q not in notified
                    else "left, notified"
                    if q in left
                    else "claimed and notified"
                    for q in claimed | left
                )
        finally:
            stop.set()
            with contextlib.suppress(threading.BrokenBarrierError):
                start.wait(timeout=5)
            for thread in threads:
                thread.join(10)
    assert misses == []
    # Both sides of the window were hit: jobs committed before the registration (the claim
    # found them, and nobody was notified) and after it (only the notification found them).
    assert seen["claimed, not notified"] > 20, seen
    assert seen["left, notified"] > 20, seen


@pytest.mark.parametrize("isolation", ["READ COMMITTED", "SERIALIZABLE"])
def test_enqueue_in_a_transaction_of_any_isolation_notifies(
    database_url, conn, isolation, listener
):
    assert sleepers.wait_for_jobs(listener, holder="w1", queues=["q"])
    with psycopg.connect(database_url) as app:
        app.execute(pgsql.SQL("SET TRANSACTION ISOLATION LEVEL {}").format(pgsql.SQL(isolation)))
        app.execute(INSERT, ("q",))
        app.commit()
    assert received(listener, conn) == {"q": 1}


def test_the_enqueue_side_locks_the_keys_registrations_take(conn):
    """wake_sleepers() writes the keys out (a function call costs on every enqueue)."""
    wake, sleep = conn.execute("SELECT pgdyno.wake_lock_key(), pgdyno.sleep_lock_key()").fetchone()
    source = conn.execute(
        "SELECT prosrc FROM pg_proc WHERE oid = 'pgdyno.wake_sleepers'::regproc"
    ).fetchone()[0]
    assert "key := hashtext(wake_queue);" in source
    assert f"pg_try_advisory_xact_lock_shared({wake}, key)" in source
    assert f"pg_try_advisory_lock({sleep}, key)" in source
    assert f"pg_advisory_unlock({sleep}, key)" in source


def test_pruning_an_empty_registry_finds_nothing_to_remove(conn):
    assert conn.execute("SELECT count(*) FROM pgdyno.sleepers").fetchone() == (0,)
    assert sleepers.prune(conn) == 0
