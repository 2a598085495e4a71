"""The rows of pgdyno.schedules: add, list, remove, pause, resume, and the Python declarations.

Used by `pgdyno schedule ...`, `pgdyno status` and the dispatcher. A client may write the table
with plain SQL too: the database checks the shape of a row, the dispatcher its cron expression
and time zone (a bad one shows as the schedule's last_error, and the schedule never runs).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from pgdyno import sql
from pgdyno.errors import ConfigError, InvalidJob, ScheduleNotFound
from pgdyno.schedules.declare import Declared
from pgdyno.schedules.timing import Timing

# What each CHECK constraint of pgdyno.schedules means, said the way a user fixes it.
_HINTS = {
    "schedule_name_must_be_a_non_empty_name_of_at_most_128_characters": (
        "a schedule's name must be non-empty, of at most 128 characters"
    ),
    "task_must_be_a_non_empty_name": "the task must be a non-empty name of at most 200 characters",
    "queue_must_be_a_non_empty_name": (
        "the queue must be a non-empty name of at most 128 characters"
    ),
    "queue_must_not_start_or_end_with_whitespace": (
        "the queue must not start or end with whitespace"
    ),
    "args_must_be_a_json_object": 'args must be a JSON object, for example {"id": 7}',
    "timezone_must_be_a_name_of_at_most_64_characters": "unknown time zone",
}


@dataclass(frozen=True)
class Schedule:
    """One row of pgdyno.schedules."""

    name: str
    task: str
    queue: str
    args: dict[str, Any]
    cron: str | None
    every: timedelta | None
    timezone: str
    paused: bool
    source: str
    next_run_at: datetime | None
    last_run_at: datetime | None
    last_job_id: int | None
    last_error: str | None

    def timing(self) -> Timing:
        """The schedule's timing; ConfigError when its row holds a bad one."""
        return Timing(self.cron, self.every, self.timezone)

    def next_run(self, now: datetime) -> datetime | None:
        """next_run_at, or what the dispatcher will compute for a new row; None when paused or
        its timing is bad."""
        if self.paused:
            return None
        if self.next_run_at is not None:
            return self.next_run_at
        try:
            return self.timing().next_after(now)
        except ConfigError:
            return None


def add(
    conn: psycopg.Connection,
    name: str,
    *,
    task: str,
    timing: Timing,
    queue: str = "default",
    args: Mapping[str, Any] | None = None,
    source: str = "cli",
) -> None:
    """Add schedule `name`; ConfigError when one of that name exists, InvalidJob when the
    database refuses a value."""
    params = {"name": name, "task": task, "queue": queue, "source": source, **_values(timing)}
    params["args"] = Jsonb(dict(args or {}))
    try:
        added = conn.execute(sql.query("schedule_insert"), params).fetchone()
    except (psycopg.errors.IntegrityError, psycopg.errors.DataError) as exc:
        constraint = getattr(exc.diag, "constraint_name", None) or ""
        raise InvalidJob(
            f"schedule {name!r} refused: {_HINTS.get(constraint, exc.diag.message_primary)}"
        ) from exc
    if added is None:
        raise ConfigError(
            f"a schedule named {name!r} exists already: `pgdyno schedule remove {name}` first"
        )


def remove(conn: psycopg.Connection, name: str) -> None:
    if conn.execute(sql.query("schedule_delete"), {"name": name}).fetchone() is None:
        raise _not_found(name)


def set_paused(conn: psycopg.Connection, name: str, paused: bool) -> None:
    """Pause or resume `name`. Resuming starts from the next scheduled time after now: runs
    skipped while paused are not made up for."""
    row = conn.execute(sql.query("schedule_set_paused"), {"name": name, "paused": paused})
    if row.fetchone() is None:
        raise _not_found(name)


def all_schedules(conn: psycopg.Connection) -> list[Schedule]:
    return [Schedule(*row) for row in conn.execute(sql.query("schedules_all")).fetchall()]


def sync_declared(
    conn: psycopg.Connection, declared: Sequence[Declared], *, prune: bool
) -> tuple[list[str], list[str], list[str]]:
    """Make the 'python' rows match `declared`; with `prune`, remove the undeclared ones.

    Returns (names added or changed, names removed, names left alone because a row of another
    source holds them).
    """
    changed: list[str] = []
    taken: list[str] = []
    with conn.transaction():
        for entry in declared:
            params = {
                "name": entry.name,
                "task": entry.task,
                "queue": entry.queue,
                "args": Jsonb(dict(entry.args)),
                **_values(entry.timing),
            }
            if conn.execute(sql.query("schedule_upsert_declared"), params).fetchone():
                changed.append(entry.name)
            elif _source(conn, entry.name) != "python":
                taken.append(entry.name)
        removed: list[str] = []
        if prune:
            names = [entry.name for entry in declared]
            rows = conn.execute(sql.query("schedules_remove_undeclared"), {"names": names})
            removed = [row[0] for row in rows.fetchall()]
    return changed, removed, taken


def _source(conn: psycopg.Connection, name: str) -> str | None:
    return next((s.source for s in all_schedules(conn) if s.name == name), None)


def _values(timing: Timing) -> dict[str, Any]:
    return {"cron": timing.cron, "every": timing.every, "timezone": timing.timezone}


def _not_found(name: str) -> ScheduleNotFound:
    return ScheduleNotFound(f"no schedule named {name!r} (see `pgdyno schedule list`)")
