"""Claim, finish, fail, release, rescue, inspect: the job statements of workers, dispatchers and
the CLI (the client side, enqueue, is pgdyno/enqueue.py, whose names are re-exported here).

Every statement comes from sql/queue.sql by name, with bound parameters; functions take the
caller's connection.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any, NamedTuple

import psycopg
from psycopg.types.json import Jsonb

from pgdyno import sql
from pgdyno.db import retry_on_conflict

# The client side (pgdyno/enqueue.py), reachable here too: queue.enqueue(...) as before.
from pgdyno.enqueue import JobSpec as JobSpec
from pgdyno.enqueue import enqueue as enqueue
from pgdyno.enqueue import enqueue_many as enqueue_many
from pgdyno.enqueue import enqueue_unique as enqueue_unique
from pgdyno.errors import InvalidJobState, JobNotFound
from pgdyno.logfmt import redact

# The worker loop's statements come from this module (worker/session.py's JobQueue): the
# sleepers registry's two among them.
from pgdyno.sleepers import stop_waiting as stop_waiting
from pgdyno.sleepers import wait_for_jobs as wait_for_jobs

STATUSES = ("ready", "running", "done", "failed", "cancelled")
FINISHED = ("done", "failed", "cancelled")


#: The longest last_error kept in a job's row (characters): errors are read back by clients.
MAX_ERROR_CHARS = 4000


class ClaimedJob(NamedTuple):
    id: int
    queue: str
    task: str
    args: dict[str, Any]
    #: The attempt this claim started (1 for the first run): the fencing token of every write.
    attempts: int
    max_attempts: int
    #: Seconds one attempt may run (the job's `timeout` column); None: the task's default.
    timeout: float | None = None
    #: Why the job's args could not be decoded (args is then {}): the job fails alone, without
    #: retry (worker/executor.py). None for every job a client could enqueue.
    args_error: str | None = None


class Finished(NamedTuple):
    """A job the worker reports done: its attempt (None: whichever the worker holds), its
    result as JSON text (None for no result) and its process's peak memory (process pool)."""

    id: int
    attempt: int | None
    result: str | None
    peak_rss_bytes: int | None = None


class Claimed(list[ClaimedJob]):
    """The jobs a complete_and_claim claimed; `refused` lists the reported done jobs whose
    completion was not recorded because this worker no longer held that attempt."""

    def __init__(self, jobs: Iterable[ClaimedJob] = (), refused: Iterable[int] = ()) -> None:
        super().__init__(jobs)
        self.refused = list(refused)


# --- worker side -----------------------------------------------------------------------------


def setup_worker_session(conn: psycopg.Connection) -> None:
    """Session settings for a worker's work connection (see worker_session_setup)."""
    conn.execute(sql.query("worker_session_setup"))


def complete_and_claim(
    conn: psycopg.Connection,
    *,
    worker: str,
    queues: Sequence[str],
    limit: int,
    lease: float,
    done: Sequence[Finished | tuple[int, str | None]] = (),
) -> Claimed:
    """Mark `done` jobs done and claim up to `limit` jobs, in one statement.

    `done` holds Finished entries, or (job id, result as JSON text or None) pairs, which
    complete whichever attempt the worker holds. A done job this worker no longer holds (at
    that attempt) is not recorded: its id is in the returned list's `refused`.
    """
    reported = [Finished(job[0], None, job[1]) if len(job) == 2 else job for job in done]
    attempts = {job.attempt for job in reported}
    results = [job.result for job in reported]
    peaks = [job.peak_rss_bytes for job in reported]
    # The usual batch (first attempts, no result, thread pool) sends one attempt and no array
    # but the ids: the statement then skips the lookups (and psycopg dumps less).
    uniform = len(attempts) == 1
    params = {
        # As an array literal: psycopg dumps a list of ints in Python, ~3 µs an element (a
        # tenth of the worker's time per job in a drain); the ids are ours, integers.
        "done_ids": "{" + ",".join([str(job.id) for job in reported]) + "}",
        "done_attempt": next(iter(attempts)) if uniform else None,
        "done_attempts": None if uniform else [job.attempt for job in reported],
        "done_results": results if any(r is not None for r in results) else None,
        "done_peaks": peaks if any(p is not None for p in peaks) else None,
        "queues": text_array(tuple(queues)),
        "limit": limit,
        "worker": worker,
        "lease": timedelta(seconds=lease),
    }
    rows = conn.execute(complete_and_claim_text(), params, prepare=True).fetchall()
    claimed = Claimed()
    add = claimed.append
    new = tuple.__new__  # ClaimedJob(...) runs a generated __new__: twice the cost, per job
    for kind, job_id, queue, task, args, attempts, max_attempts, timeout in rows:
        if kind != "claimed":
            claimed.refused.append(job_id)
        elif args == "{}":  # the usual args (none): no decoding
            add(new(ClaimedJob, (job_id, queue, task, {}, attempts, max_attempts, timeout, None)))
        else:
            add(_claimed(job_id, queue, task, args, attempts, max_attempts, timeout))
    return claimed


@functools.lru_cache(maxsize=64)
def text_array(values: tuple[str, ...]) -> str:
    """`values` as a text[] literal (`{"a","b"}`: each element quoted, `"` and `\\` escaped),
    for a parameter the statement casts to text[]: a worker's queues, the same at every claim,
    built once (psycopg's list dumping costs the claim ~15 µs of the loop's CPU a statement)."""
    quoted = ['"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"' for value in values]
    return "{" + ",".join(quoted) + "}"


@functools.cache
def complete_and_claim_text() -> bytes:
    """job_complete_and_claim without its comment lines, encoded once: psycopg converts a
    query's placeholders at every execution, and caches the conversion only for queries of at
    most 4096 bytes (psycopg._queries.MAX_CACHED_STATEMENT_LENGTH), which the commented
    statement is not (~50 µs a statement; tests/integration/test_claim_plan.py checks the
    size)."""
    text = sql.query("job_complete_and_claim")
    kept = [line for line in text.splitlines() if not line.lstrip().startswith("--")]
    return "\n".join(kept).encode()


def _claimed(
    job_id: int,
    queue: str,
    task: str,
    args: str,
    attempts: int,
    max_attempts: int,
    timeout: float | None,
) -> ClaimedJob:
    """A claimed job with its args (JSON text) decoded; args that Python cannot decode (nested
    too deep, an integer of thousands of digits) or that are not an object make the job carry
    an args_error instead, never an exception that would stop the worker."""
    if args == "{}":  # the usual args (none): no decoding (a fifth of the loop's time a job)
        return ClaimedJob(job_id, queue, task, {}, attempts, max_attempts, timeout)
    try:
        decoded = json.loads(args)
    except (ValueError, RecursionError) as exc:
        reason = str(exc).splitlines()[0][:200] if str(exc) else ""
        error = f"InvalidArgs: the job's args cannot be decoded: {type(exc).__name__}: {reason}"
        return ClaimedJob(job_id, queue, task, {}, attempts, max_attempts, timeout, error)
    if not isinstance(decoded, dict):
        error = f"InvalidArgs: the job's args are a JSON {type(decoded).__name__}, not an object"
        return ClaimedJob(job_id, queue, task, {}, attempts, max_attempts, timeout, error)
    return ClaimedJob(job_id, queue, task, decoded, attempts, max_attempts, timeout)


def fail(
    conn: psycopg.Connection,
    *,
    worker: str,
    job_id: int,
    error: str,
    retry_in: float | None,
    attempt: int | None = None,
    peak_rss_bytes: int | None = None,
) -> str | None:
    """Record a failed attempt; returns the job's new status, None when the write was refused
    (this worker no longer holds the job, or not attempt `attempt`; None: any attempt).

    `error` is cut to MAX_ERROR_CHARS and stripped of URL credentials and passwords: the row
    is read back by clients and shown in pages."""
    error = redact(error)
    if len(error) > MAX_ERROR_CHARS:
        error = error[: MAX_ERROR_CHARS - 20] + " ... (error cut)"
    row = conn.execute(
        sql.query("job_fail"),
        {
            "id": job_id,
            "worker": worker,
            "attempt": attempt,
            "error": error,
            "retry_in": None if retry_in is None else timedelta(seconds=retry_in),
            "peak": peak_rss_bytes,
        },
    ).fetchone()
    return row[0] if row else None


def heartbeat(
    conn: psycopg.Connection,
    *,
    worker: str,
    ids: Sequence[int],
    lease: float,
    attempts: Sequence[int] | None = None,
) -> set[int]:
    """Renew the leases; returns the ids this worker still holds.

    With `attempts` (the attempt of each id, in order), only those attempts are renewed, and an
    attempt rescued meanwhile but not claimed again is taken back (see job_heartbeat)."""
    rows = conn.execute(
        sql.query("job_heartbeat"),
        {
            "ids": list(ids),
            "attempts": None if attempts is None else list(attempts),
            "worker": worker,
            "lease": timedelta(seconds=lease),
        },
    ).fetchall()
    return {row[0] for row in rows}


def set_progress(
    conn: psycopg.Connection,
    *,
    worker: str,
    job_id: int,
    progress: Mapping[str, Any] | str,
    attempt: int | None = None,
) -> bool:
    """Store a running job's progress (a mapping, or JSON text); False when refused (this
    worker no longer holds the job, or not attempt `attempt`)."""
    text = progress if isinstance(progress, str) else Jsonb(dict(progress))
    row = conn.execute(
        sql.query("job_set_progress"),
        {"id": job_id, "worker": worker, "attempt": attempt, "progress": text},
    ).fetchone()
    return row is not None


def release(
    conn: psycopg.Connection, *, worker: str, ids: Sequence[int] | None, keep: Sequence[int] = ()
) -> list[int]:
    """Hand running jobs back to the queue without counting the attempt; returns their ids.

    ids=None hands back every job the worker holds except `keep` (after a lost connection).
    """
    rows = conn.execute(
        sql.query("job_release"),
        {
            "ids": None if ids is None else list(ids),
            "keep": list(keep),
            "worker": worker,
        },
    ).fetchall()
    return [row[0] for row in rows]


def rescue_expired(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Put jobs whose lease expired back to ready (or failed on their last attempt)."""
    rows = conn.execute(sql.query("job_rescue_expired"), {}).fetchall()
    return [{"id": r[0], "queue": r[1], "status": r[2], "error": r[3]} for r in rows]


def vacuum_hot_table(conn: psycopg.Connection) -> None:
    """VACUUM the ready/running partition (autocommit connection: VACUUM cannot run in a
    transaction)."""
    conn.execute(sql.query("hot_table_vacuum"))


def next_due_in(conn: psycopg.Connection, queues: Sequence[str]) -> float | None:
    """Seconds until the earliest waiting job of `queues` is due (None if none waits)."""
    row = conn.execute(sql.query("job_next_due_in"), {"queues": list(queues)}).fetchone()
    return None if row is None or row[0] is None else float(row[0])


# --- inspection and administration ----------------------------------------------------------


def status(conn: psycopg.Connection) -> dict[str, dict[str, Any]]:
    """Per queue: a count per status and the age in seconds of the oldest due ready job."""
    queues: dict[str, dict[str, Any]] = {}
    for queue, state, count, oldest in conn.execute(sql.query("queue_status"), {}).fetchall():
        entry = queues.setdefault(queue, {**dict.fromkeys(STATUSES, 0), "oldest_ready_age_s": None})
        entry[state] = int(count)
        if oldest is not None and math.isfinite(float(oldest)):  # JSON has no Infinity
            entry["oldest_ready_age_s"] = round(max(float(oldest), 0.0), 3)
    return queues


def get_job(conn: psycopg.Connection, job_id: int) -> dict[str, Any]:
    cur = conn.cursor(row_factory=psycopg.rows.dict_row)
    row = cur.execute(sql.query("job_get"), {"id": job_id}).fetchone()
    if row is None:
        raise JobNotFound(f"no job with id {job_id} (finished jobs are removed by `pgdyno prune`)")
    return row


def list_jobs(
    conn: psycopg.Connection,
    *,
    queue: str | None = None,
    status: str | None = None,
    limit: int = 20,
) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=psycopg.rows.dict_row)
    return cur.execute(
        sql.query("job_list"), {"queue": queue, "status": status, "limit": limit}
    ).fetchall()


def retry_job(conn: psycopg.Connection, job_id: int) -> None:
    """Run a failed or cancelled job again, with a fresh attempt budget."""
    if not conn.execute(sql.query("job_retry"), {"id": job_id}).fetchall():
        state = get_job(conn, job_id)["status"]
        raise InvalidJobState(
            f"job {job_id} is {state}: only failed or cancelled jobs can be retried"
        )


def cancel_job(conn: psycopg.Connection, job_id: int) -> None:
    """Cancel a job that has not started yet."""
    cancelled = retry_on_conflict(
        lambda: conn.execute(sql.query("job_cancel"), {"id": job_id}).fetchall()
    )
    if not cancelled:
        state = get_job(conn, job_id)["status"]
        why = (
            "it is running; stop its worker or let it finish"
            if state == "running"
            else "it has already finished"
        )
        raise InvalidJobState(f"job {job_id} is {state} and cannot be cancelled: {why}")


def prune(conn: psycopg.Connection, older_than: float) -> int:
    """Delete finished jobs that finished more than `older_than` seconds ago; returns the count."""
    cur = conn.execute(sql.query("job_prune"), {"older_than": timedelta(seconds=older_than)})
    return cur.rowcount
