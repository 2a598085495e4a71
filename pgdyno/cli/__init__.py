"""The `pgdyno` command: a click group, the composition root that wires the parts together.

Each submodule adds the commands of one area; errors pgdyno raises on purpose, and errors
Postgres answers with (a role without the privilege, say), become a one-line message and exit
status 1 (click's usage errors exit 2).
"""

from __future__ import annotations

import importlib
from typing import Any

import click
import psycopg

from pgdyno.config import Settings
from pgdyno.db import first_line
from pgdyno.errors import PgdynoError
from pgdyno.logfmt import configure

#: Each command's module (pgdyno.cli.MODULE, whose register() adds it), imported only when
#: the command runs or help lists it: `pgdyno worker` does not import the dashboard, the
#: local platform or the report CLI (a tenth of its start-up).
COMMANDS = {
    "migrate": "queue",
    "enqueue": "queue",
    "status": "queue",
    "jobs": "queue",
    "prune": "queue",
    "queue": "queues",
    "schedule": "schedule",
    "grant-enqueue": "roles",
    "worker": "worker",
    "dispatcher": "dispatcher",
    "dev": "dev",
    "report": "reports",
    "web": "web",
}


class _Group(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in COMMANDS and cmd_name not in self.commands:
            module = importlib.import_module(f"pgdyno.cli.{COMMANDS[cmd_name]}")
            module.register(self)
        return super().get_command(ctx, cmd_name)

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
