"""Issue 15, scenario 1 end to end: with notifications only for queues a session waits on,
no job waits for a poll while its worker is idle.

A real `pgdyno worker --concurrency 1` polls only every 60 s here, so a job it missed would
wait for the next notification or the poll. Clients enqueue at random moments, two of them as a
least-privilege enqueue role, some holding their transaction open after the INSERT (a web
request doing more work before it commits), while the worker flips between idle (registered,
notified) and busy (not registered).
"""

from __future__ import annotations

import random
import threading
import time

import psycopg
from helpers import slow_commit_sql, wait_for_listeners, wait_until, worker
from psycopg.conninfo import make_conninfo

from pgdyno import roles

ROUNDS = 40
QUIET_S = 0.3
#: The commit after the enqueue trigger's decision takes up to 5 ms more, as on a disk that
#: syncs (the test server does not): deferred triggers of one row fire in name order.
SLOW_COMMIT = slow_commit_sql(0.005)


def test_no_job_waits_for_a_poll_while_its_worker_is_idle(database_url, conn):
    """Rounds: four clients commit a job each at random moments within 20 ms, then all is
    quiet for 0.3 s. A job the worker missed would wait for the next round's notification (or
    the poll): every job must start within 0.2 s of its commit."""
    conn.execute(SLOW_COMMIT)
    conn.execute("CREATE ROLE wake_web LOGIN")
    roles.grant_enqueue(conn, "wake_web", returning_id=False)
    commits: dict[str, float] = {}
    lock = threading.Lock()
    rounds = threading.Barrier(4)

    def enqueue(slot: int) -> None:
        rng = random.Random(slot)
        url = make_conninfo(database_url, user="wake_web") if slot % 2 else database_url
        with psycopg.connect(url) as app:
            for n in range(ROUNDS):
                rounds.wait()
                time.sleep(rng.random() * 0.02)
                key = f"{slot}-{n}"
                app.execute(
                    "INSERT INTO pgdyno.jobs (queue, task, args)"
                    " VALUES ('wake', 'noop', jsonb_build_object('key', %s::text))",
                    (key,),
                )
                if rng.random() < 0.3:
                    time.sleep(rng.random() * 0.01)  # the request's other work
                app.commit()
                with lock:
                    commits[key] = time.time()
                time.sleep(QUIET_S)  # then the round ends: quiet after its last commit

    with worker(database_url, "wake", PGDYNO_POLL_INTERVAL="60") as proc:
        wait_for_listeners(conn, 1)
        threads = [threading.Thread(target=enqueue, args=(slot,)) for slot in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(ROUNDS * 2)
        wait_until(
            lambda: (
                conn.execute(
                    "SELECT count(*) FROM pgdyno.jobs WHERE queue = 'wake' AND status = 'done'"
                ).fetchone()[0]
                == len(commits)
            ),
            timeout=90,
            message=f"all {len(commits)} jobs done; worker output: {proc.output()[-2000:]}",
        )
        proc.signal(15)
        assert proc.wait() == 0
    started = dict(
        conn.execute(
            "SELECT args->>'key', extract(epoch FROM started_at)::float8 FROM pgdyno.jobs"
            " WHERE queue = 'wake'"
        ).fetchall()
    )
    waits = sorted(started[key] - committed for key, committed in commits.items())
    assert len(waits) == 4 * ROUNDS
    late = [round(wait, 2) for wait in waits if wait > 0.2]
    assert late == [], f"jobs waited for a worker that was idle: {late}"
    # It left the registry when it stopped: enqueuers no longer notify for it.
    assert conn.execute("SELECT count(*) FROM pgdyno.sleeping_queues").fetchone()[0] == 0
