"""`pgdyno web`: the dashboard and /metrics, served with waitress."""

from __future__ import annotations

import os

import click

from pgdyno.cli.common import database_option
from pgdyno.config import Settings

DEFAULT_PORT = 8080


@click.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind. Anything but loopback needs PGDYNO_WEB_PASSWORD or PGDYNO_WEB_TOKEN.",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=None,
    help=f"Port (default: $PORT, else {DEFAULT_PORT}).",
)
@click.option(
    "--read-only",
    is_flag=True,
    default=None,
    help="No actions (retry, cancel, pause, resume), read-only database sessions "
    "($PGDYNO_WEB_READ_ONLY).",
)
@database_option
def web(host: str, port: int | None, read_only: bool | None, database_url: str | None) -> None:
    """Serve the dashboard: queues, process types, the scaling timeline, jobs, reports and
    Prometheus metrics at /metrics."""
    try:
        from pgdyno.web.app import create_app
        from pgdyno.web.auth import Credentials
        from pgdyno.web.server import serve
    except ImportError as exc:
        raise click.ClickException(
            f"the dashboard needs its extra: pip install 'pgdyno[web]' ({exc.name} is missing)"
        ) from None
    settings = Settings.from_env(database_url=database_url)
    if read_only is None:
        read_only = os.environ.get("PGDYNO_WEB_READ_ONLY", "").lower() in ("1", "true", "on")
    app = create_app(
        settings.require_database_url(),
        credentials=Credentials.from_env(),
        read_only=read_only,
        reports_dir=settings.reports_dir,
    )
    if port is None:
        port = int(os.environ.get("PORT") or DEFAULT_PORT)
    serve(app, host, port, announce=lambda url: click.echo(f"pgdyno dashboard at {url}"))


def register(group: click.Group) -> None:
    group.add_command(web)
