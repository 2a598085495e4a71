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


def test_a_repeatable_read_transaction_always_notifies(database_url, conn, listener):
    """Its snapshot may predate a registration it would need to see: it does not read."""
    with psycopg.connect(database_url) as app:
        app.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        app.execute("SELECT 1")  # the snapshot is taken: nobody waits yet
        assert sleepers.wait_for_jobs(listener, holder="w1", queues=["q"])
        app.execute(INSERT, ("q",))
        app.commit()
    assert received(listener, conn) == {"q": 1}


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


def test_hammer_no_job_committed_while_a_session_sleeps_is_missed(database_url, conn):
    """Round after round, enqueuers commit one job each (some holding their transaction open a
    few ms after the INSERT, as a request does) at random moments around a sleeper that
    registers and claims. A job the claim did not take must have notified its queue (one queue
    per enqueuer, so each notification names its job): else it would wait for a poll while its
    worker slept."""
    enqueuers, rounds = 4, 300
    queues = [f"hammer{slot}" for slot in range(enqueuers)]
    start = threading.Barrier(enqueuers + 1)
    done = threading.Barrier(enqueuers + 1)
    stop = threading.Event()

    def enqueue(slot: int) -> None:
        rng = random.Random(slot)
        with psycopg.connect(database_url) as app:
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


def test_the_enqueue_side_locks_the_key_registrations_wait_for(conn):
    """wake_sleepers() writes the key out (a function call costs on every enqueue)."""
    key = conn.execute("SELECT pgdyno.wake_lock_key()").fetchone()[0]
    source = conn.execute(
        "SELECT prosrc FROM pg_proc WHERE oid = 'pgdyno.wake_sleepers'::regproc"
    ).fetchone()[0]
    assert f"pg_try_advisory_xact_lock_shared({key}, hashtext(wake_queue))" in source


def test_pruning_an_empty_registry_finds_nothing_to_remove(conn):
    assert conn.execute("SELECT count(*) FROM pgdyno.sleepers").fetchone() == (0,)
    assert sleepers.prune(conn) == 0
