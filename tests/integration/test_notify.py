"""The enqueue trigger: one notification per transaction and queue, at commit, none for later
jobs, for a queue a session waits on (the listener here registers as an idle worker does:
tests/integration/test_wake_on_demand.py covers the registry itself).

Counting is exact: after the statements under test, a sentinel NOTIFY is committed on the same
channel; notifications reach a listener in commit order, so once the sentinel arrives every
notification the earlier commits sent has arrived too.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import psycopg
import pytest

import pgdyno
from pgdyno import queue, sleepers

CHANNEL = "pgdyno_jobs"
SENTINEL = "--sentinel--"
#: Every queue these tests enqueue to: the listener waits on all of them.
QUEUES = ("reports", "mail", "a", "b", "c", "later", "now", "bulk", "q")


@pytest.fixture
def listener(database_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"LISTEN {CHANNEL}")
        assert sleepers.wait_for_jobs(conn, holder="test listener", queues=QUEUES)
        yield conn


def received(listener: psycopg.Connection, conn: psycopg.Connection) -> Counter[str]:
    """Payloads of the notifications sent so far (by committed transactions), counted."""
    conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, SENTINEL))
    payloads: Counter[str] = Counter()
    for notify in listener.notifies(timeout=15):
        if notify.payload == SENTINEL:
            return payloads
        payloads[notify.payload] += 1
    raise AssertionError("the sentinel notification never arrived")


def test_10000_row_insert_sends_one_notification_per_queue(conn, listener):
    conn.execute(
        "INSERT INTO pgdyno.jobs (queue, task, args)"
        " SELECT CASE WHEN n % 2 = 0 THEN 'reports' ELSE 'mail' END, 'noop',"
        "        jsonb_build_object('n', n)"
        "   FROM generate_series(1, 10000) AS n"
    )
    assert received(listener, conn) == {"reports": 1, "mail": 1}
    assert conn.execute("SELECT count(*) FROM pgdyno.jobs").fetchone()[0] == 10000


def test_bulk_enqueue_with_copy_sends_one_notification_per_queue(conn, listener):
    ids = pgdyno.enqueue_many(
        conn, [{"task": "noop", "queue": ("a", "b", "c")[n % 3]} for n in range(3000)]
    )
    assert len(ids) == 3000
    assert received(listener, conn) == {"a": 1, "b": 1, "c": 1}


def test_each_enqueue_transaction_notifies_its_queue_once(conn, listener):
    pgdyno.enqueue(conn, "noop", queue="reports")
    pgdyno.enqueue(conn, "noop", queue="reports")
    assert received(listener, conn) == {"reports": 2}
    with conn.transaction():
        pgdyno.enqueue(conn, "noop", queue="reports")
        pgdyno.enqueue(conn, "noop", queue="mail")
        pgdyno.enqueue(conn, "noop", queue="reports")
    assert received(listener, conn) == {"reports": 1, "mail": 1}


def test_job_scheduled_in_the_future_sends_no_notification(conn, listener):
    pgdyno.enqueue(conn, "noop", queue="later", run_at=60)
    conn.execute(
        "INSERT INTO pgdyno.jobs (queue, task, run_at)"
        " VALUES ('later', 'noop', now() + interval '1 minute')"
    )
    assert received(listener, conn) == {}


def test_mixed_insert_notifies_only_the_queue_with_a_job_due_now(conn, listener):
    conn.execute(
        "INSERT INTO pgdyno.jobs (queue, task, run_at) VALUES"
        " ('later', 'noop', now() + interval '1 hour'), ('now', 'noop', now())"
    )
    assert received(listener, conn) == {"now": 1}


def test_skip_notify_setting_silences_a_bulk_load(conn, listener):
    with conn.transaction():
        conn.execute("SET LOCAL pgdyno.skip_notify = on")
        conn.execute(
            "INSERT INTO pgdyno.jobs (queue, task)"
            " SELECT 'bulk', 'noop' FROM generate_series(1, 100)"
        )
    assert received(listener, conn) == {}
    conn.execute("SET pgdyno.skip_notify = on")
    pgdyno.enqueue(conn, "noop", queue="bulk")
    assert received(listener, conn) == {}
    conn.execute("RESET pgdyno.skip_notify")
    pgdyno.enqueue(conn, "noop", queue="bulk")
    assert received(listener, conn) == {"bulk": 1}


def test_notification_is_sent_only_when_the_enqueuing_transaction_commits(
    conn, listener, database_url
):
    with psycopg.connect(database_url) as app:  # not autocommit: the app's own transaction
        pgdyno.enqueue(app, "noop", queue="reports")
        assert received(listener, conn) == {}
        assert conn.execute("SELECT count(*) FROM pgdyno.jobs").fetchone()[0] == 0
        app.commit()
        assert received(listener, conn) == {"reports": 1}
        pgdyno.enqueue(app, "noop", queue="reports")
        app.rollback()
    assert received(listener, conn) == {}
    assert conn.execute("SELECT count(*) FROM pgdyno.jobs").fetchone()[0] == 1


def test_handing_a_job_back_and_retrying_it_notify_its_queue(conn, listener):
    job_id = pgdyno.enqueue(conn, "noop", queue="q")
    queue.complete_and_claim(conn, worker="w", queues=["q"], limit=1, lease=30)
    received(listener, conn)
    queue.release(conn, worker="w", ids=[job_id])
    assert received(listener, conn) == {"q": 1}
    queue.complete_and_claim(conn, worker="w", queues=["q"], limit=1, lease=30)
    queue.fail(conn, worker="w", job_id=job_id, error="E", retry_in=None)
    assert received(listener, conn) == {}
    queue.retry_job(conn, job_id)
    assert received(listener, conn) == {"q": 1}
