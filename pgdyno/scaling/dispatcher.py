"""The dispatcher: LISTEN → debounce → read the queues → scale up through the formation backend.

Light by design (it runs on the always-on dyno): one direct connection used for LISTEN, the
leadership lock and its queries; no busy loop. Only one dispatcher acts at a time: it holds a
session advisory lock; others wait as standbys, trying the lock every second, and take over
when the leader's session ends. It reconciles on every (re)connect, on notifications (at once,
then at most once per debounce period, so a burst of inserts makes a few decisions, not one
per row) and on a timer as a safety net, which also rescues jobs whose lease expired.

It reads time and waits through a `Clock`, so its tests drive the debounce and the standby's
retries turn by turn (tests/integration/test_dispatcher_loop.py).
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass

import psycopg

from pgdyno import db, queue, rescue, signals, sql
from pgdyno.clock import SYSTEM_CLOCK, Clock, Wakeup
from pgdyno.config import Settings
from pgdyno.logfmt import log_event
from pgdyno.migrate import require_migrated
from pgdyno.scaling import policy as scaling
from pgdyno.scaling.formation.base import FormationBackend
from pgdyno.scaling.policy import Rule
from pgdyno.scaling.scaler import Scaler
from pgdyno.scaling.state import record_rules
from pgdyno.schedules.runner import ScheduleRunner
from pgdyno.web.sampler import Sampler

log = logging.getLogger(__name__)

LEADER_LOCK_KEY = 0x706764796E6F02
STANDBY_RETRY_S = 1.0


@dataclass
class Leading:
    """The acting dispatcher's timers (seconds on its clock) and whether jobs were notified."""

    #: The next safety-net reconcile.
    next_tick: float
    #: The end of the debounce period after the last notified decision.
    quiet_until: float = 0.0
    #: Notifications arrived that no decision has answered yet.
    pending: bool = False


class Dispatcher:
    """Scales process types up as jobs arrive in their queues.

    `rules`: the --scale rules; `backend`: the platform's formation API; `clock`: for tests;
    `schedules`: enqueues scheduled runs while leading (default: the table's schedules only).
    """

    def __init__(
        self,
        settings: Settings,
        rules: list[Rule],
        backend: FormationBackend,
        *,
        clock: Clock = SYSTEM_CLOCK,
        schedules: ScheduleRunner | None = None,
    ) -> None:
        self.settings = settings
        self.rules = rules
        self.policies = scaling.policies(rules)
        self.actor = f"dispatcher {settings.dyno or socket.gethostname()}"
        self.scaler = Scaler(backend, self.actor)
        self._queues = {queue_name for p in self.policies.values() for queue_name in p.queues}
        self._dsn = settings.require_database_url()
        self._clock = clock
        self._stopping = threading.Event()
        self._wakeup = Wakeup(clock)
        self._reconnect = db.Reconnect(base=0.2, cap=5.0, pause=self._pause, actor=self.actor)
        self._has_led = False
        self.sampler = Sampler()  # the dashboard's timeline samples; never raises
        self.schedules = schedules or ScheduleRunner(clock)

    def stop(self) -> None:
        """Stop leading (or waiting to lead) and return from run(); safe from any thread."""
        self._stopping.set()
        self._wakeup.poke()

    def install_signal_handlers(self) -> Callable[[], None]:
        """SIGTERM/SIGINT stop the dispatcher. Main thread only. Returns a function that puts
        the previous handlers back."""

        def handle(signum: signal.Signals) -> None:
            log_event(log, "shutdown_requested", signal=signum.name, actor=self.actor)
            self.stop()

        return signals.install(handle)

    def run(self) -> int:
        """Serve until stopped; survives Postgres restarts and API failures. Returns 0."""
        log_event(
            log,
            "dispatcher_started",
            actor=self.actor,
            rules=len(self.rules),
            types=",".join(sorted(self.policies)),
        )
        while not self._stopping.is_set():
            conn = self._reconnect.connect(self._connect, self._stopping.is_set)
            if conn is None:
                break
            self._reconnect.worked()
            try:
                if self._wait_for_leadership(conn):
                    self._lead(conn)
            except psycopg.OperationalError as exc:
                self._reconnect.lost(exc)
            finally:
                conn.close()
        log_event(log, "dispatcher_stopped", actor=self.actor)
        return 0

    def _connect(self) -> psycopg.Connection:
        conn = db.connect(self._dsn, application_name="pgdyno dispatcher")
        try:
            require_migrated(conn)  # before the release phase ran: wait, retry
        except BaseException:
            conn.close()
            raise
        return conn

    def _pause(self, seconds: float) -> None:
        """Wait `seconds`, or less if stop() is called meanwhile."""
        self._wakeup.wait([], seconds)

    # --- leadership ------------------------------------------------------------------------------

    def _try_lead(self, conn: psycopg.Connection) -> bool:
        """One try of the leader lock (a session lock: it is ours until `conn` closes)."""
        row = conn.execute(sql.query("leader_try_lock"), {"key": LEADER_LOCK_KEY}).fetchone()
        return bool(row and row[0])

    def _wait_for_leadership(self, conn: psycopg.Connection) -> bool:
        """Try the lock until it is ours (True) or we are stopped (False)."""
        first = True
        while not self._stopping.is_set():
            if self._try_lead(conn):
                log_event(log, "dispatcher_leading", actor=self.actor)
                return True
            if first:
                log_event(
                    log,
                    "dispatcher_standby",
                    actor=self.actor,
                    msg="another dispatcher is acting; taking over if it stops",
                )
                first = False
            self._pause(STANDBY_RETRY_S)
        return False

    def _lead(self, conn: psycopg.Connection) -> None:
        leading = self._start_leading(conn)
        while not self._stopping.is_set():
            self._lead_step(conn, leading)

    def _start_leading(self, conn: psycopg.Connection) -> Leading:
        """Record the rules, LISTEN, and catch up on what happened while no one led."""
        record_rules(conn, self.rules)
        db.listen(conn)
        self.schedules.start(conn)  # schedules: LISTEN pgdyno_control, sync @periodic ones
        self._reconcile(
            conn, "reconnect" if self._has_led else "startup", rescue=True, refresh=True
        )
        self._has_led = True
        return Leading(next_tick=self._clock.now() + self.settings.reconcile_interval)

    def _lead_step(self, conn: psycopg.Connection, leading: Leading) -> None:
        """Decide if a notification or the timer calls for it, else wait for one of them."""
        # Notifications may also have arrived while this connection ran a decision's
        # queries (psycopg keeps those aside): drain before deciding to wait.
        payloads = db.drain_notifications(conn)
        if any(payload in self._queues for payload in payloads):
            leading.pending = True
        self.schedules.notified(payloads)
        now = self._clock.now()
        if self.schedules.step(conn, now):
            # A scheduled run was due (or a schedule changed): its job's NOTIFY, on this
            # connection, makes the next step scale up for it.
            return
        if now >= leading.next_tick:
            # The safety net; it does not start a debounce period, so the next
            # notification is still acted on at once.
            self._reconcile(conn, "timer", rescue=True)
            leading.next_tick = now + self.settings.reconcile_interval
            leading.pending = False
        elif leading.pending and now >= leading.quiet_until:
            self._reconcile(conn, "jobs enqueued")
            leading.pending = False
            leading.quiet_until = now + self.settings.debounce
        else:
            deadline = leading.next_tick
            if leading.pending:
                deadline = min(deadline, leading.quiet_until)
            if self.schedules.wake_at is not None:  # the next scheduled run
                deadline = min(deadline, self.schedules.wake_at)
            self._wakeup.wait([conn.pgconn.socket], max(0.0, deadline - now))

    # --- decisions -------------------------------------------------------------------------------

    def _reconcile(
        self, conn: psycopg.Connection, trigger: str, rescue: bool = False, refresh: bool = False
    ) -> None:
        """One decision round for every scaled type (refresh: re-read the formations)."""
        if rescue:
            _rescue(conn)
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


def _rescue(conn: psycopg.Connection) -> None:
    """Rescue expired leases; a lost race with a worker's own rescue is tried again."""
    rescue.rescue_expired(conn, lambda c: db.retry_on_conflict(lambda: queue.rescue_expired(c)))
