"""The workers registry: every worker process in pgdyno.workers, with a heartbeat.

A row says which dyno and process type a worker is, which queues it serves and when it last
ran a job (sql/workers.sql, migration 0008). Scaling reads it: a type is drained only when
every queue its workers serve is (scaling/scaler.py), its linger counts from the last moment
any of its workers was busy, and the dispatcher warns about rule queues no worker of the type
serves. `pgdyno status` and the dashboard list it.

The worker loop calls `Registration.tick` once per turn (worker/loop.py); it writes at most
every THROTTLE_S seconds when the worker turns busy or idle, and every HEARTBEAT_S otherwise:
never once per job. A row whose heartbeat is older than EXPIRY_S belongs to a lost worker
(killed, dyno gone); rows of stopped and lost workers are deleted after PRUNE_AFTER_S.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.rows import dict_row

from pgdyno import sql
from pgdyno.config import Settings

#: Seconds between a worker's heartbeats while nothing changes.
HEARTBEAT_S = 10.0
#: Least seconds between two writes when the worker turns busy or idle (a deferred write
#: records the true moment): bounds the writes of a worker that flaps between jobs.
THROTTLE_S = 2.0
#: A worker whose heartbeat is older than this is lost.
EXPIRY_S = 30.0
#: Rows of stopped and lost workers are deleted this long after their last heartbeat.
PRUNE_AFTER_S = 3600.0


class Registration:
    """One worker's row: registered by its first tick, kept by the next ones, marked stopped
    by `stopped`. Times are on the worker loop's clock (seconds)."""

    def __init__(
        self,
        worker_id: str,
        queues: Sequence[str],
        *,
        dyno: str | None,
        process_type: str | None,
        concurrency: int,
    ) -> None:
        self.worker_id = worker_id
        self.queues = list(queues)
        self.dyno = dyno or socket.gethostname()
        self.process_type = process_type
        self.concurrency = concurrency
        self._written_at: float | None = None  # clock time of the last write
        self._dirty = True  # turned busy or idle since the last write
        self._busy = False
        self._idle_since: float | None = None  # when its last job ended; None: never ran one

    def tick(self, conn: psycopg.Connection, now: float, *, running: int) -> float:
        """Note whether jobs run (`running`); write the row when it is due. Returns the clock
        time of the next write that may be due (the loop wakes up for it)."""
        busy = running > 0
        if busy != self._busy:
            self._dirty = True
            if not busy:
                self._idle_since = now
        self._busy = busy
        if self._written_at is not None:
            due = self._written_at + (THROTTLE_S if self._dirty else HEARTBEAT_S)
            if now < due:
                return due
        self._write(conn, now, running)
        return now + HEARTBEAT_S

    def stopped(self, conn: psycopg.Connection) -> None:
        """Mark the row stopped (a clean exit); nothing if it was never written."""
        if self._written_at is not None:
            conn.execute(sql.query("worker_stopped"), {"id": self.worker_id})

    def _write(self, conn: psycopg.Connection, now: float, running: int) -> None:
        idle_s = None if self._idle_since is None else max(now - self._idle_since, 0.0)
        conn.execute(
            sql.query("worker_register"),
            {
                "id": self.worker_id,
                "dyno": self.dyno,
                "process_type": self.process_type,
                "queues": self.queues,
                "concurrency": self.concurrency,
                "pid": os.getpid(),
                "running": running,
                "idle_s": idle_s,
            },
        )
        self._written_at = now
        self._dirty = False


def for_worker(worker_id: str, queues: Sequence[str], settings: Settings) -> Registration:
    """The registration of a worker built from `settings` (its dyno, process type, concurrency)."""
    return Registration(
        worker_id,
        queues,
        dyno=settings.dyno,
        process_type=settings.own_process_type,
        concurrency=settings.concurrency,
    )


def served_queues(conn: psycopg.Connection, process_type: str) -> tuple[list[str], int]:
    """(the queues the type's workers serve, how many of them are live). The queues are those
    of its live workers, else those of its latest worker; ([], 0) when none was ever seen."""
    rows = conn.execute(
        sql.query("workers_queues_of_type"), {"process_type": process_type, "expiry": EXPIRY_S}
    ).fetchall()
    return [row[0] for row in rows], int(rows[0][1]) if rows else 0


def workers(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Every registered worker (state: live, stopped or lost), by process type."""
    cur = conn.cursor(row_factory=dict_row)
    return cur.execute(sql.query("workers_all"), {"expiry": EXPIRY_S}).fetchall()


def prune(conn: psycopg.Connection) -> int:
    """Delete the rows of workers stopped or lost more than PRUNE_AFTER_S ago."""
    cur = conn.execute(sql.query("workers_prune"), {"older_than": PRUNE_AFTER_S})
    return cur.rowcount
