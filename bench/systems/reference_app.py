"""The reference's worker: `python -m bench.systems.reference_app [--drain]`.

Claims 100 jobs per statement (SKIP LOCKED), runs each, deletes the batch: no lease, no
retry, no history. On exit (drain mode: the first empty claim) it records how many jobs it
finished and when the first and last batch were deleted, in reference_done.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

import psycopg

from bench.stamp import stamp

CLAIM = """
WITH picked AS (
    SELECT id FROM reference_jobs WHERE status = 0 AND queue = 'bench' AND run_at <= now()
     ORDER BY run_at, id LIMIT 100 FOR UPDATE SKIP LOCKED
)
UPDATE reference_jobs AS j SET status = 1 FROM picked WHERE j.id = picked.id
RETURNING j.id, j.task, j.args
"""
FINISH = "DELETE FROM reference_jobs WHERE id = ANY(%s)"
TASKS: dict[str, Callable[..., Any]] = {
    "noop": lambda: None,
    "stamp": lambda key: stamp(key),
}


def main(argv: list[str]) -> None:
    drain = "--drain" in argv
    done, first, last = 0, None, None
    with psycopg.connect(os.environ["BENCH_DATABASE_URL"], autocommit=True) as conn:
        while True:
            jobs = conn.execute(CLAIM, prepare=True).fetchall()
            if not jobs:
                if drain:
                    break
                time.sleep(0.05)
                continue
            for _, task, args in jobs:
                TASKS[task](**args)
            conn.execute(FINISH, ([job[0] for job in jobs],), prepare=True)
            last = time.time()
            first = first or last
            done += len(jobs)
        conn.execute(
            "INSERT INTO reference_done (jobs, first, last)"
            " VALUES (%s, to_timestamp(%s), to_timestamp(%s))",
            (done, first, last),
        )


if __name__ == "__main__":
    main(sys.argv[1:])
