"""Rescue jobs whose lease expired (their worker was killed or lost Postgres): back to ready, or
failed on their last attempt. Run by every worker's fallback poll and by the dispatcher's
reconcile, and logged the same way by both: one `job_rescued` line per job."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import psycopg

from pgdyno import queue
from pgdyno.logfmt import log_event

log = logging.getLogger(__name__)

#: The statement that rescues: pgdyno.queue.rescue_expired, or a test's fake.
Rescue = Callable[[psycopg.Connection], list[dict[str, Any]]]


def rescue_expired(conn: psycopg.Connection, rescue: Rescue = queue.rescue_expired) -> int:
    """Rescue the expired jobs on `conn`, log each one; returns how many were rescued."""
    jobs = rescue(conn)
    for job in jobs:
        log_event(
            log,
            "job_rescued",
            logging.WARNING,
            job=job["id"],
            queue=job["queue"],
            status=job["status"],
            error=job["error"],
        )
    return len(jobs)
