"""The sleepers registry: which sessions wait for jobs of which queue (pgdyno.sleepers).

The enqueue trigger notifies a queue at commit only when a session waits on it (migration
0011 says why and argues the race closed). An idle worker registers with `wait_for_jobs` before
it sleeps and claims right after it (a job committed before the registration sent no
notification); a busy one calls `stop_waiting`, so that enqueuers stop paying for
notifications nobody acts on. The dispatcher registers its rule queues the same way. Rows of
sessions that ended are removed by `prune` (each worker's start, the dispatcher's timer).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import psycopg

from pgdyno import sql

#: The longest a registration waits for the enqueuers that were committing (seconds). A commit
#: takes milliseconds; one still running after this (a stalled disk, a role holding the lock)
#: makes the registration unsettled: the caller claims and registers again later.
WAIT_S = 0.1


def wait_for_jobs(
    conn: psycopg.Connection, *, holder: str, queues: Sequence[str], wait: float = WAIT_S
) -> bool:
    """Register the session as waiting for jobs of `queues` (`holder`: a worker id or the
    dispatcher's name); True once no enqueuer that decided not to notify is still committing,
    False after `wait` seconds (registered all the same). The caller must claim next."""
    row = conn.execute(
        sql.query("sleepers_wait_for_jobs"),
        {"holder": holder, "queues": list(queues), "wait": timedelta(seconds=wait)},
    ).fetchone()
    return bool(row and row[0])


def stop_waiting(conn: psycopg.Connection) -> None:
    """The session is busy: its queues' enqueuers stop notifying for it."""
    conn.execute(sql.query("sleepers_stop_waiting"))


def prune(conn: psycopg.Connection) -> int:
    """Remove the rows of sessions that are gone; returns how many."""
    row = conn.execute(sql.query("sleepers_prune")).fetchone()
    return int(row[0]) if row else 0
