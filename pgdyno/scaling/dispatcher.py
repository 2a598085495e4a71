"""The dispatcher: LISTEN → debounce → read the queues → scale up through the formation backend.

Light by design (it runs on the always-on dyno): one direct connection used for LISTEN, the
leadership lock and its queries; no busy loop. Only one dispatcher acts at a time: it holds a
session advisory lock; others wait as standbys, trying the lock every second, and take over
when the leader's session ends. It reconciles on every (re)connect, on notifications (at once,
then at most once per debounce period, so a burst of inserts makes a few decisions, not one
per row) and on a timer as a safety net, which also rescues jobs whose lease expired.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import signal
import socket
import threading
import time
from types import FrameType

import psycopg

from pgdyno import backoff, db, queue, sql
from pgdyno.config import Settings
from pgdyno.logfmt import log_event
from pgdyno.migrate import require_migrated
from pgdyno.scaling import policy as scaling
from pgdyno.scaling.formation.base import FormationBackend
from pgdyno.scaling.policy import Rule
from pgdyno.scaling.scaler import Scaler
from pgdyno.scaling.state import record_rules
from pgdyno.web.sampler import Sampler

log = logging.getLogger(__name__)

LEADER_LOCK_KEY = 0x706764796E6F02
STANDBY_RETRY_S = 1.0


class Dispatcher:
    """Scales process types up as jobs arrive in their queues."""

    def __init__(self, settings: Settings, rules: list[Rule], backend: FormationBackend) -> None:
        self.settings = settings
        self.rules = rules
        self.policies = scaling.policies(rules)
        self.actor = f"dispatcher {settings.dyno or socket.gethostname()}"
        self.scaler = Scaler(backend, self.actor)
        self._queues = {queue_name for p in self.policies.values() for queue_name in p.queues}
        self._dsn = settings.require_database_url()
        self._stop = threading.Event()
        self._conn: psycopg.Connection | None = None
        self.decisions = 0  # reconcile rounds, for logs and tests
        self.sampler = Sampler()  # the dashboard's timeline samples; never raises

    def stop(self) -> None:
        self._stop.set()

    def install_signal_handlers(self) -> None:
        def handle(signum: int, _frame: FrameType | None) -> None:
            log_event(
                log, "shutdown_requested", signal=signal.Signals(signum).name, actor=self.actor
            )
            self.stop()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)

    def run(self) -> int:
        """Serve until stopped; survives Postgres restarts and API failures. Returns 0."""
        log_event(
            log,
            "dispatcher_started",
            actor=self.actor,
            rules=len(self.rules),
            types=",".join(sorted(self.policies)),
        )
        failures = 0
        while not self._stop.is_set():
            try:
                self._conn = db.connect(self._dsn, application_name="pgdyno dispatcher")
                require_migrated(self._conn)  # before the release phase ran: wait, retry
                failures = 0
                if self._wait_for_leadership():
                    self._lead()
            except (psycopg.OperationalError, db.DatabaseUnavailable) as exc:
                failures += 1
                pause = backoff.delay(failures, 0.2, 5.0)
                log_event(
                    log,
                    "db_unavailable",
                    logging.WARNING,
                    actor=self.actor,
                    attempt=failures,
                    retry_in_s=round(pause, 2),
                    error=db.first_line(exc),
                )
                self._stop.wait(pause)
            finally:
                self._close()
        log_event(log, "dispatcher_stopped", actor=self.actor)
        return 0

    # --- leadership ------------------------------------------------------------------------------

    def _wait_for_leadership(self) -> bool:
        """Try the lock until it is ours (True) or we are stopped (False)."""
        assert self._conn is not None
        for attempt in itertools.count():
            row = self._conn.execute(
                sql.query("leader_try_lock"), {"key": LEADER_LOCK_KEY}
            ).fetchone()
            if row and row[0]:
                log_event(log, "dispatcher_leading", actor=self.actor)
                return True
            if attempt == 0:
                log_event(
                    log,
                    "dispatcher_standby",
                    actor=self.actor,
                    msg="another dispatcher is acting; taking over if it stops",
                )
            if self._stop.wait(STANDBY_RETRY_S):
                return False
        return False

    def _lead(self) -> None:
        conn = self._conn
        assert conn is not None
        record_rules(conn, self.rules)
        db.listen(conn)
        self._reconcile(
            "startup" if self.decisions == 0 else "reconnect", rescue=True, refresh=True
        )
        next_tick = time.monotonic() + self.settings.reconcile_interval
        quiet_until = 0.0  # end of the debounce period after the last decision
        pending = False
        while not self._stop.is_set():
            # Notifications may also have arrived while this connection ran a decision's
            # queries (psycopg keeps those aside): drain before deciding to wait.
            if any(payload in self._queues for payload in db.drain_notifications(conn)):
                pending = True
            now = time.monotonic()
            if now >= next_tick:
                # The safety net; it does not start a debounce period, so the next
                # notification is still acted on at once.
                self._reconcile("timer", rescue=True)
                next_tick = now + self.settings.reconcile_interval
                pending = False
            elif pending and now >= quiet_until:
                self._reconcile("jobs enqueued")
                pending = False
                quiet_until = now + self.settings.debounce
            else:
                deadline = min(next_tick, quiet_until) if pending else next_tick
                db.wait_readable([conn.pgconn.socket], max(0.0, deadline - now))

    # --- decisions -------------------------------------------------------------------------------

    def _reconcile(self, trigger: str, rescue: bool = False, refresh: bool = False) -> None:
        """One decision round for every scaled type (refresh: re-read the formations)."""
        conn = self._conn
        assert conn is not None
        self.decisions += 1
        if rescue:
            for job in db.retry_on_conflict(lambda: queue.rescue_expired(conn)):
                log_event(
                    log,
                    "job_rescued",
                    logging.WARNING,
                    job=job["id"],
                    queue=job["queue"],
                    status=job["status"],
                    error=job["error"],
                )
        for policy in self.policies.values():
            decision = self.scaler.scale_up(conn, policy, trigger, refresh=refresh)
            log_event(
                log,
                "reconcile",
                logging.DEBUG,
                type=policy.process_type,
                trigger=trigger,
                action="scale_up" if decision else "none",
            )
        self.sampler.tick(conn)

    def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
