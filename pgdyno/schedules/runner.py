"""The acting dispatcher's schedules: enqueue each scheduled run exactly once, on time.

Only the leader runs this (standbys hold no schedule state). Its turns come from the dispatcher's
lead loop: at leadership start, when a schedule changes (`NOTIFY pgdyno_control, 'schedules'`,
sent by a trigger on the table), and when the earliest next run comes (`wake_at`, which the
dispatcher's wait includes, so a nightly job wakes it and spins its process type up from zero).

Exactly once: a run is claimed by moving next_run_at from the time read to the next one, with a
WHERE on the time read, in the transaction that inserts its job (schedule_advance). A second
dispatcher, a restart or a new leader finds next_run_at moved on and enqueues nothing. The
job's unique_key, 'schedule:<name>:<scheduled time in UTC>', names the run.

Missed runs: when the dispatcher finds next_run_at in the past (none ran for a while), it
enqueues one run, for the latest scheduled time that passed, and moves on to the first time
after now: never one job per missed tick.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import psycopg

from pgdyno import db, sql
from pgdyno.clock import Clock
from pgdyno.enqueue import enqueue_unique
from pgdyno.errors import ConfigError, InvalidJob
from pgdyno.logfmt import log_event
from pgdyno.schedules import store
from pgdyno.schedules.declare import Declared
from pgdyno.schedules.timing import Timing

log = logging.getLogger(__name__)

#: The control payload the schedules table's trigger sends.
CHANGED = db.CONTROL_PREFIX + "schedules"
#: Seconds before a run whose enqueue found a lock held (schedule_run_lock_timeout) is tried again.
LOCKED_RETRY_S = 5.0


def run_key(name: str, scheduled_at: datetime) -> str:
    """The unique_key of the run of schedule `name` at `scheduled_at`."""
    at = scheduled_at.astimezone(UTC)
    fraction = f".{at.microsecond:06d}" if at.microsecond else ""
    return f"schedule:{name}:{at:%Y-%m-%dT%H:%M:%S}{fraction}Z"


class ScheduleRunner:
    """Enqueues due runs on the leader's connection; `wake_at` is its next deadline.

    `declared`: the @pgdyno.periodic schedules of the dispatcher's imports; `prune`: remove
    Python schedules no longer declared (only a dispatcher given --import knows them all).
    """

    def __init__(
        self,
        clock: Clock,
        declared: Callable[[], Sequence[Declared]] = lambda: (),
        *,
        prune: bool = False,
    ) -> None:
        self._clock = clock
        self._declared = declared
        self._prune = prune
        self._due = True
        self._timings: dict[tuple[str | None, timedelta | None, str], Timing] = {}
        #: When (on the dispatcher's clock) the earliest next run comes; None: no schedule.
        self.wake_at: float | None = None

    def start(self, conn: psycopg.Connection) -> None:
        """At leadership start: LISTEN for changes, sync declared schedules, and run what is
        due (runs missed while no dispatcher led: one per schedule)."""
        db.listen(conn, db.CONTROL_CHANNEL)
        declared = self._declared()
        if declared or self._prune:
            changed, removed, taken = store.sync_declared(conn, declared, prune=self._prune)
            for name in taken:
                log_event(
                    log,
                    "schedule_not_synced",
                    logging.WARNING,
                    schedule=name,
                    reason="a schedule of that name was added by the CLI or SQL",
                )
            if changed or removed:
                log_event(
                    log, "schedules_synced", changed=",".join(changed), removed=",".join(removed)
                )
        self._due = False
        self.run_due(conn)

    def notified(self, payloads: Sequence[str]) -> None:
        """The dispatcher's notifications: a changed schedule calls for a turn."""
        if CHANGED in payloads:
            self._due = True

    def step(self, conn: psycopg.Connection, now: float) -> bool:
        """Run a turn if one is called for (a change, or `wake_at` passed); True if it ran."""
        if not self._due and (self.wake_at is None or now < self.wake_at):
            return False
        self._due = False
        self.run_due(conn)
        return True

    def run_due(self, conn: psycopg.Connection) -> None:
        """Enqueue every due run, set first runs, and compute `wake_at`."""
        rows = conn.execute(sql.query("schedules_active")).fetchall()
        soonest: datetime | None = None
        db_now: datetime | None = None
        for name, cron, every, timezone, next_run_at, last_error, db_now in rows:
            try:
                timing = self._timing(cron, every, timezone)
                upcoming = self._run_one(conn, name, timing, next_run_at, db_now)
            except ConfigError as exc:
                if str(exc) != last_error:
                    conn.execute(sql.query("schedule_set_error"), {"name": name, "error": str(exc)})
                    log_event(log, "schedule_invalid", logging.ERROR, schedule=name, error=exc)
                continue
            except psycopg.errors.LockNotAvailable as exc:
                # Rolled back, next_run_at unchanged: the run is enqueued on a later turn.
                log_event(
                    log,
                    "schedule_run_waiting",
                    logging.WARNING,
                    schedule=name,
                    error=db.first_line(exc),
                    retry_in_s=LOCKED_RETRY_S,
                )
                upcoming = db_now + timedelta(seconds=LOCKED_RETRY_S)
            soonest = upcoming if soonest is None else min(soonest, upcoming)
        if soonest is None or db_now is None:
            self.wake_at = None
        else:
            self.wake_at = self._clock.now() + max((soonest - db_now).total_seconds(), 0.0)

    def _timing(self, cron: str | None, every: timedelta | None, timezone: str) -> Timing:
        """The row's timing, parsed once per definition; ConfigError for a bad one."""
        key = (cron, every, timezone)
        if key not in self._timings:
            self._timings[key] = Timing(cron, every, timezone)
        return self._timings[key]

    def _run_one(
        self,
        conn: psycopg.Connection,
        name: str,
        timing: Timing,
        next_run_at: datetime | None,
        db_now: datetime,
    ) -> datetime:
        """Handle one schedule; returns its next scheduled time."""
        if next_run_at is None:
            first = timing.next_after(db_now)
            conn.execute(sql.query("schedule_set_first_run"), {"name": name, "next_run_at": first})
            return first
        if next_run_at > db_now:
            return next_run_at
        latest = timing.latest_at_or_before(db_now)
        scheduled_at = max(next_run_at, latest) if latest is not None else next_run_at
        following = timing.next_after(max(db_now, scheduled_at))
        self._enqueue(conn, name, next_run_at, scheduled_at, following, db_now)
        return following

    def _enqueue(
        self,
        conn: psycopg.Connection,
        name: str,
        expected: datetime,
        scheduled_at: datetime,
        following: datetime,
        db_now: datetime,
    ) -> None:
        """Claim the run at `scheduled_at` and enqueue its job, in one transaction."""
        with conn.transaction():
            conn.execute(sql.query("schedule_run_lock_timeout"))
            claimed = conn.execute(
                sql.query("schedule_advance"),
                {
                    "name": name,
                    "expected": expected,
                    "next_run_at": following,
                    "scheduled_at": scheduled_at,
                },
            ).fetchone()
            if claimed is None:
                return  # another dispatcher enqueued it, or the schedule changed meanwhile
            task, queue_name, args = claimed
            try:
                with conn.transaction():
                    job_id, _ = enqueue_unique(
                        conn,
                        task,
                        args,
                        queue=queue_name,
                        unique_key=run_key(name, scheduled_at),
                    )
            except InvalidJob as exc:
                # The run is skipped (next_run_at moved on): a refused job would be refused again.
                conn.execute(sql.query("schedule_set_error"), {"name": name, "error": str(exc)})
                log_event(log, "schedule_refused", logging.ERROR, schedule=name, error=exc)
                return
            conn.execute(sql.query("schedule_set_job"), {"name": name, "job_id": job_id})
        log_event(
            log,
            "schedule_enqueued",
            schedule=name,
            job=job_id,
            scheduled_at=scheduled_at.isoformat(),
            late_s=round((db_now - scheduled_at).total_seconds(), 3),
            missed_since=expected.isoformat() if expected < scheduled_at else None,
        )
