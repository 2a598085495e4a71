"""Fencing: the writes the database refused because this worker no longer held the attempt.

Every write about a job (done, failed, heartbeat, progress) names the attempt the worker runs
(sql/queue.sql), and Postgres applies it only while the worker still holds that attempt: a
worker whose lease expired (a stalled loop, an outage) can never record an old attempt over
the new holder's. The worker loop reports each refusal here: one WARNING line each
(`write_refused`, or `lease_lost` when a heartbeat finds a job gone), and a running count
(`refused_total` in each line, `refused_writes` in `worker_stopped`).

`complete_singly` is the loop's fallback when Postgres refuses a batch of finished jobs as a
whole (a result it will not take): it reports them one by one, and fails the ones it refuses.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import psycopg

from pgdyno import db
from pgdyno.logfmt import log_event
from pgdyno.queue import ClaimedJob, Finished
from pgdyno.worker.executor import MAX_ERROR_CHARS
from pgdyno.worker.session import JobQueue
from pgdyno.worker.storable import storable_text

log = logging.getLogger(__name__)


class Fence:
    """Counts and logs the refused writes of worker `worker`."""

    def __init__(self, worker: str) -> None:
        self.worker = worker
        #: Writes the database refused because this worker no longer held the attempt.
        self.refused = 0

    def refused_write(self, kind: str, job_id: int, attempt: int | None = None) -> None:
        """The database refused to record `kind` (complete, fail, progress) for `job_id`."""
        self.refused += 1
        log_event(
            log,
            "write_refused",
            logging.WARNING,
            kind=kind,
            job=job_id,
            attempt=attempt,
            worker=self.worker,
            refused_total=self.refused,
        )

    def lease_lost(self, job: ClaimedJob, *, stopped: bool) -> None:
        """A heartbeat found `job` taken over; `stopped`: its process was killed."""
        self.refused += 1
        log_event(
            log,
            "lease_lost",
            logging.WARNING,
            job=job.id,
            attempt=job.attempts,
            worker=self.worker,
            stopped=stopped,
            refused_total=self.refused,
        )


def complete_singly(
    jobs: JobQueue,
    conn: psycopg.Connection,
    *,
    worker: str,
    queues: Sequence[str],
    lease: float,
    done: Sequence[Finished],
    refused: Callable[[str, int, int | None], None],
) -> None:
    """Report `done` jobs one by one after Postgres refused their batch: a job it refuses
    alone fails with UnstorableResult (no retry: the job ran), the others are done."""
    for finished in done:
        try:
            claimed = jobs.complete_and_claim(
                conn, worker=worker, queues=queues, limit=0, lease=lease, done=[finished]
            )
        except psycopg.errors.DataError as exc:
            error = (
                "UnstorableResult: Postgres refused the job's result: "
                f"{db.first_line(exc)}; return JSON-compatible data"
            )
            state = jobs.fail(
                conn,
                worker=worker,
                job_id=finished.id,
                error=storable_text(error, MAX_ERROR_CHARS),
                retry_in=None,
                attempt=finished.attempt,
            )
            if state is None:
                refused("fail", finished.id, finished.attempt)
            continue
        for job_id in getattr(claimed, "refused", ()):
            refused("complete", job_id, finished.attempt)
