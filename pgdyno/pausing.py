"""Paused queues: `pgdyno queue pause|resume`, the rows of pgdyno.queues.

A paused queue's ready jobs stay ready: no worker claims them (the claim statement leaves the
queue out; jobs already running finish), and they ask for no dyno (the scaling load counts them
as none), so a worker whose queues are all paused may scale its type to zero. Resuming sends
`NOTIFY pgdyno_jobs, '<queue>'`: workers claim at once and the dispatcher scales up for it.
"""

from __future__ import annotations

from datetime import datetime

import psycopg

from pgdyno import sql
from pgdyno.errors import InvalidJob


def pause(conn: psycopg.Connection, queue: str) -> None:
    """Pause `queue` (known or not yet); InvalidJob for a name no queue can have."""
    try:
        conn.execute(sql.query("queue_pause"), {"name": queue})
    except psycopg.errors.CheckViolation as exc:
        raise InvalidJob(
            f"queue {queue!r} refused: a queue is a non-empty name of at most 128 characters, "
            "without whitespace at either end"
        ) from exc


def resume(conn: psycopg.Connection, queue: str) -> bool:
    """Resume `queue` and wake its workers; False when it was not paused."""
    row = conn.execute(sql.query("queue_resume"), {"name": queue}).fetchone()
    return bool(row and row[1])


def paused(conn: psycopg.Connection) -> dict[str, datetime | None]:
    """The paused queues and since when."""
    return dict(conn.execute(sql.query("queues_paused")).fetchall())
