"""Keeps the hot table small: workers VACUUM pgdyno.jobs_active themselves, often and briefly.

Every job leaves two dead row versions in jobs_active (the ready one when it is claimed, the
running one when it moves to jobs_finished). Autovacuum visits a database at most once per
autovacuum_naptime (1 min by default, and not settable per table), so a busy queue piles up a
minute of dead rows: 4,600 jobs/s grew jobs_active to 92 MB with 540k dead tuples in 60 s.
Vacuuming the hot table every few thousand finished jobs keeps it at a few MB, so inserts reuse
its pages and the claim index stays short.

The VACUUM runs on its own short-lived connection in a background thread, never on the
worker's loop: the loop keeps claiming while it runs. SKIP_LOCKED: when another worker is
already vacuuming, this one skips. TRUNCATE false: shrinking the file needs an ACCESS
EXCLUSIVE lock that would stall every claim (autovacuum still truncates when it comes). A role
that does not own the table gets a WARNING from Postgres and nothing happens (autovacuum is
then the only cleaner, as before).
"""

from __future__ import annotations

import logging
import threading
import time

from pgdyno import db, queue
from pgdyno.logfmt import log_event

log = logging.getLogger(__name__)

#: Vacuum after this many jobs finished by this worker...
VACUUM_AFTER_JOBS = 5_000
#: ...but at most once per this many seconds.
VACUUM_MIN_INTERVAL_S = 0.5


class HotTableVacuum:
    """Counts the jobs a worker finishes and vacuums the hot table in the background."""

    def __init__(
        self,
        dsn: str,
        worker: str,
        *,
        after_jobs: int = VACUUM_AFTER_JOBS,
        min_interval: float = VACUUM_MIN_INTERVAL_S,
    ) -> None:
        self._dsn, self._worker = dsn, worker
        self._after_jobs, self._min_interval = after_jobs, min_interval
        self._finished = 0
        self._next = 0.0
        self._thread: threading.Thread | None = None

    def finished(self, count: int) -> None:
        """Called by the worker loop with the number of jobs it just marked done or failed."""
        self._finished += count
        if self._finished < self._after_jobs:
            return
        now = time.monotonic()
        if now < self._next or (self._thread is not None and self._thread.is_alive()):
            return
        self._finished = 0
        self._next = now + self._min_interval
        self._thread = threading.Thread(target=self._vacuum, name="pgdyno-vacuum", daemon=True)
        self._thread.start()

    def _vacuum(self) -> None:
        started = time.monotonic()
        try:
            conn = db.connect(self._dsn, application_name=f"pgdyno vacuum {self._worker}")
            try:
                queue.vacuum_hot_table(conn)
            finally:
                conn.close()
        except Exception as exc:  # a failed vacuum is retried next time, never fatal
            log_event(
                log, "vacuum_failed", logging.WARNING, worker=self._worker, error=db.first_line(exc)
            )
            return
        log_event(
            log,
            "hot_table_vacuumed",
            logging.DEBUG,
            worker=self._worker,
            duration_ms=round((time.monotonic() - started) * 1000, 1),
        )
