"""`pgdyno grant-enqueue ROLE`: the least-privilege role a client enqueues with."""

from __future__ import annotations

import click

from pgdyno import roles
from pgdyno.cli.common import connection, database_option


@click.command("grant-enqueue")
@click.argument("role")
@click.option(
    "--returning-id",
    is_flag=True,
    help="Also let ROLE read job ids (SELECT on the id column), which INSERT ... RETURNING id, "
    "pgdyno.enqueue and pgdyno.enqueue_many need. It can then list every job's id.",
)
@click.option(
    "--print",
    "print_only",
    is_flag=True,
    help="Print the statements instead of running them (to run them elsewhere, as the owner).",
)
@database_option
def grant_enqueue(
    role: str, returning_id: bool, print_only: bool, database_url: str | None
) -> None:
    """Make ROLE an enqueue role: it may INSERT jobs (queue, task, args, priority, run_at,
    max_attempts, timeout, unique_key: pgdyno.enqueue_columns()) and nothing else. Run as the
    owner of the pgdyno schema."""
    with connection(database_url) as conn:
        statements = roles.grant_enqueue(
            conn, role, returning_id=returning_id, apply=not print_only
        )
    for statement in statements:
        click.echo(f"{statement};")
    if not print_only:
        click.echo(f"-- {role} may now enqueue, and set no other column of pgdyno.jobs", err=True)


def register(group: click.Group) -> None:
    group.add_command(grant_enqueue)
