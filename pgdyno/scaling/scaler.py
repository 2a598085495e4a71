"""Applies scaling decisions under the per-process-type row lock: the only code that scales.

The dispatcher (scale up) and the workers (scale to zero) both go through Scaler. Each
decision runs in one transaction that locks the type's row in pgdyno.formations, reads the
queues, calls the formation backend at most once and records the outcome, so decisions for a
type never interleave, and none holds the lock for longer than one API call: a call that fails
records when to try again (formations.not_before: the platform's Retry-After, or a backoff) and
leaves the quantity unknown, and the caller decides again then.

No decision waits for another's lock (SKIP LOCKED): a type's slow call never delays another
type, and the one that finds the row locked is told to try again shortly. Why no job is
stranded at zero: a job committed before a worker's emptiness check is seen by it (no
scale-down). One committed after it sends its NOTIFY at commit; the dispatcher's decision for
it either finds the worker's lock and tries again until it gets the lock, or comes after the
worker's commit: either way it then sees both the new job and the quantity 0, and scales up.
The worker also re-checks after its own commit.

`ScalerSignals` are hooks for tests only (River's "test signals"): a test holds a decision at
a chosen point, with the lock held, to prove the order above (tests/integration/test_scaler.py,
tests/acceptance/test_local_platform.py). Production never sets them.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import psycopg

from pgdyno import backoff, registry, sql
from pgdyno.errors import FormationError, FormationUnavailable
from pgdyno.logfmt import log_event
from pgdyno.scaling import policy as scaling
from pgdyno.scaling.formation.base import Formation, FormationBackend
from pgdyno.scaling.policy import Load, TypePolicy
from pgdyno.scaling.state import load_of_queues

log = logging.getLogger(__name__)

#: A type whose jobs have waited this long with dynos supposedly up gets its formation re-read
#: from the platform (heals a manual `heroku ps:scale` or an update that was lost).
REFRESH_AFTER_S = 30.0
#: Seconds until a decision that found the type's row locked (another process is deciding)
#: tries again.
LOCKED_RETRY_S = 0.25
#: Backoff after a failed call (seconds: first delay, cap), per kind of failure. An unreachable
#: or failing platform is tried again soon; a refusal (401, 403, 404, 422) needs a person, so
#: it is tried rarely and shown as the standing error in `pgdyno status` meanwhile.
UNAVAILABLE_BACKOFF = (0.5, 30.0)
REJECTED_BACKOFF = (10.0, 600.0)


@dataclass
class ScalerSignals:
    """Hooks a test sets to act at a chosen point of a decision; None in production."""

    #: Called with the process type by a scale-to-zero decision that found the queues empty,
    #: while it holds the type's lock, just before its API call.
    before_scale_down: Callable[[str], None] | None = None


#: The signals of Scalers built without their own: a test running pgdyno in a subprocess sets
#: them from a module the worker imports (tests/scale_down_pause.py).
SIGNALS = ScalerSignals()


@dataclass(frozen=True)
class Decision:
    """A scaling decision that was applied (or tried): from, to, why, and how it went."""

    process_type: str
    from_quantity: int | None
    to_quantity: int
    reason: str
    ok: bool
    outcome: str


@dataclass(frozen=True)
class Outcome:
    """What one try at a decision did.

    `decision`: the PATCH it made, if any. `retry_in`: seconds until the caller should try
    again (None: nothing left to do). `wait`: why it did nothing or must try again ("locked",
    "retry_after", "backoff", "busy", "lingering"; "" otherwise). `at_zero`: the type is at
    zero afterwards (scale_to_zero).
    """

    decision: Decision | None = None
    retry_in: float | None = None
    wait: str = ""
    at_zero: bool = False


@dataclass(frozen=True)
class _Locked:
    """The type's row, as locked: the recorded quantity and when the API may be called."""

    quantity: int | None
    known_age_s: float | None
    not_before_s: float | None
    not_before_cause: str | None
    failures: int


def describe_load(load: dict[str, Load]) -> str:
    ready = sum(entry.ready for entry in load.values())
    running = sum(entry.running for entry in load.values())
    return f"{ready} ready, {running} running"


class _Wait(Exception):
    """Ends a decision early: the caller tries again in `retry_in` seconds."""

    def __init__(self, retry_in: float, why: str) -> None:
        super().__init__(why)
        self.outcome = Outcome(retry_in=max(retry_in, 0.0), wait=why)


# --- decisions ---------------------------------------------------------------------------------


class Scaler:
    """Scales process types through `backend`, one locked decision at a time."""

    def __init__(
        self, backend: FormationBackend, actor: str, *, signals: ScalerSignals | None = None
    ) -> None:
        self.backend = backend
        self.actor = actor
        self._signals = signals if signals is not None else SIGNALS

    def scale_up(
        self,
        conn: psycopg.Connection,
        policy: TypePolicy,
        trigger: str,
        refresh: bool = False,
        wait: bool = True,
    ) -> Outcome:
        """Raise the type's quantity to what its queues need.

        refresh=True re-reads the formation from the platform first (a dispatcher that just
        took over cannot trust what was recorded before). wait=False gives up at once when
        another process holds the type's lock (Outcome.wait "locked": try again shortly).
        No API call is made before the type's not_before.
        """
        with conn.transaction():
            try:
                locked = self._lock(conn, policy.process_type, wait)
                load = load_of_queues(conn, policy.queues)
                if scaling.wanted(policy, load) == 0:
                    return Outcome()
                quantity = None if refresh else locked.quantity
                current = self._read(conn, policy.process_type, locked, quantity, load)
                target = scaling.scale_up_target(policy, load, current)
                if target is None:
                    return Outcome()
                return self._apply(
                    conn, policy, locked, current, target, f"{trigger}: {describe_load(load)}"
                )
            except _Wait as stop:  # caught inside: what was recorded is committed
                return stop.outcome

    def scale_to_zero(
        self,
        conn: psycopg.Connection,
        policy: TypePolicy,
        idle_s: float,
        served: Iterable[str] = (),
    ) -> Outcome:
        """Scale the type to zero once it is drained and has lingered.

        Drained: no job ready or running in the rule's queues, in `served` (the calling
        worker's queues) nor in any queue a live worker of the type serves. Lingered: neither
        the caller (idle for `idle_s` seconds) nor any worker of the type ran a job, nor did a
        job of those queues finish, within the rule's linger. Never waits for the lock. After
        scaling down it re-checks for a job committed meanwhile and scales back up.
        Outcome.at_zero tells whether the type is at zero afterwards (now, or already).
        """
        with conn.transaction():
            try:
                locked = self._lock(conn, policy.process_type, wait=False)
                queues = _drained_queues(conn, policy, served)
                load = load_of_queues(conn, queues)
                busy = sorted(name for name, entry in load.items() if entry.ready or entry.running)
                if busy:
                    raise _Wait(math.inf, f"busy: {', '.join(busy)}")
                idle_for = self._idle_for(conn, policy, queues, idle_s)
                if idle_for < policy.linger_s:
                    raise _Wait(policy.linger_s - idle_for, "lingering")
                if locked.quantity == 0:
                    return Outcome(at_zero=True)
                current = self._read(conn, policy.process_type, locked, locked.quantity, load)
                if current == 0:
                    return Outcome(at_zero=True)
                if self._signals.before_scale_down is not None:
                    self._signals.before_scale_down(policy.process_type)
                reason = f"queues drained ({', '.join(queues)}), idle {idle_for:.1f}s"
                outcome = self._apply(conn, policy, locked, current, 0, reason)
            except _Wait as stop:  # caught inside: what was recorded is committed
                return stop.outcome
        self.scale_up(conn, policy, "job arrived during scale-down", wait=False)
        ok = outcome.decision is not None and outcome.decision.ok
        return Outcome(outcome.decision, outcome.retry_in, outcome.wait, at_zero=ok)

    # --- internals -------------------------------------------------------------------------------

    def _lock(self, conn: psycopg.Connection, process_type: str, wait: bool) -> _Locked:
        """Lock the type's row; _Wait("locked") when another process holds it and not `wait`."""
        conn.execute(sql.query("formation_ensure"), {"process_type": process_type})
        statement = sql.query("formation_wait_lock" if wait else "formation_lock")
        row = conn.execute(statement, {"process_type": process_type}).fetchone()
        if row is None:
            raise _Wait(LOCKED_RETRY_S, "locked")
        return _Locked(*row)

    def _idle_for(
        self, conn: psycopg.Connection, policy: TypePolicy, queues: list[str], idle_s: float
    ) -> float:
        """Seconds the whole type has been idle (at most the caller's own idle time)."""
        if policy.linger_s <= 0:
            return idle_s
        row = conn.execute(
            sql.query("type_idle_s"),
            {"process_type": policy.process_type, "queues": queues, "window": policy.linger_s},
        ).fetchone()
        type_idle = row[0] if row and row[0] is not None else math.inf
        return max(0.0, min(idle_s, type_idle))

    def _read(
        self,
        conn: psycopg.Connection,
        process_type: str,
        locked: _Locked,
        quantity: int | None,
        load: dict[str, Load],
    ) -> int:
        """The type's quantity: `quantity` if known and not in doubt, else read from the
        platform (unless a Retry-After or backoff holds calls back: _Wait)."""
        if quantity is not None and not _doubtful(locked, load):
            return quantity
        self._may_call(locked)
        try:
            formation = self.backend.get(process_type)
        except FormationError as exc:
            raise _Wait(*self._record_error(conn, process_type, locked, exc)) from None
        _record_formation(conn, process_type, formation)
        return formation.quantity

    def _may_call(self, locked: _Locked) -> None:
        if locked.not_before_s is not None and locked.not_before_s > 0:
            raise _Wait(locked.not_before_s, locked.not_before_cause or "backoff")

    def _apply(
        self,
        conn: psycopg.Connection,
        policy: TypePolicy,
        locked: _Locked,
        current: int | None,
        target: int,
        reason: str,
    ) -> Outcome:
        self._may_call(locked)
        started = time.monotonic()
        request_id = None
        retry_in: float | None = None
        wait = ""
        try:
            formation = self.backend.scale(policy.process_type, target, policy.dyno_size)
        except FormationError as exc:
            ok, outcome = False, f"error: {exc}"
            retry_in, wait = self._record_error(conn, policy.process_type, locked, exc)
        else:
            ok, outcome, request_id = True, "ok", formation.request_id
            _record_formation(conn, policy.process_type, formation)
        duration_ms = round((time.monotonic() - started) * 1000, 1)
        conn.execute(
            sql.query("scale_event_insert"),
            {
                "process_type": policy.process_type,
                "from_quantity": current,
                "to_quantity": target,
                "reason": reason,
                "actor": self.actor,
                "outcome": outcome,
                "request_id": request_id,
                "duration_ms": duration_ms,
            },
        )
        log_event(
            log,
            "scale",
            logging.INFO if ok else logging.ERROR,
            type=policy.process_type,
            **{"from": current},
            to=target,
            reason=reason,
            actor=self.actor,
            outcome=outcome,
            request_id=request_id,
            duration_ms=duration_ms,
            retry_in_s=None if retry_in is None else round(retry_in, 1),
        )
        decision = Decision(policy.process_type, current, target, reason, ok, outcome)
        return Outcome(decision, retry_in, wait)

    def _record_error(
        self, conn: psycopg.Connection, process_type: str, locked: _Locked, exc: FormationError
    ) -> tuple[float, str]:
        """Record a failed call: the quantity becomes unknown, no call before the platform's
        Retry-After or a backoff. Returns (seconds until the next try, its cause)."""
        failures = locked.failures + 1
        if isinstance(exc, FormationUnavailable) and exc.retry_after is not None:
            retry_in, cause = exc.retry_after, "retry_after"
        elif isinstance(exc, FormationUnavailable):
            retry_in, cause = backoff.delay(failures, *UNAVAILABLE_BACKOFF), "backoff"
        else:
            retry_in, cause = backoff.delay(failures, *REJECTED_BACKOFF), "backoff"
        conn.execute(
            sql.query("formation_set_error"),
            {"process_type": process_type, "error": str(exc), "retry_in": retry_in, "cause": cause},
        )
        log_event(
            log,
            "formation_calls_held",
            logging.WARNING,
            type=process_type,
            cause=cause,
            retry_in_s=round(retry_in, 1),
            failures=failures,
            error=str(exc),
            msg="no formation call for this type before then, by any process",
        )
        return retry_in, cause


def _doubtful(locked: _Locked, load: dict[str, Load]) -> bool:
    """Ready jobs have waited long while the recorded quantity is old: re-read it."""
    waiting = max((entry.oldest_ready_age_s for entry in load.values() if entry.ready), default=0)
    known_age = locked.known_age_s
    return waiting > REFRESH_AFTER_S and known_age is not None and known_age > REFRESH_AFTER_S


def _drained_queues(
    conn: psycopg.Connection, policy: TypePolicy, served: Iterable[str]
) -> list[str]:
    """The queues that must be empty before the type goes to zero: the rule's, the caller's,
    and those of every live worker of the type (the registry)."""
    workers_serve, _live = registry.served_queues(conn, policy.process_type)
    return list(dict.fromkeys([*policy.queues, *served, *workers_serve]))


def _record_formation(conn: psycopg.Connection, process_type: str, formation: Formation) -> None:
    """Record the type's formation as the platform reported it (clears the failure state)."""
    conn.execute(
        sql.query("formation_set"),
        {
            "process_type": process_type,
            "quantity": formation.quantity,
            "dyno_size": formation.size,
        },
    )
