"""`pgdyno dev`: the local platform, the Procfile's process types behind a formation API."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import click

from pgdyno.cli.common import database_option
from pgdyno.config import Settings, parse_duration
from pgdyno.errors import ConfigError
from pgdyno.platform.postgres import start_embedded_postgres


@click.command()
@click.option(
    "--procfile",
    default="Procfile",
    show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
)
@click.option("--port", type=int, default=0, help="Formation API port (default: any free one).")
@click.option(
    "--kill-timeout",
    default="30s",
    show_default=True,
    help="Time between SIGTERM and SIGKILL when a dyno is stopped.",
)
@database_option
def dev(procfile: Path, port: int, kill_timeout: str, database_url: str | None) -> None:
    """Run the Procfile locally behind a Heroku-compatible formation API.

    Without DATABASE_URL it starts the embedded Postgres (data in .pgdyno/) and migrates.
    Ctrl-C stops everything.
    """
    from pgdyno.platform import LocalPlatform

    settings = Settings.from_env(database_url=database_url)
    url = settings.database_url or start_embedded_postgres()
    try:
        platform = LocalPlatform(
            procfile, url, port=port, kill_timeout=parse_duration(kill_timeout, "--kill-timeout")
        )
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    platform.start()
    stop.wait()
    platform.stop()


def register(group: click.Group) -> None:
    group.add_command(dev)
