"""The queue's statements one by one: claim order and locking, finish, fail, lease, rescue.

These drive pgdyno.queue directly on real connections, with two connections where a race is the
point, held open at the exact moment that matters (no timing involved).
"""

from __future__ import annotations

from datetime import timedelta

import psycopg
from helpers import job_row

import pgdyno
from pgdyno import queue


def claim(conn, worker="w1", queues=("q",), limit=10, lease=30.0, done=()):
    return queue.complete_and_claim(
        conn, worker=worker, queues=list(queues), limit=limit, lease=lease, done=list(done)
    )


def expire_lease(conn, job_id):
    """Stand-in for the clock running past the lease (the lease length is not under test)."""
    conn.execute(
        "UPDATE pgdyno.jobs SET lease_expires_at = now() - interval '1 s' WHERE id = %s", (job_id,)
    )


# --- claim ------------------------------------------------------------------------------------


def test_claim_takes_higher_priority_then_earlier_run_at_then_lower_id(conn):
    ids = {}
    for name, priority, ago in [
        ("old-low", -1, 60),
        ("new-high", 5, 0),
        ("mid-a", 0, 30),
        ("mid-b", 0, 10),
        ("mid-c", 0, 10),
        ("high", 5, 1),
    ]:
        ids[name] = pgdyno.enqueue(
            conn, "t", queue="q", priority=priority, run_at=timedelta(seconds=-ago)
        )
    conn.execute(
        "UPDATE pgdyno.jobs SET run_at = (SELECT run_at FROM pgdyno.jobs WHERE id = %s)"
        " WHERE id = %s",
        (ids["mid-b"], ids["mid-c"]),
    )  # a tie only the id breaks
    order = [job.id for _ in ids for job in claim(conn, limit=1)]
    assert order == [ids[n] for n in ["high", "new-high", "mid-a", "mid-b", "mid-c", "old-low"]]


def test_claim_merges_several_queues_in_claim_order_and_ignores_other_queues(conn):
    a_low = pgdyno.enqueue(conn, "t", queue="a", priority=1)
    b_high = pgdyno.enqueue(conn, "t", queue="b", priority=9)
    pgdyno.enqueue(conn, "t", queue="c", priority=100)
    a_high = pgdyno.enqueue(conn, "t", queue="a", priority=5)
    # A batch starts together, so only which jobs it holds matters, not their order in it.
    assert {job.id for job in claim(conn, queues=["a", "b"], limit=2)} == {b_high, a_high}
    assert [job.id for job in claim(conn, queues=["a", "b"])] == [a_low]


def test_claim_never_takes_a_job_before_its_run_at(conn):
    later = pgdyno.enqueue(conn, "t", queue="q", run_at=3600)
    assert claim(conn) == []
    conn.execute("UPDATE pgdyno.jobs SET run_at = now() - interval '1 ms' WHERE id = %s", (later,))
    assert [job.id for job in claim(conn)] == [later]


def test_claimed_job_is_running_with_an_attempt_counted_a_lease_and_its_worker(conn):
    job_id = pgdyno.enqueue(conn, "t", {"x": 1}, queue="q", max_attempts=4)
    [job] = claim(conn, worker="winston.1:42:ab", lease=30)
    assert job == queue.ClaimedJob(job_id, "q", "t", {"x": 1}, 1, 4)
    row = job_row(conn, job_id)
    assert (row["status"], row["attempts"], row["worker"]) == ("running", 1, "winston.1:42:ab")
    assert row["lease_expires_at"] - row["started_at"] == timedelta(seconds=30)


def test_claim_takes_no_more_than_its_limit(conn):
    pgdyno.enqueue_many(conn, [{"task": "t", "queue": "q"}] * 7)
    assert len(claim(conn, limit=3)) == 3
    assert len(claim(conn, limit=0)) == 0
    assert len(claim(conn, limit=10)) == 4


def test_claim_skips_a_job_another_session_holds_instead_of_waiting(conn, database_url):
    first, second = pgdyno.enqueue_many(conn, [{"task": "t", "queue": "q"}] * 2)
    with psycopg.connect(database_url) as other:
        other.execute("SELECT 1 FROM pgdyno.jobs WHERE id = %s FOR UPDATE", (first,))
        conn.execute("SET lock_timeout = '2s'")  # waiting would fail the test, not hang it
        assert [job.id for job in claim(conn)] == [second]
        other.rollback()
    assert [job.id for job in claim(conn)] == [first]


def test_two_workers_claiming_at_once_get_disjoint_jobs(conn, database_url):
    pgdyno.enqueue_many(conn, [{"task": "t", "queue": "q"}] * 10)
    with psycopg.connect(database_url) as first, psycopg.connect(database_url) as second:
        taken_first = claim(first, worker="w1", limit=4)  # uncommitted: rows still locked
        taken_second = claim(second, worker="w2", limit=10)
        first.commit()
        second.commit()
    ids_first, ids_second = {j.id for j in taken_first}, {j.id for j in taken_second}
    assert len(ids_first) == 4 and len(ids_second) == 6
    assert not ids_first & ids_second


# --- finish, fail -----------------------------------------------------------------------------


def test_completing_a_job_stores_its_result_and_moves_it_to_the_finished_jobs(conn):
    job_id = pgdyno.enqueue(conn, "t", queue="q")
    claim(conn)
    assert claim(conn, limit=0, done=[(job_id, '{"rows": 3}')]) == []
    row = job_row(conn, job_id)
    assert (row["status"], row["result"], row["lease_expires_at"]) == ("done", {"rows": 3}, None)
    assert row["finished_at"] >= row["started_at"]


def test_completing_and_claiming_happen_in_one_statement(conn):
    first, second = pgdyno.enqueue_many(conn, [{"task": "t", "queue": "q"}] * 2)
    claim(conn, limit=1)
    assert [job.id for job in claim(conn, limit=1, done=[(first, None)])] == [second]
    assert job_row(conn, first)["status"] == "done"


def test_a_worker_cannot_finish_or_fail_a_job_it_does_not_hold(conn):
    job_id = pgdyno.enqueue(conn, "t", queue="q")
    claim(conn, worker="owner")
    claim(conn, worker="stranger", limit=0, done=[(job_id, None)])
    assert queue.fail(conn, worker="stranger", job_id=job_id, error="E", retry_in=1) is None
    assert queue.heartbeat(conn, worker="stranger", ids=[job_id], lease=30) == set()
    assert queue.release(conn, worker="stranger", ids=[job_id]) == []
    row = job_row(conn, job_id)
    assert (row["status"], row["worker"], row["last_error"]) == ("running", "owner", None)


def test_failed_attempt_goes_back_to_ready_after_its_retry_delay(conn):
    job_id = pgdyno.enqueue(conn, "t", queue="q", max_attempts=3)
    claim(conn)
    state = queue.fail(conn, worker="w1", job_id=job_id, error="ValueError: x", retry_in=42)
    row = job_row(conn, job_id)
    assert state == row["status"] == "ready"
    assert (row["attempts"], row["last_error"], row["worker"]) == (1, "ValueError: x", None)
    now = conn.execute("SELECT now()").fetchone()[0]
    assert timedelta(seconds=41) < row["run_at"] - now <= timedelta(seconds=42)
    assert claim(conn) == []  # not before the delay


def test_failed_last_attempt_fails_the_job_for_good(conn):
    job_id = pgdyno.enqueue(conn, "t", queue="q", max_attempts=2)
    for _ in range(2):
        conn.execute("UPDATE pgdyno.jobs SET run_at = now() WHERE id = %s", (job_id,))
        claim(conn)
        state = queue.fail(conn, worker="w1", job_id=job_id, error="E", retry_in=0.01)
    row = job_row(conn, job_id)
    assert state == row["status"] == "failed"
    assert row["attempts"] == 2
    assert row["finished_at"] is not None


def test_failure_that_retrying_cannot_help_fails_the_job_with_attempts_left(conn):
    job_id = pgdyno.enqueue(conn, "t", queue="q", max_attempts=10)
    claim(conn)
    assert queue.fail(conn, worker="w1", job_id=job_id, error="E", retry_in=None) == "failed"
    assert job_row(conn, job_id)["attempts"] == 1


# --- lease, hand-back, rescue -----------------------------------------------------------------


def test_heartbeat_extends_the_lease_of_the_jobs_still_held(conn):
    held, other = pgdyno.enqueue_many(conn, [{"task": "t", "queue": "q"}] * 2)
    claim(conn, lease=1)
    before = job_row(conn, held)["lease_expires_at"]
    queue.release(conn, worker="w1", ids=[other])
    assert queue.heartbeat(conn, worker="w1", ids=[held, other], lease=600) == {held}
    assert job_row(conn, held)["lease_expires_at"] > before + timedelta(seconds=500)


def test_hand_back_makes_the_job_ready_at_once_without_counting_the_attempt(conn):
    job_id = pgdyno.enqueue(conn, "t", queue="q")
    claim(conn)
    queue.set_progress(conn, worker="w1", job_id=job_id, progress={"pct": 50})
    assert queue.release(conn, worker="w1", ids=[job_id]) == [job_id]
    row = job_row(conn, job_id)
    assert (row["status"], row["attempts"], row["worker"], row["progress"]) == (
        "ready",
        0,
        None,
        None,
    )
    assert [job.id for job in claim(conn, worker="w2")] == [job_id]


def test_after_a_lost_connection_release_hands_back_all_but_the_jobs_kept(conn):
    a, b, c = pgdyno.enqueue_many(conn, [{"task": "t", "queue": "q"}] * 3)
    claim(conn)
    assert sorted(queue.release(conn, worker="w1", ids=None, keep=[b])) == [a, c]
    assert job_row(conn, b)["status"] == "running"


def test_job_whose_lease_expired_is_rescued_with_the_attempt_counted(conn):
    job_id = pgdyno.enqueue(conn, "t", queue="q", max_attempts=3)
    claim(conn, worker="dead.1")
    assert queue.rescue_expired(conn) == []  # lease still valid: not touched
    expire_lease(conn, job_id)
    [rescued] = queue.rescue_expired(conn)
    assert (rescued["id"], rescued["status"]) == (job_id, "ready")
    row = job_row(conn, job_id)
    assert (row["status"], row["attempts"], row["worker"]) == ("ready", 1, None)
    assert row["last_error"] == (
        "LeaseExpired: worker dead.1 stopped renewing its lease during attempt 1"
    )
    [job] = claim(conn, worker="w2")
    assert job.attempts == 2


def test_job_whose_lease_expired_on_its_last_attempt_fails(conn):
    job_id = pgdyno.enqueue(conn, "t", queue="q", max_attempts=1)
    claim(conn, worker="dead.1")
    expire_lease(conn, job_id)
    assert [r["status"] for r in queue.rescue_expired(conn)] == ["failed"]
    row = job_row(conn, job_id)
    assert (row["status"], row["attempts"]) == ("failed", 1)


def test_worker_whose_job_was_rescued_cannot_complete_it_over_the_new_owner(conn):
    job_id = pgdyno.enqueue(conn, "t", queue="q")
    claim(conn, worker="slow")
    expire_lease(conn, job_id)
    queue.rescue_expired(conn)
    claim(conn, worker="new")
    claim(conn, worker="slow", limit=0, done=[(job_id, '"stale"')])
    row = job_row(conn, job_id)
    assert (row["status"], row["worker"], row["result"]) == ("running", "new", None)


# --- scheduling helpers -----------------------------------------------------------------------


def test_next_due_in_is_the_wait_for_the_earliest_scheduled_job_of_the_queues(conn):
    assert queue.next_due_in(conn, ["q"]) is None
    pgdyno.enqueue(conn, "t", queue="q", run_at=300)
    pgdyno.enqueue(conn, "t", queue="q", run_at=100)
    pgdyno.enqueue(conn, "t", queue="other", run_at=5)
    assert 99 < queue.next_due_in(conn, ["q"]) <= 100


def test_queue_names_reach_the_claim_as_they_are_whatever_their_characters(conn):
    """The worker's queues go to the claim as one text[] literal (queue.text_array, built once
    per worker): commas, quotes, backslashes, braces, NULL and non-ASCII stay names."""
    names = ["a,b", 'say "hi"', "back\\slash", "{brace}", "NULL", "ünï cödé", "q"]
    assert conn.execute("SELECT %s::text[]", (queue.text_array(tuple(names)),)).fetchone()[0] == (
        names
    )
    ids = {name: pgdyno.enqueue(conn, "noop", queue=name) for name in names}
    pgdyno.enqueue(conn, "noop", queue="other")  # not asked for: never claimed
    claimed = claim(conn, queues=names, limit=20)
    assert sorted((job.queue, job.id) for job in claimed) == sorted(ids.items())
