"""The dispatcher: LISTEN → debounce → read the queues → scale up through the formation backend.

Light by design (it runs on the always-on dyno): one direct connection used for LISTEN, the
leadership lock and its queries; no busy loop. Only one dispatcher acts at a time: it holds a
session advisory lock; others wait as standbys, trying the lock every second, and take over
when the leader's session ends. It reconciles on every (re)connect, on notifications (at once,
then at most once per debounce period, so a burst of inserts makes a few decisions, not one
per row) and on a timer as a safety net, which also rescues jobs whose lease expired.

The enqueue trigger notifies a queue only while a session waits on it (pgdyno/sleepers.py,
migration 0011): the dispatcher registers as waiting on its rule queues before it decides, so
the first job of a type at zero wakes it, and stops waiting for the debounce period after a
notified decision, whose end brings a decision of its own (registered again first): no job is
missed, and a stream of enqueues pays for about one notifying commit per debounce period.

Decisions never wait for a type's lock (a worker may be scaling it down): a type whose row is
locked, or whose API calls are held back (a Retry-After, a backoff after failures), is tried
again at the time the Scaler names, while the other types are decided at once. On its timer it
also warns about rule queues that no worker of their type serves (their jobs would wait, and
keep the type up), from the workers registry, and prunes the registry.

It reads time and waits through a `Clock`, so its tests drive the debounce and the standby's
retries turn by turn (tests/integration/test_dispatcher_loop.py).
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg

from pgdyno import db, queue, registry, rescue, signals, sleepers, sql
from pgdyno.clock import SYSTEM_CLOCK, Clock, Wakeup
from pgdyno.config import Settings
from pgdyno.logfmt import log_event
from pgdyno.migrate import require_migrated
from pgdyno.scaling import policy as scaling
from pgdyno.scaling.formation.base import FormationBackend
from pgdyno.scaling.policy import Rule, TypePolicy
from pgdyno.scaling.scaler import Scaler
from pgdyno.scaling.state import record_rules, unserved
from pgdyno.schedules.runner import ScheduleRunner
from pgdyno.web.sampler import Sampler

log = logging.getLogger(__name__)

LEADER_LOCK_KEY = 0x706764796E6F02
STANDBY_RETRY_S = 1.0
#: A warning about unserved rule queues is repeated this often while it stands.
WARN_AGAIN_S = 600.0
#: Seconds until a registration that waited in vain for a slow commit is tried again.
WAIT_RETRY_S = 0.1


@dataclass
class Leading:
    """The acting dispatcher's timers (seconds on its clock) and whether jobs were notified."""

    #: The next safety-net reconcile.
    next_tick: float
    #: The end of the debounce period after the last notified decision.
    quiet_until: float = 0.0
    #: Notifications arrived that no decision has answered yet.
    pending: bool = False
    #: Types to decide again, with when (the lock was held, or API calls are held back) and
    #: whether that decision re-reads the formation.
    retries: dict[str, tuple[float, bool]] = field(default_factory=dict)
    #: Registered as waiting on the rule queues (pgdyno/sleepers.py): their enqueuers notify.
    waiting: bool = False
    #: A decision owed at this time: the dispatcher stopped waiting on the rule queues after a
    #: notified decision (their enqueuers then do not notify it), or its registration waited in
    #: vain for a slow commit. The owed decision registers again first.
    owed_at: float | None = None


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
        #: Per type, the unserved rule queues last warned about, and when.
        self._unserved: dict[str, tuple[list[str], float]] = {}

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
        conn.execute(sql.query("formations_clear_backoff"), {})
        db.listen(conn)
        self.schedules.start(conn)  # schedules: LISTEN pgdyno_control, sync @periodic ones
        leading = Leading(next_tick=self._clock.now() + self.settings.reconcile_interval)
        trigger = "reconnect" if self._has_led else "startup"
        self._wait_for_jobs(conn, leading)
        self._reconcile(conn, leading, trigger, rescue=True, refresh=True)
        self._has_led = True
        return leading

    def _lead_step(self, conn: psycopg.Connection, leading: Leading) -> None:
        """Decide if a notification, a retry or the timer calls for it, else wait for one."""
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
        due = [name for name, (at, _) in leading.retries.items() if at <= now]
        if now >= leading.next_tick:
            # The safety net; it does not start a debounce period, so the next
            # notification is still acted on at once.
            self._reconcile(conn, leading, "timer", rescue=True)
            self._check_workers(conn)
            leading.next_tick = now + self.settings.reconcile_interval
            leading.pending = False
        elif leading.pending and now >= leading.quiet_until:
            self._reconcile(conn, leading, "jobs enqueued")
            leading.pending = False
            leading.quiet_until = now + self.settings.debounce
            # Until the debounce period ends, more jobs change nothing: the rule queues'
            # enqueuers stop notifying (a notifying commit is serialised with every other),
            # and the decision at its end sees what they enqueued.
            if leading.waiting:
                sleepers.stop_waiting(conn)
                leading.waiting = False
            leading.owed_at = leading.quiet_until
        elif leading.owed_at is not None and now >= leading.owed_at:
            self._wait_for_jobs(conn, leading)
            self._reconcile(conn, leading, "jobs enqueued")
        elif due:
            self._reconcile(conn, leading, "retry", only=due)
        else:
            deadline = min([leading.next_tick, *(at for at, _ in leading.retries.values())])
            if leading.pending:
                deadline = min(deadline, leading.quiet_until)
            if leading.owed_at is not None:
                deadline = min(deadline, leading.owed_at)
            if self.schedules.wake_at is not None:  # the next scheduled run
                deadline = min(deadline, self.schedules.wake_at)
            self._wakeup.wait([conn.pgconn.socket], max(0.0, deadline - now))

    def _wait_for_jobs(self, conn: psycopg.Connection, leading: Leading) -> None:
        """Register as waiting on the rule queues, before a decision reads them: a job
        enqueued after it notifies, one before it is read by that decision. Unsettled (a
        commit slower than sleepers.WAIT_S), the decision is owed again shortly."""
        leading.owed_at = None
        if not self._queues:
            return
        settled = sleepers.wait_for_jobs(conn, holder=self.actor, queues=sorted(self._queues))
        leading.waiting = True
        if not settled:
            leading.owed_at = self._clock.now() + WAIT_RETRY_S

    # --- decisions -------------------------------------------------------------------------------

    def _reconcile(
        self,
        conn: psycopg.Connection,
        leading: Leading,
        trigger: str,
        rescue: bool = False,
        refresh: bool = False,
        only: list[str] | None = None,
    ) -> None:
        """One decision round for every scaled type, or the types in `only` (refresh: re-read
        the formations). A type that must wait is scheduled in `leading.retries`."""
        if rescue:
            _rescue(conn)
        for policy in self.policies.values():
            if only is not None and policy.process_type not in only:
                continue
            self._decide(conn, leading, policy, trigger, refresh)
        self.sampler.tick(conn)

    def _decide(
        self,
        conn: psycopg.Connection,
        leading: Leading,
        policy: TypePolicy,
        trigger: str,
        refresh: bool,
    ) -> None:
        name = policy.process_type
        refresh = refresh or leading.retries.get(name, (0.0, False))[1]
        outcome = self.scaler.scale_up(conn, policy, trigger, refresh=refresh, wait=False)
        if outcome.retry_in is not None:
            # A refresh that did not happen (the row was locked) is still owed.
            leading.retries[name] = (self._clock.now() + outcome.retry_in, refresh)
        else:
            leading.retries.pop(name, None)
        log_event(
            log,
            "reconcile",
            logging.DEBUG,
            type=name,
            trigger=trigger,
            action="scale_up" if outcome.decision else "none",
            wait=outcome.wait or None,
            retry_in_s=None if outcome.retry_in is None else round(outcome.retry_in, 2),
        )

    def _check_workers(self, conn: psycopg.Connection) -> None:
        """Warn about rule queues no worker of their type serves; prune the registries."""
        registry.prune(conn)
        sleepers.prune(conn)
        now = self._clock.now()
        for name, policy in self.policies.items():
            served, live = registry.served_queues(conn, name)
            missing = unserved(policy, served)
            warned, at = self._unserved.get(name, ([], 0.0))
            if missing and (missing != warned or now - at >= WARN_AGAIN_S):
                log_event(
                    log,
                    "rule_queues_unserved",
                    logging.WARNING,
                    type=name,
                    queues=",".join(missing),
                    served=",".join(served),
                    live_workers=live,
                    msg=f"no {name} worker serves these --scale queues: their jobs wait (and keep "
                    f"{name} up) until one does; add --queue to its command or fix the rule",
                )
                self._unserved[name] = (missing, now)
            elif not missing and warned:
                log_event(log, "rule_queues_served", type=name, queues=",".join(warned))
                self._unserved.pop(name, None)


def _rescue(conn: psycopg.Connection) -> None:
    """Rescue expired leases; a lost race with a worker's own rescue is tried again."""
    rescue.rescue_expired(conn, lambda c: db.retry_on_conflict(lambda: queue.rescue_expired(c)))
