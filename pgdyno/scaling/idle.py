"""A worker scales its own process type to zero once its queues are drained and it lingered.

Wired into the worker as its idle callback. The decision itself (lock, check, PATCH, re-check)
is Scaler.scale_to_zero; this module only reads the type's rule and times the linger.
"""

from __future__ import annotations

import logging

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


class ScaleDownWhenIdle:
    """The worker's idle callback: after the rule's linger, scale the type to zero."""

    def __init__(self, process_type: str, scaler: Scaler) -> None:
        self.process_type = process_type
        self.scaler = scaler
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
        if self.scaler.scale_to_zero(conn, policy, idle_s):
            log_event(
                log,
                "scaled_to_zero",
                type=self.process_type,
                msg="waiting for the platform's SIGTERM",
            )
            return None
        return RECHECK_S


def from_settings(settings: Settings, actor: str) -> ScaleDownWhenIdle | None:
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
    return ScaleDownWhenIdle(process_type, Scaler(backend, actor))
