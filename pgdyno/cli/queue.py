"""`pgdyno migrate`, `enqueue`, `status`, `jobs list|show|retry|cancel|wait` and `prune`."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import click
import psycopg

from pgdyno import cancellation, pausing, queue, results, signals
from pgdyno.cli.common import DURATION, connection, database_option, echo_json
from pgdyno.cli.queues import more_queues
from pgdyno.clock import Wakeup
from pgdyno.enqueue import enqueue as enqueue_job
from pgdyno.enqueue import enqueue_unique
from pgdyno.migrate import migrate as apply_migrations
from pgdyno.web import sampler, summary


@click.command()
@database_option
def migrate(database_url: str | None) -> None:
    """Apply pending schema migrations (idempotent, safe to run concurrently)."""
    with connection(database_url, migrated=False) as conn:
        applied = apply_migrations(conn)
    if applied:
        click.echo(f"applied migrations: {', '.join(str(v) for v in applied)}")
    else:
        click.echo("schema is up to date")


def json_object(_ctx: click.Context, _param: click.Parameter, value: str) -> dict[str, Any]:
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(
            f"not valid JSON ({exc.msg} at column {exc.colno}): {value}"
        ) from None
    if not isinstance(parsed, dict):
        raise click.BadParameter(
            f'must be a JSON object such as {{"id": 7}}, got {type(parsed).__name__}: {value}'
        )
    return parsed


def _aware_datetime(value: str | datetime) -> datetime:
    """--run-at: an ISO 8601 time with its UTC offset; naive times are refused."""
    if isinstance(value, datetime):
        return value
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not an ISO 8601 time such as 2026-03-01T09:00:00+01:00"
        ) from None
    if parsed.tzinfo is None:
        raise click.BadParameter(
            f"{value!r} has no UTC offset, so it would run hours early or late depending on "
            f"the database's time zone: add one ({value.strip()}Z for UTC, or +01:00), or "
            "give --delay 2h instead"
        )
    return parsed


_aware_datetime.__name__ = "datetime"


@click.command()
@click.argument("task")
@click.option("--queue", "-q", "queue_name", default="default", show_default=True)
@click.option(
    "--args",
    "-a",
    "args",
    default="{}",
    callback=json_object,
    help="Keyword arguments as a JSON object, e.g. '{\"id\": 7}'.",
)
@click.option(
    "--priority",
    "-p",
    type=int,
    default=0,
    show_default=True,
    help="Higher runs first (-1000..1000).",
)
@click.option(
    "--delay",
    type=DURATION,
    default=None,
    help="Wait this long before the job may run, on the database's clock (30s, 5m, 2h).",
)
@click.option(
    "--run-at",
    type=_aware_datetime,
    default=None,
    metavar="ISO8601",
    help="Run at this time, with its UTC offset, e.g. 2026-03-01T09:00:00+01:00.",
)
@click.option("--max-attempts", type=int, default=None, help="Attempts before it fails.")
@click.option(
    "--timeout",
    type=DURATION,
    default=None,
    help="How long one attempt may run (30s, 5m, at most 1 day); longer, it fails with "
    "JobTimeout [default: the task's own].",
)
@click.option(
    "--unique-key",
    default=None,
    metavar="KEY",
    help="While a job of the queue with this key is ready or running, print its id instead "
    "of adding one.",
)
@database_option
def enqueue(
    task: str,
    queue_name: str,
    args: dict[str, Any],
    priority: int,
    delay: float | None,
    run_at: datetime | None,
    max_attempts: int | None,
    timeout: float | None,
    unique_key: str | None,
    database_url: str | None,
) -> None:
    """Enqueue TASK and print the new job's id (with --unique-key, maybe an existing one's)."""
    if delay is not None and run_at is not None:
        raise click.UsageError("give --delay or --run-at, not both")
    when = run_at if run_at is not None else timedelta(seconds=delay) if delay else None
    with connection(database_url) as conn:
        if unique_key is None:
            job_id = enqueue_job(
                conn,
                task,
                args,
                queue=queue_name,
                priority=priority,
                max_attempts=max_attempts,
                run_at=when,
                timeout=timeout,
            )
        else:
            job_id, added = enqueue_unique(
                conn,
                task,
                args,
                unique_key=unique_key,
                queue=queue_name,
                priority=priority,
                max_attempts=max_attempts,
                run_at=when,
                timeout=timeout,
            )
            if not added:
                click.echo(
                    f"job {job_id} holds unique key {unique_key!r} (ready or running): "
                    "no job added",
                    err=True,
                )
    click.echo(job_id)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--watch", is_flag=True, help="Refresh every --interval until Ctrl-C.")
@click.option(
    "--interval",
    type=DURATION,
    default=2.0,
    show_default=True,
    help="With --watch: e.g. 1s (at least 200ms).",
)
@database_option
def status(as_json: bool, watch: bool, interval: float, database_url: str | None) -> None:
    """Jobs per queue and status, the age of the oldest ready job, paused queues, schedules
    with their next run, and scaling state; with --watch, again and again."""
    if interval < 0.2:
        raise click.BadParameter(
            f"{interval:g}s would query the database continuously: give 200ms or more",
            param_hint="'--interval'",
        )
    tty = sys.stdout.isatty()
    # Ctrl-C (or SIGTERM) ends --watch after the refresh under way, exit status 0: handled
    # here, so that it works even where the shell started the command ignoring SIGINT. The
    # handler only sets a flag and writes to a pipe (no lock, which a handler could deadlock on).
    stopping: list[bool] = []
    wakeup = Wakeup()

    def stop(_signal: object) -> None:
        stopping.append(True)
        wakeup.poke()

    restore = signals.install(stop) if watch else None
    try:
        with connection(database_url) as conn:
            while not stopping:
                snapshot, schedules = _status(conn)
                if as_json and watch:
                    click.echo(json.dumps(snapshot, default=str))  # one line per refresh
                elif as_json:
                    echo_json(snapshot)
                else:
                    if watch and tty:
                        click.clear()
                    if watch:
                        click.echo(f"pgdyno status at {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC")
                    _echo_status(snapshot, schedules)
                if not watch:
                    return
                if not tty and not as_json:
                    click.echo()
                wakeup.wait([], interval, lambda: bool(stopping))
    finally:
        if restore is not None:
            restore()


def _status(conn: psycopg.Connection) -> tuple[dict[str, Any], list[str]]:
    """What `status` shows, as JSON values, and its schedule lines."""
    from pgdyno import registry
    from pgdyno.cli.schedule import describe, schedule_lines
    from pgdyno.scaling.state import scaling_status
    from pgdyno.schedules import store

    now = datetime.now(UTC)
    schedules = store.all_schedules(conn)
    snapshot = {
        "queues": _queue_counts(conn),
        "paused_queues": {name: since for name, since in pausing.paused(conn).items()},
        "schedules": [describe(entry, now) for entry in schedules],
        "scaling": scaling_status(conn),
        "workers": registry.workers(conn),
    }
    return snapshot, schedule_lines(schedules, now)


def _queue_counts(conn: psycopg.Connection) -> dict[str, dict[str, Any]]:
    """Per queue shown (summary.status: those that matter, the deepest others), a count per
    status and the oldest due ready job's age; the rest summed under "" with `queues`."""
    shown = summary.status(conn)
    counts = {}
    for row in shown.rows:
        entry = {key: row[key] for key in (*queue.STATUSES, "oldest_ready_age_s")}
        if row["queue"] == summary.OTHER:
            entry["queues"] = row["queues"]
        counts[row["queue"]] = entry
    return counts


def _echo_status(snapshot: dict[str, Any], schedule_lines: list[str]) -> None:
    _echo_scaling(snapshot["scaling"])
    for line in schedule_lines:
        click.echo(line)
    if schedule_lines:
        click.echo()
    queues = snapshot["queues"]
    paused = snapshot["paused_queues"]
    for name in paused:
        if name not in queues:
            click.echo(f"queue {name}: PAUSED (no jobs)")
    if not queues:
        click.echo("no jobs")
        return
    header = f"{'queue':<20} " + " ".join(f"{s:>9}" for s in queue.STATUSES) + "  oldest ready"
    click.echo(header)
    for name, counts in queues.items():
        if name == summary.OTHER:
            click.echo(more_queues(counts))
            continue
        age = counts["oldest_ready_age_s"]
        click.echo(
            f"{name:<20} "
            + " ".join(f"{counts[s]:>9}" for s in queue.STATUSES)
            + ("  -" if age is None else f"  {age:.1f}s")
            + ("  PAUSED" if name in paused else "")
        )


def _echo_scaling(types: dict[str, dict[str, Any]]) -> None:
    for name, entry in types.items():
        quantity = entry["quantity"]
        known = "not known yet (no formation call so far)" if quantity is None else quantity
        line = (
            f"process type {name}: quantity {known}, queues "
            f"{','.join(entry['queues'])}, max {entry['max']}, linger {entry['linger_s']:g}s, "
            f"{entry['workers']} live worker{'s' if entry['workers'] != 1 else ''}"
        )
        click.echo(line)
        if entry["last_error"]:
            failures = entry["failures"]
            click.echo(
                f"  standing formation error ({failures} failed call{'s' if failures != 1 else ''}"
                f", last at {entry['last_error_at']}): {entry['last_error']}"
            )
        if entry["not_before"]:
            cause = (
                "the platform's Retry-After"
                if entry["not_before_cause"] == "retry_after"
                else "backoff after failed calls"
            )
            click.echo(f"  no formation API call before {entry['not_before']} ({cause})")
        if entry["unserved_queues"]:
            click.echo(
                f"  WARNING: no {name} worker serves {', '.join(entry['unserved_queues'])} "
                f"(they serve {', '.join(entry['served_queues'])}): those jobs wait, and keep "
                f"{name} up; add --queue to its command or fix the --scale rule"
            )
        if entry["last_event"]:
            event = entry["last_event"]
            click.echo(
                f"  last scale: {event['from']} -> {event['to']} at {event['at']} by "
                f"{event['actor']} ({event['reason']}; {event['outcome']})"
            )
    if types:
        click.echo()


@click.group()
def jobs() -> None:
    """Inspect and manage individual jobs."""


@jobs.command("list")
@click.option("--queue", "-q", "queue_name", default=None)
@click.option("--status", "-s", "state", type=click.Choice(queue.STATUSES), default=None)
@click.option("--limit", "-n", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@database_option
def list_command(
    queue_name: str | None, state: str | None, limit: int, as_json: bool, database_url: str | None
) -> None:
    """The most recent jobs, newest first."""
    with connection(database_url) as conn:
        rows = queue.list_jobs(conn, queue=queue_name, status=state, limit=limit)
    if as_json:
        echo_json(rows)
        return
    click.echo(f"{'id':>10} {'queue':<14} {'task':<20} {'status':<10} {'tries':>5}  last error")
    for row in rows:
        error = (row["last_error"] or "").splitlines()[0][:50] if row["last_error"] else ""
        click.echo(
            f"{row['id']:>10} {row['queue']:<14.14} {row['task']:<20.20} "
            f"{row['status']:<10} {row['attempts']:>2}/{row['max_attempts']:<2}  {error}"
        )


@jobs.command()
@click.argument("job_id", type=int)
@click.option("--json", "as_json", is_flag=True)
@database_option
def show(job_id: int, as_json: bool, database_url: str | None) -> None:
    """Everything about one job."""
    with connection(database_url) as conn:
        row = queue.get_job(conn, job_id)
    if as_json:
        echo_json(row)
        return
    for key, value in row.items():
        if key == "last_error" and value:
            click.echo(f"{key + ':':<18}")
            click.echo("  " + str(value).replace("\n", "\n  "))
        elif isinstance(value, dict):
            click.echo(f"{key + ':':<18}{json.dumps(value)}")
        else:
            click.echo(f"{key + ':':<18}{'' if value is None else value}")


@jobs.command()
@click.argument("job_id", type=int)
@database_option
def retry(job_id: int, database_url: str | None) -> None:
    """Run a failed or cancelled job again, with a fresh attempt budget."""
    with connection(database_url) as conn:
        queue.retry_job(conn, job_id)
    click.echo(f"job {job_id} is ready again")


@jobs.command()
@click.argument("job_id", type=int)
@database_option
def cancel(job_id: int, database_url: str | None) -> None:
    """Cancel a job: at once if it has not started; a running one is stopped by its worker
    (a report's query is cancelled on the server) and ends cancelled, never retried."""
    with connection(database_url) as conn:
        outcome = cancellation.cancel(conn, job_id)
    if outcome == "cancelled":
        click.echo(f"job {job_id} cancelled")
    else:
        click.echo(
            f"job {job_id} is running: its worker was asked to stop it; it ends cancelled "
            f"(pgdyno jobs wait {job_id} follows it)"
        )


@jobs.command()
@click.argument("job_id", type=int)
@click.option(
    "--timeout", type=DURATION, default=None, help="Give up after this long, e.g. 30s (exit 1)."
)
@database_option
def wait(job_id: int, timeout: float | None, database_url: str | None) -> None:
    """Wait until job JOB_ID finishes and print its result as JSON; exit 1 if it failed, was
    cancelled, or did not finish within --timeout."""
    with connection(database_url) as conn:
        try:
            value = results.result(conn, job_id, timeout=timeout)
        except KeyboardInterrupt:
            raise click.Abort() from None
    click.echo(json.dumps(value, indent=2, default=str))


@click.command()
@click.option(
    "--older-than",
    required=True,
    type=DURATION,
    help="Age of finished jobs to delete, e.g. 7d, 12h.",
)
@database_option
def prune(older_than: float, database_url: str | None) -> None:
    """Delete finished jobs (done, failed, cancelled) older than the given age."""
    with connection(database_url) as conn:
        count = queue.prune(conn, older_than)
        sampler.prune(conn, older_than)  # the dashboard's timeline samples go with the jobs
    click.echo(f"pruned {count} finished jobs")


def register(group: click.Group) -> None:
    for command in (migrate, enqueue, status, jobs, prune):
        group.add_command(command)
