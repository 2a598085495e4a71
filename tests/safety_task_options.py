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
