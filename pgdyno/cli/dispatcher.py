"""`pgdyno dispatcher`: scales process types up as jobs arrive (on the always-on dyno)."""

from __future__ import annotations

import sys

import click

from pgdyno.cli.common import DURATION, database_option
from pgdyno.clock import SYSTEM_CLOCK
from pgdyno.config import Settings
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
    type=DURATION,
    default=None,
    help="Safety-net reconcile period, e.g. 5s [env PGDYNO_RECONCILE_INTERVAL].",
)
@click.option(
    "--debounce",
    type=DURATION,
    default=None,
    help="Coalescing period for notification bursts, e.g. 0.5s [env PGDYNO_DEBOUNCE].",
)
@click.option(
    "--import",
    "-i",
    "modules",
    multiple=True,
    help="Module whose @pgdyno.periodic schedules this dispatcher keeps in pgdyno.schedules "
    "(repeatable; from the working directory, the app root).",
)
@database_option
def dispatcher(
    scale_rules: tuple[str, ...],
    reconcile_interval: float | None,
    debounce: float | None,
    modules: tuple[str, ...],
    database_url: str | None,
) -> None:
    """Spin process types up the instant jobs arrive (run it on the always-on dyno), and
    enqueue scheduled runs (pgdyno.schedules) on time."""
    from pgdyno import tasks
    from pgdyno.cli.worker import app_root_importable
    from pgdyno.scaling.dispatcher import Dispatcher
    from pgdyno.scaling.formation import backend_from_settings
    from pgdyno.scaling.policy import parse_rule, policies
    from pgdyno.schedules.declare import declared
    from pgdyno.schedules.runner import ScheduleRunner

    settings = Settings.from_env(
        database_url=database_url, reconcile_interval=reconcile_interval, debounce=debounce
    )
    try:
        rules = [parse_rule(text, settings.linger) for text in scale_rules]
        policies(rules)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--scale") from None
    settings.require_database_url()
    if modules:
        app_root_importable()
        tasks.import_modules(modules)
        declared()  # two schedules of one name: refused now, not once leading
    # Only a dispatcher given the modules knows every Python schedule: it alone removes the
    # rows of those no longer declared.
    schedules = ScheduleRunner(SYSTEM_CLOCK, declared, prune=bool(modules))
    runner = Dispatcher(settings, rules, backend_from_settings(settings), schedules=schedules)
    runner.install_signal_handlers()
    sys.exit(runner.run())


def register(group: click.Group) -> None:
    group.add_command(dispatcher)
