"""`pgdyno schedule add|list|remove|pause|resume`: recurring jobs (pgdyno.schedules)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import click

from pgdyno.cli.common import connection, database_option, echo_json
from pgdyno.cli.queue import json_object
from pgdyno.config import format_duration
from pgdyno.errors import ConfigError
from pgdyno.schedules import store
from pgdyno.schedules.store import Schedule
from pgdyno.schedules.timing import Timing


@click.group()
def schedule() -> None:
    """Recurring jobs, enqueued once per scheduled time by the acting dispatcher."""


@schedule.command()
@click.argument("name")
@click.option("--task", "-t", required=True, help="The task each run enqueues.")
@click.option("--queue", "-q", "queue_name", default="default", show_default=True)
@click.option("--cron", default=None, metavar='"EXPR"', help='A cron expression: "0 3 * * *".')
@click.option(
    "--every", default=None, metavar="DURATION", help="A fixed period instead: 2s, 15m, 1h."
)
@click.option(
    "--args",
    "-a",
    "args",
    default="{}",
    callback=json_object,
    help="The task's keyword arguments as a JSON object.",
)
@click.option(
    "--timezone",
    default="UTC",
    show_default=True,
    metavar="TZ",
    help="Where the cron expression's hours are read, e.g. Europe/London (DST followed).",
)
@database_option
def add(
    name: str,
    task: str,
    queue_name: str,
    cron: str | None,
    every: str | None,
    args: dict[str, Any],
    timezone: str,
    database_url: str | None,
) -> None:
    """Add schedule NAME: TASK in QUEUE on --cron "EXPR" or --every DURATION."""
    if (cron is None) == (every is None):
        raise click.UsageError('give either --cron "EXPR" or --every DURATION')
    try:
        timing = Timing.of(cron, every, timezone)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--cron" if cron else "--every") from None
    with connection(database_url) as conn:
        store.add(conn, name, task=task, timing=timing, queue=queue_name, args=args)
    first = timing.next_after(datetime.now(UTC))
    click.echo(f"schedule {name} added: {timing.describe()}, first run at {_when(first)}")


@schedule.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@database_option
def list_command(as_json: bool, database_url: str | None) -> None:
    """Every schedule, its next run and its last run."""
    with connection(database_url) as conn:
        schedules = store.all_schedules(conn)
    now = datetime.now(UTC)
    if as_json:
        echo_json([describe(entry, now) for entry in schedules])
        return
    if not schedules:
        click.echo("no schedules (pgdyno schedule add NAME --task TASK --every 1h)")
        return
    for line in schedule_lines(schedules, now):
        click.echo(line)


def describe(entry: Schedule, now: datetime) -> dict[str, Any]:
    """A schedule as JSON values, with the next run as `pgdyno status` shows it."""
    next_run = entry.next_run(now)
    return {
        "name": entry.name,
        "task": entry.task,
        "queue": entry.queue,
        "args": entry.args,
        "cron": entry.cron,
        "every_s": None if entry.every is None else entry.every.total_seconds(),
        "timezone": entry.timezone,
        "paused": entry.paused,
        "source": entry.source,
        "next_run_at": None if next_run is None else next_run.isoformat(),
        "last_run_at": None if entry.last_run_at is None else entry.last_run_at.isoformat(),
        "last_job_id": entry.last_job_id,
        "last_error": entry.last_error,
    }


def schedule_lines(schedules: list[Schedule], now: datetime) -> list[str]:
    """One line per schedule (and one for its error), for `schedule list` and `status`."""
    lines = []
    for entry in schedules:
        when = entry.cron if entry.cron is not None else f"every {_seconds(entry.every)}"
        zone = f" {entry.timezone}" if entry.cron is not None and entry.timezone != "UTC" else ""
        next_run = entry.next_run(now)
        upcoming = "paused" if entry.paused else "-" if next_run is None else _when(next_run)
        last = "never" if entry.last_run_at is None else _when(entry.last_run_at)
        job = f" (job {entry.last_job_id})" if entry.last_job_id else ""
        lines.append(
            f"schedule {entry.name}: {entry.task} on {entry.queue}, {when}{zone}; "
            f"next {upcoming}; last {last}{job} [{entry.source}]"
        )
        if entry.last_error:
            lines.append(f"  error: {entry.last_error}")
    return lines


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _seconds(every: Any) -> str:
    return format_duration(every.total_seconds()) if every is not None else "-"


@schedule.command()
@click.argument("name")
@database_option
def remove(name: str, database_url: str | None) -> None:
    """Remove schedule NAME (its jobs already enqueued stay)."""
    with connection(database_url) as conn:
        store.remove(conn, name)
    click.echo(f"schedule {name} removed")


@schedule.command()
@click.argument("name")
@database_option
def pause(name: str, database_url: str | None) -> None:
    """Stop enqueuing runs of schedule NAME."""
    with connection(database_url) as conn:
        store.set_paused(conn, name, True)
    click.echo(f"schedule {name} paused")


@schedule.command()
@click.argument("name")
@database_option
def resume(name: str, database_url: str | None) -> None:
    """Enqueue runs of schedule NAME again, from its next time after now."""
    with connection(database_url) as conn:
        store.set_paused(conn, name, False)
    click.echo(f"schedule {name} resumed")


def register(group: click.Group) -> None:
    group.add_command(schedule)
