"""A worker scales its own process type to zero once the type is drained and has lingered.

Wired into the worker as its idle callback. The decision itself (lock, drained check over every
queue the type's workers serve, the type's linger, PATCH, re-check) is Scaler.scale_to_zero;
this module reads the type's rule, skips the decision while the worker itself has not been idle
for the linger, and tells the worker when to call again.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import psycopg

from pgdyno.config import Settings
from pgdyno.errors import ConfigError
from pgdyno.logfmt import log_event
from pgdyno.scaling import policy as scaling
from pgdyno.scaling.formation import FormationBackend, backend_from_settings
from pgdyno.scaling.scaler import Scaler
from pgdyno.scaling.state import recorded_rules

log = logging.getLogger(__name__)

#: How often an idle worker re-checks while other dynos of its type still run jobs, or while
#: no rule names its type yet.
RECHECK_S = 5.0
#: Least seconds between two decisions of one worker (a linger or Retry-After about to end).
MIN_RECHECK_S = 0.1
#: Most seconds between two decisions of an idle worker (a long Retry-After is re-read then;
#: the decision makes no API call before it ends).
MAX_RECHECK_S = 60.0


class ScaleDownWhenIdle:
    """The worker's idle callback: after the rule's linger, scale the type to zero."""

    def __init__(self, process_type: str, scaler: Scaler, queues: Sequence[str] = ()) -> None:
        self.process_type = process_type
        self.scaler = scaler
        #: The worker's own queues: a type is drained only when they are too.
        self.queues = list(queues)
        self._warned = False

    def __call__(self, conn: psycopg.Connection, idle_s: float) -> float | None:
        policy = scaling.policies(recorded_rules(conn)).get(self.process_type)
        if policy is None:
            if not self._warned:
                log_event(
                    log,
                    "scale_down_skipped",
                    logging.WARNING,
                    type=self.process_type,
                    reason="no --scale rule maps a queue to this process type",
                )
                self._warned = True
            return RECHECK_S
        if idle_s < policy.linger_s:
            return policy.linger_s - idle_s
        outcome = self.scaler.scale_to_zero(conn, policy, idle_s, self.queues)
        if outcome.at_zero:
            log_event(
                log,
                "scaled_to_zero",
                type=self.process_type,
                msg="waiting for the platform's SIGTERM",
            )
            return None
        # Busy (or no answer yet): the usual re-check; a linger or a Retry-After ending: then.
        again = outcome.retry_in
        if again is None or math.isinf(again):
            again = RECHECK_S
        again = min(max(again, MIN_RECHECK_S), MAX_RECHECK_S)
        log_event(
            log,
            "scale_down_deferred",
            logging.DEBUG,
            type=self.process_type,
            wait=outcome.wait or None,
            again_s=round(again, 2),
        )
        return again


def from_settings(
    settings: Settings, actor: str, queues: Sequence[str] = ()
) -> ScaleDownWhenIdle | None:
    """The callback for a worker, or None (logged) when it cannot know its type or platform."""
    process_type = settings.own_process_type
    if not process_type:
        log_event(log, "scale_down_disabled", reason="no DYNO or --process-type")
        return None
    try:
        backend: FormationBackend = backend_from_settings(settings)
    except ConfigError as exc:
        log_event(log, "scale_down_disabled", logging.WARNING, type=process_type, reason=str(exc))
        return None
    return ScaleDownWhenIdle(process_type, Scaler(backend, actor), queues)
