"""`pgdyno dispatcher` (scales process types up as jobs arrive) and `pgdyno dev` (the local
platform)."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

import click

from pgdyno.cli.common import database_option
from pgdyno.config import Settings, parse_duration
from pgdyno.errors import ConfigError


@click.command()
@click.option(
    "--scale",
    "scale_rules",
    multiple=True,
    required=True,
    metavar="QUEUE=TYPE[,max=N][,per=N][,size=NAME][,linger=SECONDS]",
    help="Scale TYPE for jobs in QUEUE (repeatable). max: most dynos (1); per: jobs "
    "per dyno (1); size: dyno size; linger: idle time before zero (30s).",
)
@click.option(
    "--reconcile-interval",
    default=None,
    help="Safety-net reconcile period, e.g. 5s [env PGDYNO_RECONCILE_INTERVAL].",
)
@click.option(
    "--debounce",
    default=None,
    help="Coalescing period for notification bursts, e.g. 0.5s [env PGDYNO_DEBOUNCE].",
)
@database_option
def dispatcher(
    scale_rules: tuple[str, ...],
    reconcile_interval: str | None,
    debounce: str | None,
    database_url: str | None,
) -> None:
    """Spin process types up the instant jobs arrive (run it on the always-on dyno)."""
    from pgdyno.dispatcher import Dispatcher
    from pgdyno.formation import backend_from_settings
    from pgdyno.scaling import parse_rule, policies

    settings = Settings.from_env(
        database_url=database_url, reconcile_interval=reconcile_interval, debounce=debounce
    )
    try:
        rules = [parse_rule(text, settings.linger) for text in scale_rules]
        policies(rules)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--scale") from None
    settings.require_database_url()
    runner = Dispatcher(settings, rules, backend_from_settings(settings))
    runner.install_signal_handlers()
    sys.exit(runner.run())


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


def start_embedded_postgres() -> str:
    """The embedded server in .pgdyno/postgres, started and migrated; returns its URL."""
    from pgdyno.db import connect
    from pgdyno.embedded import EmbeddedPostgres
    from pgdyno.migrate import migrate

    url = EmbeddedPostgres(Path(".pgdyno") / "postgres").start()
    with connect(url) as conn:
        migrate(conn)
    return url


def register(group: click.Group) -> None:
    group.add_command(dispatcher)
    group.add_command(dev)
