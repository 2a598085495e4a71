"""Enqueue, claim, finish, fail, release, rescue: the only module that runs job SQL.

Every statement comes from sql/queue.sql by name, with bound parameters. Functions take the
caller's connection, so an enqueue joins the caller's transaction and commits with it.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import psycopg
from psycopg.types.json import Jsonb

from pgdyno import sql
from pgdyno.config import Settings, parse_duration
from pgdyno.db import connect, retry_on_conflict
from pgdyno.errors import ConfigError, InvalidJob, InvalidJobState, JobNotFound
from pgdyno.logfmt import redact

STATUSES = ("ready", "running", "done", "failed", "cancelled")
FINISHED = ("done", "failed", "cancelled")

# What each CHECK constraint means, said the way a user fixes it.
_CONSTRAINT_HINTS = {
    "queue_must_be_a_non_empty_name": "queue must be a non-empty name of at most 128 characters",
    "task_must_be_a_non_empty_name": "task must be a non-empty name of at most 200 characters",
    "queue_must_not_start_or_end_with_whitespace": (
        "queue must not start or end with whitespace (no worker would claim from it)"
    ),
    "task_must_not_start_or_end_with_whitespace": "task must not start or end with whitespace",
    "args_must_be_a_json_object": 'args must be a JSON object, for example {"id": 7}',
    "priority_must_be_between_minus_1000_and_1000": "priority must be between -1000 and 1000",
    "max_attempts_must_be_between_1_and_1000": "max_attempts must be between 1 and 1000",
    "timeout_must_be_between_1_second_and_1_day": (
        "timeout must be from 1 second to 1 day, for example '30 seconds'"
    ),
    # Migration 0009: bounds every role keeps, and what a client role may set.
    "run_at_must_be_between_1970_and_2200": (
        "run_at must be a time from 1970-01-01 to 2200-01-01 UTC (not infinity, not BC)"
    ),
    "times_must_be_between_1970_and_2200": (
        "a job's times must be from 1970-01-01 to 2200-01-01 UTC (not infinity, not BC)"
    ),
    "attempts_must_not_exceed_max_attempts": "attempts must not exceed max_attempts",
    "ready_job_must_have_an_attempt_left": "a ready job must have attempts below max_attempts",
    "queue_must_not_contain_control_characters": (
        "queue must not contain control or invisible characters (tabs, newlines, escapes, "
        "no-break or zero-width spaces, bidirectional marks)"
    ),
    "task_must_not_contain_control_characters": (
        "task must not contain control or invisible characters (tabs, newlines, escapes, "
        "no-break or zero-width spaces, bidirectional marks)"
    ),
    "unique_key_prefixes_schedule_and_report_are_pgdyno_s_own": (
        "unique keys starting 'schedule:' or 'report:' are pgdyno's own (schedule runs, "
        "report run --unique): choose another key"
    ),
    "args_must_be_at_most_1_mb": "args must be at most 1 MB (as jsonb)",
    "args_must_nest_at_most_64_levels": (
        "args must nest at most 64 levels deep (the object itself is the first)"
    ),
    "unique_key_must_be_a_non_empty_key_of_at_most_200_characters": (
        "unique_key must be a non-empty key of at most 200 characters"
    ),
}

#: The longest last_error kept in a job's row (characters): errors are read back by clients.
MAX_ERROR_CHARS = 4000

#: Tries of a unique enqueue whose key holder finished between the INSERT and the look-up.
UNIQUE_TRIES = 10


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


@dataclass(frozen=True)
class JobSpec:
    """One job to enqueue (what enqueue_many takes, besides plain mappings)."""

    task: str
    args: Mapping[str, Any] | None = None
    queue: str = "default"
    priority: int = 0
    run_at: datetime | timedelta | None = None
    max_attempts: int | None = None
    #: Seconds (or a timedelta) one attempt may run; None: the task's own default.
    timeout: float | timedelta | None = None


RunAt = datetime | timedelta | float | int | None


def _resolve_conn(conn: psycopg.Connection | str | None) -> tuple[psycopg.Connection, bool]:
    """The caller's connection, or a new one (which the caller of this helper must close)."""
    if isinstance(conn, psycopg.Connection):
        return conn, False
    dsn = conn if isinstance(conn, str) else Settings.from_env().require_database_url()
    return connect(dsn), True


@contextlib.contextmanager
def _enqueuing(conn: psycopg.Connection | str | None) -> Iterator[psycopg.Connection]:
    """The connection to enqueue on (a new one, closed after, for a DSN or None); what the
    database refuses becomes InvalidJob (refused) or ConfigError (not_permitted)."""
    connection, owned = _resolve_conn(conn)
    try:
        yield connection
    except (psycopg.errors.IntegrityError, psycopg.errors.DataError) as exc:
        raise refused(exc) from exc
    except psycopg.errors.InsufficientPrivilege as exc:
        raise not_permitted(exc) from exc
    finally:
        if owned:
            connection.close()


#: Why a naive datetime is refused, said the way a user fixes it.
NAIVE_DATETIME = (
    "a naive datetime has no time zone, so it would run hours early or late depending on "
    "the client's and the database's zones; pass an aware datetime "
    "(datetime.now(timezone.utc) + ..., or one with tzinfo) or a delay (timedelta or seconds)"
)


def _when(run_at: RunAt) -> tuple[datetime | None, timedelta | None]:
    """run_at as (absolute time, delay from the database's now()).

    The one rule for `enqueue`, `enqueue_many` and `pgdyno enqueue`: a datetime must be aware
    (InvalidJob otherwise); a delay is a timedelta or seconds, finite and at most 100 years
    (a negative one is due at once).
    """
    if run_at is None:
        return None, None
    if isinstance(run_at, datetime):
        if run_at.tzinfo is None or run_at.utcoffset() is None:
            raise InvalidJob(f"run_at {run_at.isoformat()} refused: {NAIVE_DATETIME}")
        return run_at, None
    if isinstance(run_at, bool) or not isinstance(run_at, timedelta | int | float):
        raise InvalidJob(
            f"run_at {run_at!r} refused: give an aware datetime, a timedelta or seconds"
        )
    seconds = run_at.total_seconds() if isinstance(run_at, timedelta) else run_at
    try:  # a negative delay is a time in the past: the job is due at once
        parse_duration(abs(seconds), "run_at delay")
    except ConfigError:
        raise InvalidJob(
            f"run_at delay {run_at!r} refused: a delay must be a finite number of seconds "
            "(or a timedelta) of at most 100 years"
        ) from None
    return None, run_at if isinstance(run_at, timedelta) else timedelta(seconds=float(seconds))


def _timeout(timeout: float | timedelta | None) -> timedelta | None:
    """A job's timeout for the database: from 1 second to a day (InvalidJob else)."""
    if timeout is None:
        return None
    seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise InvalidJob(f"timeout {timeout!r} refused: give seconds or a timedelta")
    if not 1 <= seconds <= 86400:  # also refuses NaN
        raise InvalidJob(
            f"timeout {timeout!r} refused: a timeout must be from 1 second to 1 day (86400 seconds)"
        )
    return timedelta(seconds=float(seconds))


def refused(exc: psycopg.errors.IntegrityError | psycopg.errors.DataError) -> InvalidJob:
    """Turn the database's refusal of a job into an InvalidJob that says what to fix."""
    constraint = getattr(exc.diag, "constraint_name", None)
    hint = _CONSTRAINT_HINTS.get(constraint or "")
    detail = exc.diag.message_primary or str(exc)
    return InvalidJob(f"job refused: {hint} ({detail})" if hint else f"job refused: {detail}")


def not_permitted(exc: psycopg.errors.InsufficientPrivilege) -> ConfigError:
    """The connection's role may not enqueue as asked: say which grant fixes it.

    `pgdyno.enqueue` and `enqueue_many` read the new ids back (INSERT ... RETURNING id), which
    an enqueue role may do only with `pgdyno grant-enqueue ROLE --returning-id`.
    """
    detail = exc.diag.message_primary or str(exc)
    hint = exc.diag.message_hint or (
        "an enqueue role needs `pgdyno grant-enqueue ROLE --returning-id` (run by the owner "
        "of the pgdyno schema) for pgdyno.enqueue and enqueue_many, which return the new ids"
    )
    return ConfigError(f"enqueue not permitted: {detail}; {hint}")


def enqueue(
    conn: psycopg.Connection | str | None,
    task: str,
    args: Mapping[str, Any] | None = None,
    *,
    queue: str = "default",
    priority: int = 0,
    run_at: RunAt = None,
    max_attempts: int | None = None,
    timeout: float | timedelta | None = None,
    unique_key: str | None = None,
) -> int:
    """Enqueue one job and return its id.

    Given a connection, the job is part of the caller's transaction: it is visible to workers,
    and notified, only when that transaction commits. `run_at` is an aware datetime, or a
    delay (timedelta or seconds) counted from the database's clock; a naive datetime, an
    infinite, NaN or over-100-years delay raise InvalidJob, as does a job the database refuses.
    `timeout` (seconds or a timedelta, at most a day) limits one attempt: longer, it fails
    with JobTimeout; None leaves the task's own default (@pgdyno.task(timeout=)).
    `unique_key` (at most 200 characters): while a job of `queue` with this key is ready or
    running, no job is added and that job's id is returned (enqueue_unique tells which).
    """
    if unique_key is not None:
        return enqueue_unique(
            conn,
            task,
            args,
            unique_key=unique_key,
            queue=queue,
            priority=priority,
            run_at=run_at,
            max_attempts=max_attempts,
            timeout=timeout,
        )[0]
    params = _insert_params(task, args, queue, priority, run_at, max_attempts, timeout)
    with _enqueuing(conn) as connection:
        row = connection.execute(sql.query("job_insert"), params).fetchone()
    assert row is not None
    return int(row[0])


def enqueue_unique(
    conn: psycopg.Connection | str | None,
    task: str,
    args: Mapping[str, Any] | None = None,
    *,
    unique_key: str,
    queue: str = "default",
    priority: int = 0,
    run_at: RunAt = None,
    max_attempts: int | None = None,
    timeout: float | timedelta | None = None,
) -> tuple[int, bool]:
    """Enqueue a job unless a ready or running job of `queue` holds `unique_key`.

    Returns (job id, True) for a new job, (the holder's id, False) otherwise. Concurrent calls
    with one key make one job: the database's unique index decides (a call waits for another's
    uncommitted job, then finds it). Inside a REPEATABLE READ or SERIALIZABLE transaction, a
    holder committed after the transaction's snapshot raises psycopg's SerializationFailure.
    """
    params = _insert_params(task, args, queue, priority, run_at, max_attempts, timeout)
    params["unique_key"] = unique_key
    with _enqueuing(conn) as connection:
        for _ in range(UNIQUE_TRIES):
            row = connection.execute(sql.query("job_insert_unique"), params).fetchone()
            if row is not None:
                return int(row[0]), True
            # Each statement sees what committed before it started (READ COMMITTED): the holder
            # that made the INSERT do nothing, unless it finished meanwhile (then insert again).
            held = connection.execute(sql.query("job_find_unique"), params).fetchone()
            if held is not None and held[0] is not None:
                return int(held[0]), False
    raise InvalidJobState(
        f"unique key {unique_key!r} of queue {queue!r} kept changing hands: its jobs finish as "
        f"fast as they are enqueued ({UNIQUE_TRIES} tries); enqueue again"
    )


def _insert_params(
    task: str,
    args: Mapping[str, Any] | None,
    queue: str,
    priority: int,
    run_at: RunAt,
    max_attempts: int | None,
    timeout: float | timedelta | None,
) -> dict[str, Any]:
    """The parameters of job_insert(_unique); InvalidJob for a bad run_at (see _when) or
    timeout (see _timeout)."""
    at, delay = _when(run_at)
    limit = _timeout(timeout)
    return {
        "queue": queue,
        "task": task,
        "args": _args(args),
        "priority": priority,
        "run_at": at,
        "delay": delay,
        "max_attempts": max_attempts,
        "timeout": limit,
    }


def _args(args: Mapping[str, Any] | None) -> Jsonb:
    """A job's args for the database, which refuses anything but a JSON object itself."""
    return Jsonb({} if args is None else dict(args) if isinstance(args, Mapping) else args)


def _atomic(connection: psycopg.Connection) -> contextlib.AbstractContextManager[Any]:
    """One transaction for a batch's statements, never committing the caller's.

    In autocommit: a transaction of its own. Inside the caller's open transaction: a savepoint,
    so that a refused batch leaves the caller's earlier work usable. On an idle connection
    that is not in autocommit: nothing, as connection.transaction() would BEGIN and COMMIT
    there, committing a batch the caller means to commit or roll back; the statements open the
    caller's transaction instead.
    """
    idle = connection.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    if idle and not connection.autocommit:
        return contextlib.nullcontext()
    return connection.transaction()


def _spec(job: JobSpec | Mapping[str, Any]) -> JobSpec:
    if isinstance(job, JobSpec):
        return job
    unknown = sorted(set(job) - {f.name for f in fields(JobSpec)})
    if unknown:
        raise InvalidJob(
            f"job {dict(job)!r} refused: unknown field {', '.join(map(repr, unknown))} "
            f"(a job has {', '.join(f.name for f in fields(JobSpec))})"
        )
    if "task" not in job:
        raise InvalidJob(f"job {dict(job)!r} refused: it has no task")
    return JobSpec(**job)


def enqueue_many(
    conn: psycopg.Connection | str | None, jobs: Iterable[JobSpec | Mapping[str, Any]]
) -> list[int]:
    """Enqueue many jobs with one COPY and return their ids, in order.

    All or nothing: one bad job refuses the batch (InvalidJob), and a `run_at` is checked as
    by `enqueue` before anything is sent. The enqueue trigger still sends one notification
    per queue for the whole batch.
    """
    specs = [_spec(job) for job in jobs]
    if not specs:
        return []
    whens = [_when(spec.run_at) for spec in specs]
    timeouts = [_timeout(spec.timeout) for spec in specs]
    with _enqueuing(conn) as connection, _atomic(connection):
        reserved = connection.execute(sql.query("job_reserve_ids"), {"n": len(specs)}).fetchone()
        assert reserved is not None  # the statement always returns one row
        now, default_attempts, ids = reserved
        rows = [
            (
                spec.queue,
                spec.task,
                _args(spec.args).obj,
                spec.priority,
                at or (now + delay if delay else now),
                default_attempts if spec.max_attempts is None else spec.max_attempts,
                limit,
            )
            for spec, (at, delay), limit in zip(specs, whens, timeouts, strict=True)
        ]
        if ids is None:  # a client role: it may not write ids (migration 0009)
            ids = _insert_many(connection, rows)
        else:
            with connection.cursor().copy(sql.query("job_copy_in")) as copy:
                copy.set_types(
                    ["int8", "text", "text", "jsonb", "int4", "timestamptz", "int4", "interval"]
                )
                for job_id, row in zip(ids, rows, strict=True):
                    copy.write_row((job_id, *row))
    return list(ids)


def _insert_many(connection: psycopg.Connection, rows: list[tuple[Any, ...]]) -> list[int]:
    """Insert a batch with one INSERT ... SELECT FROM unnest(...) RETURNING id (ids in order)."""
    columns = list(zip(*rows, strict=True))
    params = {
        "queues": list(columns[0]),
        "tasks": list(columns[1]),
        "args": [Jsonb(value) for value in columns[2]],
        "priorities": list(columns[3]),
        "run_ats": list(columns[4]),
        "max_attempts": list(columns[5]),
        "timeouts": list(columns[6]),
    }
    return [row[0] for row in connection.execute(sql.query("job_insert_many"), params)]


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
        "done_ids": [job.id for job in reported],
        "done_attempt": next(iter(attempts)) if uniform else None,
        "done_attempts": None if uniform else [job.attempt for job in reported],
        "done_results": results if any(r is not None for r in results) else None,
        "done_peaks": peaks if any(p is not None for p in peaks) else None,
        "queues": list(queues),
        "limit": limit,
        "worker": worker,
        "lease": timedelta(seconds=lease),
    }
    rows = conn.execute(sql.query("job_complete_and_claim"), params, prepare=True).fetchall()
    return Claimed(
        (_claimed(*row[1:]) for row in rows if row[0] == "claimed"),
        (row[1] for row in rows if row[0] == "refused"),
    )


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
