"""Named SQL statements, loaded from the `sql/` folder.

Every runtime statement lives in a `.sql` file under a `-- name: NAME` header; code asks for it
by name. This module never builds SQL from values: callers bind parameters (`%(name)s`).
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from pgdyno.errors import ConfigError

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
_HEADER = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


def parse(text: str, origin: str = "<sql>") -> dict[str, str]:
    """Split a file into {name: statement}; a name defined twice is an error."""
    statements: dict[str, str] = {}
    parts = _HEADER.split(text)
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in statements:
            raise ConfigError(f"SQL statement {name!r} is defined twice in {origin}")
        statements[name] = body.strip().rstrip(";").strip()
    return statements


@cache
def _all_statements() -> dict[str, str]:
    statements: dict[str, str] = {}
    for path in sorted(SQL_DIR.glob("*.sql")):
        for name, body in parse(path.read_text(), str(path)).items():
            if name in statements:
                raise ConfigError(f"SQL statement {name!r} is defined in two files under {SQL_DIR}")
            statements[name] = body
    return statements


def query(name: str) -> str:
    """The statement called `name`, ready to execute with bound parameters."""
    try:
        return _all_statements()[name]
    except KeyError:
        raise ConfigError(f"no SQL statement named {name!r} under {SQL_DIR}") from None


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) for each file in sql/migrations, in version order."""
    found = []
    for path in sorted((SQL_DIR / "migrations").glob("*.sql")):
        version, _, name = path.stem.partition("_")
        if not version.isdigit():
            raise ConfigError(f"migration file {path.name} must be named NNNN_name.sql")
        found.append((int(version), name, path.read_text()))
    return found
