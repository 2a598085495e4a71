"""Named SQL statements and migrations, shipped inside the package (pgdyno/sql/*.sql).

Every runtime statement of the core lives in a `.sql` file of this folder under a
`-- name: NAME` header; code asks for it with `query(NAME)`. Files are read through
`importlib.resources`, so an installed wheel finds them as a checkout does. A part with SQL of
its own (the demo shop) keeps its file beside its code and loads it with `load(package, file)`:
its names never mix with the core's. This module never builds SQL from values: callers bind
parameters (`%(name)s`).
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from typing import LiteralString, cast

from pgdyno.errors import ConfigError

#: The package whose folder holds the core statements and migrations/.
PACKAGE = __name__
_HEADER = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


def _trusted(text: object) -> LiteralString:
    """SQL text from pgdyno's own files, never from values: pgdyno takes responsibility for it
    (psycopg accepts only literal strings as queries)."""
    return cast(LiteralString, text)


def sql_dir() -> Traversable:
    """The folder of the core statements (inside the installed package)."""
    return resources.files(PACKAGE)


def parse(text: str, origin: str = "<sql>") -> dict[str, LiteralString]:
    """Split a file into {name: statement}; a name defined twice is an error."""
    statements: dict[str, LiteralString] = {}
    parts = _HEADER.split(text)
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in statements:
            raise ConfigError(f"SQL statement {name!r} is defined twice in {origin}")
        statements[name] = _trusted(body.strip().rstrip(";").strip())
    return statements


@cache
def load(package: str, filename: str) -> dict[str, LiteralString]:
    """The named statements of one file shipped in `package` (e.g. "pgdyno.demo", "shop.sql")."""
    resource = resources.files(package) / filename
    return parse(resource.read_text(encoding="utf-8"), f"{package}/{filename}")


@cache
def _core_statements() -> dict[str, LiteralString]:
    statements: dict[str, LiteralString] = {}
    files = sorted(
        (entry for entry in sql_dir().iterdir() if entry.name.endswith(".sql")),
        key=lambda entry: entry.name,
    )
    if not files:
        raise ConfigError(
            f"no SQL files found in the {PACKAGE} package: this pgdyno installation is "
            "incomplete; reinstall it (pip install --force-reinstall pgdyno)"
        )
    for entry in files:
        for name, body in load(PACKAGE, entry.name).items():
            if name in statements:
                raise ConfigError(f"SQL statement {name!r} is defined in two files of {PACKAGE}")
            statements[name] = body
    return statements


def query(name: str) -> LiteralString:
    """The core statement called `name`, ready to execute with bound parameters.

    Raises ConfigError for an unknown name (a programming error, named in the message).
    """
    try:
        return _core_statements()[name]
    except KeyError:
        raise ConfigError(f"no SQL statement named {name!r} in {PACKAGE}") from None


def migrations(folder: Traversable | None = None) -> list[tuple[int, str, LiteralString]]:
    """(version, name, sql) for each file in migrations/, in version order.

    Raises ConfigError when the folder holds no migration (an incomplete installation) or a
    file is not named NNNN_name.sql.
    """
    root = folder if folder is not None else sql_dir() / "migrations"
    found: list[tuple[int, str, LiteralString]] = []
    entries = [entry for entry in root.iterdir() if entry.name.endswith(".sql")]
    for entry in entries:
        stem = entry.name.removesuffix(".sql")
        version, _, name = stem.partition("_")
        if not version.isdigit():
            raise ConfigError(f"migration file {entry.name} must be named NNNN_name.sql")
        found.append((int(version), name, _trusted(entry.read_text(encoding="utf-8"))))
    if not found:
        raise ConfigError(
            "no migrations found in the pgdyno package: this installation is incomplete; "
            "reinstall pgdyno (pip install --force-reinstall pgdyno)"
        )
    return sorted(found)
