"""Reads a Procfile: `type: command` per line, as Heroku does."""

from __future__ import annotations

import re
from pathlib import Path

from pgdyno.errors import ConfigError

_LINE = re.compile(r"^([A-Za-z0-9_-]+):\s*(.+)$")


def parse(text: str, origin: str = "Procfile") -> dict[str, str]:
    """{process type: command}, in file order; blank lines and # comments are skipped."""
    commands: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if not match:
            raise ConfigError(f"{origin}:{number}: expected 'type: command', got {raw!r}")
        name, command = match.groups()
        if name in commands:
            raise ConfigError(f"{origin}:{number}: process type {name!r} is defined twice")
        commands[name] = command.strip()
    if not commands:
        raise ConfigError(f"{origin} defines no process types")
    return commands


def load(path: Path | str) -> dict[str, str]:
    path = Path(path)
    try:
        return parse(path.read_text(), str(path))
    except FileNotFoundError:
        raise ConfigError(f"no Procfile at {path}: pass --procfile PATH") from None
