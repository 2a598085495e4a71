"""The chaos soak's task (bench/chaos.py), imported by its workers (--import bench.chaos_tasks).

`chaos.work` records each execution in chaos_effects: ('start') when it begins, then ('done')
or ('fail') when it ends, with the job's id and attempt, the pid of the process running it (the
job's own process in the process pool) and the pid of its worker. An attempt that started and
never ended was interrupted: the soak attributes each one to the fault that killed its process.
Recording survives Postgres restarts (retried until written; one row per attempt and kind), so
the effects are exact whatever happens to the connection.
"""

from __future__ import annotations

import os
import random
import threading
import time

import psycopg

import pgdyno

_local = threading.local()


def _write(kind: str) -> None:
    job = pgdyno.current_job()
    worker_pid = int(job.worker.split(":")[-2])
    while True:
        conn = getattr(_local, "conn", None)
        try:
            if conn is None or conn.closed:
                conn = _local.conn = psycopg.connect(
                    os.environ["DATABASE_URL"], autocommit=True, connect_timeout=5
                )
            conn.execute(
                "INSERT INTO chaos_effects (job_id, attempt, kind, pid, worker_pid)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (job.id, job.attempt, kind, os.getpid(), worker_pid),
            )
            return
        except psycopg.OperationalError:
            _local.conn = None
            time.sleep(0.2)


@pgdyno.task("chaos.work")
def work(n: int, seconds: float = 0.0, fail_p: float = 0.0) -> int:
    """Sleep `seconds`, then fail with probability `fail_p` (drawn per attempt)."""
    _write("start")
    if seconds:
        time.sleep(seconds)
    job = pgdyno.current_job()
    if random.Random(f"{job.id}:{job.attempt}").random() < fail_p:
        _write("fail")
        raise RuntimeError(f"job {n} failed at random in attempt {job.attempt}")
    _write("done")
    return n
