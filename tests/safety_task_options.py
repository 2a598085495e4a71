"""A task declared with options (@pgdyno.task(timeout=...)), for the timeout tests; kept apart
from tests/safety_tasks.py so that module also imports where task options do not exist."""

from __future__ import annotations

import time

from safety_tasks import _record

import pgdyno


@pgdyno.task("safety.sleeps_by_default", timeout=1)
def sleeps_by_default(key: str, seconds: float) -> str:
    """A task whose own timeout is 1 s."""
    _record("start", key)
    time.sleep(seconds)
    _record("done", key)
    return key


@pgdyno.task("safety.isolated", pool="process")
def isolated(key: str) -> int:
    """A task that asks for a process of its own: publishes progress, waits for its gate,
    returns its pid."""
    import os

    from safety_tasks import _wait_for_gate

    _record("start", key)
    pgdyno.current_job().set_progress(step=1)
    _wait_for_gate(key)
    return os.getpid()
