"""`pgdyno dev`: the local platform, the Procfile's process types behind a formation API.

Ctrl-C (or SIGTERM) stops every dyno as a scale-down would (SIGTERM, SIGKILL after the kill
timeout), then the embedded Postgres if this command started it; a second Ctrl-C kills the
dynos at once.
"""

from __future__ import annotations

import functools
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import click

from pgdyno import signals
from pgdyno.cli.common import DURATION, database_option
from pgdyno.config import Settings
from pgdyno.platform.postgres import EmbeddedPostgres, start_embedded_postgres
from pgdyno.web.local import start_local

if TYPE_CHECKING:
    from pgdyno.platform import LocalPlatform


@click.command()
@click.option(
    "--procfile",
    default="Procfile",
    show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Its folder is the app root: each line runs there, as on Heroku.",
)
@click.option("--port", type=int, default=0, help="Formation API port (default: any free one).")
@click.option("--web-port", type=int, default=0, help="Dashboard port (default: any free one).")
@click.option(
    "--kill-timeout",
    type=DURATION,
    default="30s",
    show_default=True,
    help="Time between SIGTERM and SIGKILL when a dyno is stopped.",
)
@click.option(
    "--boot-time",
    type=DURATION,
    default="0s",
    show_default=True,
    help="Simulated dyno boot: each dyno's command starts this long after it (Heroku: 20-60s).",
)
@click.option(
    "--api-rate-limit",
    type=click.IntRange(min=1),
    default=None,
    help="Answer 429 once this many API requests are spent, refilled hourly (Heroku: 4500). "
    "Default: no limit.",
)
@click.option(
    "--app",
    default="pgdyno-local",
    show_default=True,
    help="The app's name in the API (HEROKU_APP_NAME of the dynos; `heroku ... -a APP`).",
)
@click.option(
    "--api-token",
    envvar="PGDYNO_DEV_API_TOKEN",
    default=None,
    help="The API's token (HEROKU_API_KEY of the dynos and of the heroku CLI pointed here) "
    "[env PGDYNO_DEV_API_TOKEN; default: a random one, printed].",
)
@database_option
def dev(
    procfile: Path,
    port: int,
    web_port: int,
    kill_timeout: float,
    boot_time: float,
    api_rate_limit: int | None,
    app: str,
    api_token: str | None,
    database_url: str | None,
) -> None:
    """Run the Procfile locally behind a Heroku-compatible formation API.

    Without DATABASE_URL it starts the embedded Postgres (data in .pgdyno/ beside the
    Procfile), migrates, and prints the DATABASE_URL to use from another shell. Serves the
    dashboard on 127.0.0.1 beside it (its URL is printed). Ctrl-C stops everything, the
    embedded Postgres included; a second Ctrl-C kills the dynos at once.
    """
    from pgdyno.platform import LocalPlatform

    settings = Settings.from_env(database_url=database_url)
    app_root = procfile.resolve().parent
    embedded: EmbeddedPostgres | None = None
    url = settings.database_url
    if not url:
        embedded = EmbeddedPostgres(app_root / ".pgdyno" / "postgres")
        was_running = embedded.is_running()
        url = start_embedded_postgres(embedded)
        if was_running:
            embedded = None  # someone else's (make run, another pgdyno dev): leave it up
        click.echo(
            f"{'dev':<10} | embedded Postgres in {app_root / '.pgdyno'}; from another shell:"
        )
        click.echo(f"{'dev':<10} |   export DATABASE_URL={url}")
    try:
        platform = LocalPlatform(
            procfile,
            url,
            port=port,
            kill_timeout=kill_timeout,
            boot_time=boot_time,
            rate_limit=api_rate_limit,
            app=app,
            token=api_token,
        )
        # The dynos run in the app root, so a relative reports folder is resolved there too.
        _serve(platform, url, web_port, str(app_root / settings.reports_dir))
    finally:
        if embedded is not None:
            embedded.stop()
            click.echo(f"{'dev':<10} | embedded Postgres stopped")


def _serve(platform: LocalPlatform, url: str, web_port: int, reports_dir: str) -> None:
    """Start the platform, wait for Ctrl-C or SIGTERM, stop it; a second one kills at once."""
    stop = threading.Event()

    def handle(signum: signal.Signals) -> None:
        name = signum.name
        if not stop.is_set():
            stop.set()
            platform.dynos.event(
                "shutdown_requested",
                signal=name,
                msg="stopping every dyno; press Ctrl-C again to kill them at once",
            )
        else:
            platform.dynos.event("kill_requested", signal=name, msg="killing every dyno now")
            platform.dynos.kill_now()

    signals.install(handle)  # for the rest of the process: dev exits after this
    dashboard = None
    try:
        platform.start()
        # The official Heroku CLI (and heroku3, heroku-client) work against the local API.
        platform.dynos.printer.write(
            "dev",
            f"heroku CLI: HEROKU_HOST={platform.url} HEROKU_API_KEY={platform.token} "
            f"heroku ps -a {platform.app}",
        )
        say = functools.partial(platform.dynos.printer.write, "web")
        dashboard = start_local(url, say, port=web_port, reports_dir=reports_dir)
        stop.wait()
    finally:
        if dashboard is not None:
            dashboard.stop()
        platform.stop()


def register(group: click.Group) -> None:
    group.add_command(dev)
