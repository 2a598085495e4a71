"""The samples behind the scaling timeline and the finished-job counters, written in Postgres.

The acting dispatcher calls `Sampler.tick(conn)` once per reconcile (pgdyno/scaling/
dispatcher.py); a dashboard in any process then reads the same history. One tick, in one
transaction:

1. counts the jobs that finished since the last tick into `pgdyno.metrics_counters` (a window
   of the finished_at index, never the whole history);
2. writes one row per queue into `pgdyno.metrics_samples` (due ready jobs, running jobs, the
   queue's finished total, its process type's formation quantity), for each group of queues
   (the queues of one process type, or one unscaled queue) whose figures changed since the
   group's last row, or whose last row is older than HEARTBEAT_S. Idle queues cost a row a
   minute, and the timeline can tell "unchanged" from "no dispatcher was sampling".

The queues sampled are those summary.queues shows: the queues that matter (rules, live
workers' queues, paused ones), the summary.OTHERS_SHOWN deepest others, and one row (queue
'') summing the rest. So a tick writes at most that many rows however many queue names clients
invent, and the counters keep at most COUNTED_QUEUES queues beyond those that matter (the jobs
of any other are counted under queue '').

This module needs only psycopg: the dispatcher imports it without the dashboard's libraries.
A failing tick is logged and skipped; it never raises into the dispatcher.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import psycopg

from pgdyno import db, sql
from pgdyno.logfmt import log_event
from pgdyno.web import summary

log = logging.getLogger(__name__)

#: Seconds after which a group of queues gets a row even when nothing changed.
HEARTBEAT_S = 60.0
#: Seconds a finished job waits before it is counted: a finishing transaction that read now()
#: just before a tick may commit just after it.
SETTLE_S = 10.0
#: Fewest seconds between two ticks that write (the dispatcher may reconcile more often).
MIN_INTERVAL_S = 1.0
#: Most queues, beyond those that matter, with finished-job counters of their own.
COUNTED_QUEUES = 1000

#: (queue, process_type, quantity, ready, running, finished_total)
Row = tuple[str, str | None, int | None, int, int, int]


def advance_counters(
    conn: psycopg.Connection,
    settle: float = SETTLE_S,
    most: int = COUNTED_QUEUES,
    known: list[str] | None = None,
) -> None:
    """Count jobs finished since the last call (up to `settle` s ago) into metrics_counters:
    per queue for the queues that matter (`known`, else summary.matter) and for at most `most`
    others (the first to finish jobs), under queue '' for the rest."""
    params = {
        "settle": timedelta(seconds=settle),
        "known": summary.matter(conn) if known is None else known,
        "most": most,
    }
    conn.execute(sql.query("metrics_counters_advance"), params)


def prune(conn: psycopg.Connection, older_than: float) -> int:
    """Delete samples older than `older_than` seconds; returns how many (the counters stay)."""
    cur = conn.execute(
        sql.query("metrics_samples_prune"), {"older_than": timedelta(seconds=older_than)}
    )
    return cur.rowcount


class Sampler:
    """Writes the timeline's samples and advances the counters; one per dispatcher."""

    def __init__(
        self,
        *,
        min_interval: float = MIN_INTERVAL_S,
        heartbeat: float = HEARTBEAT_S,
        settle: float = SETTLE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.min_interval = min_interval
        self.heartbeat = heartbeat
        self.settle = settle
        self._clock = clock
        self._next_tick = float("-inf")
        self._last: dict[str, tuple[Row, ...]] = {}
        self._written_at: dict[str, float] = {}
        self._keys: set[str] = set()  # the groups of the last tick read
        self._last_error: str | None = None

    def tick(self, conn: psycopg.Connection) -> int | None:
        """Sample now unless the last tick was under `min_interval` s ago.

        Returns the number of sample rows written, or None when skipped or failed. Never
        raises: a failure (say, migration 0005 not applied yet) is logged once per distinct
        error and the dispatcher carries on.
        """
        now = self._clock()
        if now < self._next_tick:
            return None
        self._next_tick = now + self.min_interval
        try:
            with conn.transaction():
                known = summary.matter(conn)
                advance_counters(conn, self.settle, known=known)
                # A queue known only by its row in pgdyno.queues (paused before its first
                # job) has nothing to sample: every figure 0, no process type.
                rows = [
                    _row(queue)
                    for queue in summary.queues(conn, known=known).rows
                    if queue["process_type"] or summary.jobs(queue) or _finished(queue)
                ]
                changed = self._changed(rows, now)
                written = [row for group in changed.values() for row in group]
                if written:
                    conn.execute(sql.query("metrics_samples_insert"), _columns(written))
        except Exception as exc:  # never break the dispatcher
            message = db.first_line(exc)
            if message != self._last_error:
                log_event(log, "metrics_sample_failed", logging.WARNING, error=message)
                self._last_error = message
            return None
        self._last_error = None
        for key in set(self._last) - self._keys:  # groups gone (a queue no longer shown)
            del self._last[key], self._written_at[key]
        for key, group in changed.items():  # only once committed
            self._last[key] = group
            self._written_at[key] = now
        return len(written)

    def _changed(self, rows: list[Row], now: float) -> dict[str, tuple[Row, ...]]:
        groups: dict[str, list[Row]] = {}
        for row in rows:
            key = f"type:{row[1]}" if row[1] is not None else f"queue:{row[0]}"
            groups.setdefault(key, []).append(row)
        self._keys = set(groups)
        return {
            key: tuple(group)
            for key, group in groups.items()
            if tuple(group) != self._last.get(key)
            or now - self._written_at.get(key, float("-inf")) >= self.heartbeat
        }


def _finished(queue: dict[str, Any]) -> int:
    return int(queue["done"] + queue["failed"] + queue["cancelled"])


def _row(queue: dict[str, Any]) -> Row:
    return (
        queue["queue"],
        queue["process_type"],
        queue["quantity"],
        queue["ready"],
        queue["running"],
        _finished(queue),
    )


def _columns(rows: list[Row]) -> dict[str, list[Any]]:
    names = ("queues", "process_types", "quantities", "ready", "running", "finished")
    return {name: [row[i] for row in rows] for i, name in enumerate(names)}
