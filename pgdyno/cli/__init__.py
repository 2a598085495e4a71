"""The `pgdyno` command: a click group, the composition root that wires the parts together.

Each submodule adds the commands of one area; errors pgdyno raises on purpose, and errors
Postgres answers with (a role without the privilege, say), become a one-line message and exit
status 1 (click's usage errors exit 2).
"""

from __future__ import annotations

from typing import Any

import click
import psycopg

from pgdyno.cli import dev, dispatcher, queue, queues, reports, roles, schedule, web, worker
from pgdyno.config import Settings
from pgdyno.db import first_line
from pgdyno.errors import PgdynoError
from pgdyno.logfmt import configure


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PgdynoError as exc:
            raise click.ClickException(str(exc)) from exc
        except psycopg.Error as exc:
            raise click.ClickException(f"Postgres refused: {first_line(exc)}") from exc


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pgdyno")
def main() -> None:
    """pgdyno: a Postgres job queue that scales its own worker dynos, down to zero."""
    try:
        configure(Settings.from_env().log_level)
    except PgdynoError as exc:
        raise click.ClickException(str(exc)) from exc


for module in (queue, queues, schedule, roles, worker, dispatcher, dev, reports, web):
    module.register(main)
