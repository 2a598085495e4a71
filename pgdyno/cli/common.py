"""Options and helpers shared by the command modules."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click
import psycopg

from pgdyno.config import Settings
from pgdyno.db import connect

F = TypeVar("F", bound=Callable[..., Any])


def database_option(fn: F) -> F:
    """--database-url, overriding DATABASE_URL."""
    return click.option(
        "--database-url",
        metavar="URL",
        default=None,
        help="Postgres URL (default: $DATABASE_URL).",
    )(fn)


@contextmanager
def connection(database_url: str | None, **settings: Any) -> Iterator[psycopg.Connection]:
    """An autocommit connection to the configured database, closed afterwards."""
    config = Settings.from_env(database_url=database_url, **settings)
    conn = connect(config.require_database_url(), application_name="pgdyno cli")
    try:
        yield conn
    finally:
        conn.close()


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str, sort_keys=False))
