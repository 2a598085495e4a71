"""Named SQL statements and migrations, shipped inside the package (pgdyno/sql/*.sql).

Every runtime statement of the core lives in a `.sql` file of this folder under a
`-- name: NAME` header; code asks for it with `query(NAME)`, which parses only the files whose
text holds the name (a worker's start never parses the web's or the reports' statements), each
once per process. Files are read from the package's folder (through `importlib.resources`
when the package is not in the file system), so an installed wheel finds them as a checkout
does. A part with SQL of
its own (the demo shop) keeps its file beside its code and loads it with `load(package, file)`:
its names never mix with the core's. This module never builds SQL from values: callers bind
parameters (`%(name)s`).
"""

from __future__ import annotations

import re
import threading
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
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
    """The folder of the core statements (inside the installed package): this module's own
    folder when the package lies in the file system (a checkout, an installed wheel), which
    spares every process importlib.resources' readers (~0.7 ms of a worker's start); else
    (a zipped package) what importlib.resources finds."""
    here = Path(__file__).parent
    if (here / "queue.sql").is_file():
        return here
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
def _core_texts() -> dict[str, str]:
    """{file name: text} of the core's .sql files, in name order (read once, ~56 KB)."""
    files = sorted(
        (entry for entry in sql_dir().iterdir() if entry.name.endswith(".sql")),
        key=lambda entry: entry.name,
    )
    if not files:
        raise ConfigError(
            f"no SQL files found in the {PACKAGE} package: this pgdyno installation is "
            "incomplete; reinstall it (pip install --force-reinstall pgdyno)"
        )
    return {entry.name: entry.read_text(encoding="utf-8") for entry in files}


class _Statements:
    """The core statements parsed so far, a file at a time, as names are asked for."""

    def __init__(self) -> None:
        self.known: dict[str, LiteralString] = {}
        self._parsed: set[str] = set()
        self._lock = threading.Lock()  # the worker's threads may ask for a name at once

    def find(self, name: str) -> LiteralString | None:
        """Parse the files not parsed yet whose text holds `name` until one defines it."""
        with self._lock:
            for filename, text in _core_texts().items():
                if name in self.known:
                    break
                if filename not in self._parsed and name in text:
                    self._add(filename, text)
            return self.known.get(name)

    def everything(self) -> dict[str, LiteralString]:
        """All the core statements (every file parsed)."""
        with self._lock:
            for filename, text in _core_texts().items():
                if filename not in self._parsed:
                    self._add(filename, text)
            return dict(self.known)

    def _add(self, filename: str, text: str) -> None:
        statements = parse(text, f"{PACKAGE}/{filename}")
        for name in statements:
            if name in self.known:
                raise ConfigError(f"SQL statement {name!r} is defined in two files of {PACKAGE}")
        self.known.update(statements)
        self._parsed.add(filename)


_statements = _Statements()


def query(name: str) -> LiteralString:
    """The core statement called `name`, ready to execute with bound parameters.

    Raises ConfigError for an unknown name (a programming error, named in the message).
    """
    statement = _statements.known.get(name)
    if statement is None:
        statement = _statements.find(name)
        if statement is None:
            raise ConfigError(f"no SQL statement named {name!r} in {PACKAGE}")
    return statement


def statements() -> dict[str, LiteralString]:
    """{name: statement} of every core statement; raises ConfigError for a name that two
    files define (query() finds it in the first file that does, in name order)."""
    return _statements.everything()


def migrations(folder: Traversable | None = None) -> list[tuple[int, str, LiteralString]]:
    """(version, name, sql) for each file in migrations/, in version order.

    Raises ConfigError when the folder holds no migration (an incomplete installation) or a
    file is not named NNNN_name.sql.
    """
    return [
        (version, name, _trusted(entry.read_text(encoding="utf-8")))
        for version, name, entry in _migration_files(folder)
    ]


def migration_versions(folder: Traversable | None = None) -> list[int]:
    """The versions migrations() would return, from the file names alone (nothing is read:
    the check every worker and command makes after connecting needs no more). Raises as
    migrations() does."""
    return [version for version, _, _ in _migration_files(folder)]


def _migration_files(folder: Traversable | None) -> list[tuple[int, str, Traversable]]:
    root = folder if folder is not None else sql_dir() / "migrations"
    found: list[tuple[int, str, Traversable]] = []
    entries = [entry for entry in root.iterdir() if entry.name.endswith(".sql")]
    for entry in entries:
        stem = entry.name.removesuffix(".sql")
        version, _, name = stem.partition("_")
        if not version.isdigit():
            raise ConfigError(f"migration file {entry.name} must be named NNNN_name.sql")
        found.append((int(version), name, entry))
    if not found:
        raise ConfigError(
            "no migrations found in the pgdyno package: this installation is incomplete; "
            "reinstall pgdyno (pip install --force-reinstall pgdyno)"
        )
    return sorted(found, key=lambda each: each[:2])
