"""`pgdyno dev`: the local platform, the Procfile's process types behind a formation API."""

from __future__ import annotations

import functools
import signal
import threading
from pathlib import Path

import click

from pgdyno.cli.common import database_option
from pgdyno.config import Settings, parse_duration
from pgdyno.errors import ConfigError
from pgdyno.platform.postgres import start_embedded_postgres
from pgdyno.web.local import start_local


@click.command()
@click.option(
    "--procfile",
    default="Procfile",
    show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
)
@click.option("--port", type=int, default=0, help="Formation API port (default: any free one).")
@click.option("--web-port", type=int, default=0, help="Dashboard port (default: any free one).")
@click.option(
    "--kill-timeout",
    default="30s",
    show_default=True,
    help="Time between SIGTERM and SIGKILL when a dyno is stopped.",
)
@database_option
def dev(
    procfile: Path, port: int, web_port: int, kill_timeout: str, database_url: str | None
) -> None:
    """Run the Procfile locally behind a Heroku-compatible formation API.

    Without DATABASE_URL it starts the embedded Postgres (data in .pgdyno/) and migrates.
    Serves the dashboard on 127.0.0.1 beside it (its URL is printed). Ctrl-C stops everything.
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
    say = functools.partial(platform.dynos.write, "web")
    dashboard = start_local(url, say, port=web_port, reports_dir=settings.reports_dir)
    stop.wait()
    if dashboard is not None:
        dashboard.stop()
    platform.stop()


def register(group: click.Group) -> None:
    group.add_command(dev)
