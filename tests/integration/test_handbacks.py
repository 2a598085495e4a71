"""Hand-backs on shutdown are counted (issue 12, scenario 8): the first
pgdyno.free_handbacks() are free, later ones keep their attempt, and a job whose attempts are
then spent fails instead of being handed back forever. The statements on a real database."""

from __future__ import annotations

from helpers import job_row

from pgdyno import queue


def claim(conn, worker: str = "w") -> list[int]:
    claimed = queue.complete_and_claim(conn, worker=worker, queues=["q"], limit=1, lease=30)
    return [job.id for job in claimed]


def test_after_three_free_hand_backs_each_counts_and_the_last_attempt_fails(conn):
    assert conn.execute("SELECT pgdyno.free_handbacks()").fetchone()[0] == 3
    job = queue.enqueue(conn, "long", queue="q", max_attempts=2)
    seen = []
    for _ in range(5):
        assert claim(conn) == [job]
        assert queue.release(conn, worker="w", ids=[job]) == [job]
        row = job_row(conn, job)
        seen.append((row["status"], row["attempts"], row["handbacks"]))
    assert seen == [
        ("ready", 0, 1),  # free
        ("ready", 0, 2),  # free
        ("ready", 0, 3),  # free
        ("ready", 1, 4),  # counted: attempt 1 of 2 spent
        ("failed", 2, 5),  # counted: the last attempt, spent
    ]
    assert job_row(conn, job)["last_error"].startswith("HandedBack: handed back 5 times")
    assert claim(conn) == []


def test_a_release_after_a_lost_connection_is_not_a_hand_back(conn):
    job = queue.enqueue(conn, "t", queue="q")
    claim(conn)
    queue.release(conn, worker="w", ids=None, keep=[])
    row = job_row(conn, job)
    assert (row["status"], row["attempts"], row["handbacks"]) == ("ready", 0, 0)


def test_retry_gives_a_failed_job_its_free_hand_backs_again(conn):
    job = queue.enqueue(conn, "t", queue="q", max_attempts=1)
    for _ in range(4):
        claim(conn)
        queue.release(conn, worker="w", ids=[job])
    assert job_row(conn, job)["status"] == "failed"
    queue.retry_job(conn, job)
    row = job_row(conn, job)
    assert (row["status"], row["attempts"], row["handbacks"]) == ("ready", 0, 0)
