"""Options and helpers shared by the command modules."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click
import psycopg

from pgdyno.config import Settings, parse_duration
from pgdyno.db import connect
from pgdyno.errors import ConfigError
from pgdyno.migrate import require_migrated

F = TypeVar("F", bound=Callable[..., Any])


def database_option(fn: F) -> F:
    """--database-url, overriding DATABASE_URL."""
    return click.option(
        "--database-url",
        metavar="URL",
        default=None,
        help="Postgres URL (default: $DATABASE_URL).",
    )(fn)


class Duration(click.ParamType):  # type: ignore[type-arg]
    """A duration flag (`250ms`, `30s`, `5m`, `2h`, `7d`, plain seconds) -> seconds, read by
    config.parse_duration; a bad value is a usage error naming the flag, never a traceback."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, float):
            return value
        try:
            return parse_duration(value, param.opts[0] if param else "duration")
        except ConfigError as exc:
            self.fail(str(exc), param, ctx)


DURATION = Duration()


@contextmanager
def connection(
    database_url: str | None, *, migrated: bool = True, **settings: Any
) -> Iterator[psycopg.Connection]:
    """An autocommit connection to the configured database, closed afterwards.

    With `migrated` (every command but `migrate`), SchemaNotMigrated unless the schema is
    current: one line that says to run `pgdyno migrate`, not a traceback on the first query.
    """
    config = Settings.from_env(database_url=database_url, **settings)
    conn = connect(config.require_database_url(), application_name="pgdyno cli")
    try:
        if migrated:
            require_migrated(conn)
        yield conn
    finally:
        conn.close()


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str, sort_keys=False))
