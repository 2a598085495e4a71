"""`pgdyno queue pause|resume|list`: hold a queue's jobs back without losing them; list the
queues (bounded: pgdyno/web/summary.py)."""

from __future__ import annotations

from typing import Any

import click

from pgdyno import pausing
from pgdyno.cli.common import connection, database_option, echo_json
from pgdyno.web import summary


@click.group("queue")
def queue_group() -> None:
    """Pause and resume queues."""


@queue_group.command()
@click.argument("name")
@database_option
def pause(name: str, database_url: str | None) -> None:
    """Stop workers claiming jobs of queue NAME (running ones finish); its jobs ask for no
    dyno meanwhile."""
    with connection(database_url) as conn:
        pausing.pause(conn, name)
    click.echo(f"queue {name} paused: its jobs wait until `pgdyno queue resume {name}`")


@queue_group.command()
@click.argument("name")
@database_option
def resume(name: str, database_url: str | None) -> None:
    """Let workers claim jobs of queue NAME again (they wake at once; dynos scale up)."""
    with connection(database_url) as conn:
        was_paused = pausing.resume(conn, name)
    click.echo(f"queue {name} resumed" if was_paused else f"queue {name} was not paused")


@queue_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@database_option
def list_command(as_json: bool, database_url: str | None) -> None:
    """The queues that matter (a scale rule, a live worker, paused) and the deepest others:
    paused or not, ready, scheduled and running jobs, process type; then the rest summed."""
    with connection(database_url) as conn:
        shown = summary.queues(conn)
    rows = [
        {
            "name": row["queue"],
            "paused": row["paused"],
            "paused_at": row["paused_at"],
            "ready": row["ready"],
            "scheduled": row["scheduled"],
            "running": row["running"],
            "process_type": row["process_type"],
            **({"queues": row["queues"]} if row["queue"] == summary.OTHER else {}),
        }
        for row in shown.rows
    ]
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("no queues yet")
        return
    click.echo(f"{'queue':<20} {'state':<8} {'ready':>7} {'later':>7} {'running':>7}  scales")
    for row in shown.queues:
        state = "paused" if row["paused"] else "active"
        click.echo(
            f"{row['queue']:<20} {state:<8} {row['ready']:>7} {row['scheduled']:>7} "
            f"{row['running']:>7}  {row['process_type'] or '-'}"
        )
    if shown.other:
        click.echo(more_queues(shown.other))


def more_queues(other: dict[str, Any]) -> str:
    """The line that stands for the queues not listed: "and N more queues (M jobs)"."""
    count, jobs = other["queues"], summary.jobs(other)
    return (
        f"and {count:,} more queue{'s' if count != 1 else ''} "
        f"({jobs:,} job{'s' if jobs != 1 else ''})"
    )


def register(group: click.Group) -> None:
    group.add_command(queue_group)
