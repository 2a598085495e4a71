"""Exactly once under concurrency: four worker processes race for the same 2,000 jobs."""

from __future__ import annotations

import contextlib
import signal

from helpers import wait_for_listeners, wait_until, worker

import pgdyno

JOBS = 2000
WORKERS = 4


def test_each_job_runs_exactly_once_with_four_competing_workers(effects, database_url):
    with contextlib.ExitStack() as stack:
        procs = [
            stack.enter_context(worker(database_url, "q", concurrency=4)) for _ in range(WORKERS)
        ]
        wait_for_listeners(effects, WORKERS)  # all four are racing from the first job
        ids = pgdyno.enqueue_many(
            effects, [{"task": "touch", "args": {"key": str(n)}, "queue": "q"} for n in range(JOBS)]
        )
        wait_until(
            lambda: (
                effects.execute(
                    "SELECT count(*) FROM pgdyno.jobs WHERE status = 'done'"
                ).fetchone()[0]
                == JOBS
            ),
            timeout=90,
            interval=0.2,
            message=f"{JOBS} jobs done",
        )
        for proc in procs:
            proc.signal(signal.SIGTERM)
        assert [proc.wait() for proc in procs] == [0] * WORKERS
        outputs = [proc.output() for proc in procs]

    duplicates = effects.execute(
        "SELECT job_key, count(*) FROM test_effects WHERE kind = 'touch'"
        " GROUP BY job_key HAVING count(*) <> 1"
    ).fetchall()
    assert duplicates == []
    assert (
        effects.execute(
            "SELECT count(DISTINCT job_key) FROM test_effects WHERE kind = 'touch'"
        ).fetchone()[0]
        == JOBS
    )
    states = effects.execute(
        "SELECT status::text, attempts, count(*) FROM pgdyno.jobs WHERE id = ANY(%s) GROUP BY 1, 2",
        (ids,),
    ).fetchall()
    assert states == [("done", 1, JOBS)]
    pids = effects.execute("SELECT count(DISTINCT pid) FROM test_effects").fetchone()[0]
    assert pids >= 2, "the workers did not compete: one process ran every job"
    for output in outputs:  # no worker fell back to reconnecting or lost a lease on the way
        assert "at=warn" not in output and "at=error" not in output, output[-2000:]
