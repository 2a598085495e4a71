"""Enqueue: the client side of the queue (pgdyno.enqueue, enqueue_unique, enqueue_many).

Runs on the caller's connection, in the caller's transaction (a job is visible to workers, and
notified, when that transaction commits), as whatever role the caller is: pgdyno's own role or
an enqueue role (`pgdyno grant-enqueue`). Statements come from sql/queue.sql by name, with bound
parameters and every function schema-qualified. What the database refuses (its CHECK
constraints and the enqueue trigger's rules, sql/migrations/0001, 0009, 0010) becomes InvalidJob
saying what to fix, or ConfigError for a privilege the role lacks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any, cast

import psycopg
from psycopg import sql as pgsql
from psycopg.types.json import Jsonb

from pgdyno import bulk, sql
from pgdyno.config import Settings, parse_duration
from pgdyno.db import connect
from pgdyno.errors import ConfigError, InvalidJob, InvalidJobState

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

#: Whether this libpq has pipeline mode (14 and later): enqueue_many overlaps its work with it.
PIPELINE = psycopg.Pipeline.is_supported()

#: Tries of a unique enqueue whose key holder finished between the INSERT and the look-up.
UNIQUE_TRIES = 10


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
    by `enqueue` before anything is sent; so is each value's type (queue and task strings,
    priority and max_attempts ints: InvalidJob names the field). The ids come from one
    statement (job_reserve_ids) and the rows from one text-format COPY of only the columns
    some job sets (pgdyno/bulk.py); a role that may not write ids inserts with one
    INSERT ... RETURNING instead. The enqueue trigger checks every row and still wakes each
    queue once for the whole batch.
    """
    given = list(jobs)
    if not given:
        return []
    # A batch of JobSpecs is taken as it is; mappings become JobSpecs (InvalidJob if not one).
    specs: list[JobSpec] = (
        cast(list[JobSpec], given)
        if set(map(type, given)) == {JobSpec}
        else [_spec(job) for job in given]
    )
    # Most batches set no run_at and no timeout: checked at C speed, without a call per job.
    unset: tuple[datetime | None, timedelta | None] = (None, None)
    whens = bulk.each(specs, "run_at", _when, unset)
    timeouts = bulk.each(specs, "timeout", _timeout, None)
    with _enqueuing(conn) as connection, _atomic(connection):
        # The rows are encoded while the database reserves the ids (pipeline mode sends the
        # statement at once and waits for its answer only at fetchone()).
        with connection.pipeline() if PIPELINE else contextlib.nullcontext():
            reserving = connection.execute(sql.query("job_reserve_ids"), {"n": len(specs)})
            columns = bulk.Columns(connection, specs, whens, timeouts)
            reserved = reserving.fetchone()
        assert reserved is not None  # the statement always returns one row
        now, default_attempts, ids = reserved
        if ids is None:  # a client role: it may not write ids (migration 0009)
            return _insert_many(connection, specs, whens, timeouts, now, default_attempts)
        if len(ids) < len(specs):  # one block of consecutive ids: its first (job_reserve_ids)
            ids = range(ids[0], ids[0] + len(specs))
        columns.finish(now, default_attempts)
        statement = pgsql.SQL(sql.query("job_copy_in")).format(
            columns=pgsql.SQL(", ").join(map(pgsql.Identifier, ["id", *columns.names]))
        )
        bulk.copy_rows(connection, statement, columns, ids)
    return list(ids)


def _insert_many(
    connection: psycopg.Connection,
    specs: list[JobSpec],
    whens: list[tuple[datetime | None, timedelta | None]],
    timeouts: list[timedelta | None],
    now: datetime,
    default_attempts: int,
) -> list[int]:
    """Insert a batch with one INSERT ... SELECT FROM unnest(...) RETURNING id (ids in order):
    the path of a role that may not write ids."""
    params = {
        "queues": [spec.queue for spec in specs],
        "tasks": [spec.task for spec in specs],
        "args": [_args(spec.args) for spec in specs],
        "priorities": [spec.priority for spec in specs],
        "run_ats": [at or (now + delay if delay else now) for at, delay in whens],
        "max_attempts": [
            default_attempts if spec.max_attempts is None else spec.max_attempts for spec in specs
        ],
        "timeouts": timeouts,
    }
    return [row[0] for row in connection.execute(sql.query("job_insert_many"), params)]
