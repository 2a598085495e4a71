"""Cancelling a job, whatever its state: `pgdyno.cancel(conn, id)` and `pgdyno jobs cancel ID`.

A ready job is cancelled at once. A running job gets a cancel request (cancel_requested_at) and
`NOTIFY pgdyno_control, 'cancel <id>'`: the worker running it (pgdyno/worker/cancels.py) tells
the task (`pgdyno.current_job().cancel_requested`, the callbacks of `on_cancel`, which cancel a
report's query on the server) and the job ends `cancelled`, never retried, whatever the task
does next. If that worker is gone, the job ends cancelled when its lease expires.
"""

from __future__ import annotations

from typing import Literal

import psycopg

from pgdyno import queue, sql
from pgdyno.db import retry_on_conflict
from pgdyno.errors import InvalidJobState

#: What `cancel` did: cancelled a job that had not started, or asked a running job to stop.
CancelOutcome = Literal["cancelled", "cancel_requested"]

#: Looks at a job that changed state under the request (claimed, say) this many times.
_TRIES = 5


def cancel(conn: psycopg.Connection, job_id: int) -> CancelOutcome:
    """Cancel job `job_id`: "cancelled" if it had not started (it is cancelled now),
    "cancel_requested" if it runs (it ends cancelled once its worker has stopped it).

    Raises JobNotFound, or InvalidJobState for a job that has already finished. `conn` should be
    in autocommit mode, or the request reaches the worker only when the caller commits.
    """
    for _ in range(_TRIES):
        if retry_on_conflict(
            lambda: conn.execute(sql.query("job_cancel"), {"id": job_id}).fetchall()
        ):
            return "cancelled"
        if retry_on_conflict(
            lambda: conn.execute(sql.query("job_request_cancel"), {"id": job_id}).fetchall()
        ):
            return "cancel_requested"
        state = queue.get_job(conn, job_id)["status"]  # JobNotFound
        if state in queue.FINISHED:
            raise InvalidJobState(f"job {job_id} is {state}: it has already finished")
        # Ready a moment ago and claimed meanwhile (or handed back): look again.
    raise InvalidJobState(f"job {job_id} keeps changing state; try again")
