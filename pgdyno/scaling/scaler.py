"""Applies scaling decisions under the per-process-type row lock: the only code that scales.

The dispatcher (scale up) and the workers (scale to zero) both go through Scaler. Each
decision runs in one transaction that locks the type's row in pgdyno.formations, reads the
queues, calls the formation backend and records the outcome, so decisions for a type never
interleave. Why no job is stranded at zero: a job committed before a worker's emptiness check
is seen by it (no scale-down); one committed after it sends its NOTIFY at commit, and the
dispatcher's decision waits for the worker's lock and then sees both the new job and the
quantity 0, and scales up. The worker also re-checks after its own commit.

`ScalerSignals` are hooks for tests only (River's "test signals"): a test holds a decision at
a chosen point, with the lock held, to prove the order above (tests/integration/test_scaler.py,
tests/acceptance/test_local_platform.py). Production never sets them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg

from pgdyno import sql
from pgdyno.errors import FormationError
from pgdyno.logfmt import log_event
from pgdyno.scaling import policy as scaling
from pgdyno.scaling.formation.base import Formation, FormationBackend
from pgdyno.scaling.policy import Load, TypePolicy
from pgdyno.scaling.state import load_of

log = logging.getLogger(__name__)

#: A type whose jobs have waited this long with dynos supposedly up gets its formation re-read
#: from the platform (heals a manual `heroku ps:scale` or an update that was lost).
REFRESH_AFTER_S = 30.0


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


def describe_load(load: dict[str, Load]) -> str:
    ready = sum(entry.ready for entry in load.values())
    running = sum(entry.running for entry in load.values())
    return f"{ready} ready, {running} running"


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
    ) -> Decision | None:
        """Raise the type's quantity to what its queues need; None when nothing to do.

        refresh=True re-reads the formation from the platform first (a dispatcher that just
        took over cannot trust what was recorded before). wait=False gives up at once when
        another process holds the type's lock (that one decides with the same data).
        """
        with conn.transaction():
            locked = self._lock(conn, policy.process_type, wait)
            if locked is None:
                return None
            quantity, known_age = locked
            load = load_of(conn, policy)
            current = self._current(conn, policy, None if refresh else quantity, known_age, load)
            target = scaling.scale_up_target(policy, load, current)
            if target is None:
                return None
            return self._apply(conn, policy, current, target, f"{trigger}: {describe_load(load)}")

    def scale_to_zero(self, conn: psycopg.Connection, policy: TypePolicy, idle_s: float) -> bool:
        """Scale the type to zero if none of its queues has a job ready or running.

        Returns True when the type is at zero afterwards (scaled now, or already). Never waits
        for the lock: if a dispatcher is deciding for the type, this returns False and the
        worker tries again later. After scaling down it re-checks for a job committed
        meanwhile and scales back up.
        """
        with conn.transaction():
            locked = self._lock(conn, policy.process_type, wait=False)
            if locked is None:
                return False
            quantity, known_age = locked
            load = load_of(conn, policy)
            if not scaling.may_scale_to_zero(policy, load):
                return False
            current = self._current(conn, policy, quantity, known_age, load)
            if current == 0:
                return True
            if self._signals.before_scale_down is not None:
                self._signals.before_scale_down(policy.process_type)
            decision = self._apply(
                conn,
                policy,
                current,
                0,
                f"queues drained ({', '.join(policy.queues)}), idle {idle_s:.1f}s",
            )
        self.scale_up(conn, policy, "job arrived during scale-down", wait=False)
        return decision.ok

    # --- internals -------------------------------------------------------------------------------

    def _lock(
        self, conn: psycopg.Connection, process_type: str, wait: bool = True
    ) -> tuple[int | None, float | None] | None:
        """Lock the type's row: (recorded quantity, its age in s), or None if it is held by
        another process and wait is False."""
        statement = sql.query("formation_lock" if wait else "formation_try_lock")
        conn.execute(sql.query("formation_ensure"), {"process_type": process_type})
        row = conn.execute(statement, {"process_type": process_type}).fetchone()
        return None if row is None else (row[0], row[1])

    def _current(
        self,
        conn: psycopg.Connection,
        policy: TypePolicy,
        quantity: int | None,
        known_age: float | None,
        load: dict[str, Load],
    ) -> int | None:
        """The type's quantity: as last recorded, re-read from the platform when unknown or
        when ready jobs have waited long enough to doubt it."""
        waiting = max(
            (entry.oldest_ready_age_s for entry in load.values() if entry.ready), default=0.0
        )
        doubtful = (
            waiting > REFRESH_AFTER_S and known_age is not None and known_age > REFRESH_AFTER_S
        )
        if quantity is not None and not doubtful:
            return quantity
        try:
            formation = self.backend.get(policy.process_type)
        except FormationError as exc:
            self._record_error(conn, policy.process_type, exc)
            return quantity
        _record_formation(conn, policy.process_type, formation)
        return formation.quantity

    def _apply(
        self,
        conn: psycopg.Connection,
        policy: TypePolicy,
        current: int | None,
        target: int,
        reason: str,
    ) -> Decision:
        started = time.monotonic()
        request_id = None
        try:
            formation = self.backend.scale(policy.process_type, target, policy.dyno_size)
        except FormationError as exc:
            ok, outcome = False, f"error: {exc}"
            self._record_error(conn, policy.process_type, exc)
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
        )
        return Decision(policy.process_type, current, target, reason, ok, outcome)

    def _record_error(
        self, conn: psycopg.Connection, process_type: str, exc: FormationError
    ) -> None:
        conn.execute(
            sql.query("formation_set_error"), {"process_type": process_type, "error": str(exc)}
        )


def _record_formation(conn: psycopg.Connection, process_type: str, formation: Formation) -> None:
    """Record the type's formation as the platform reported it (clears the last error)."""
    conn.execute(
        sql.query("formation_set"),
        {
            "process_type": process_type,
            "quantity": formation.quantity,
            "dyno_size": formation.size,
        },
    )
