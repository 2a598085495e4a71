"""The local platform's output: every dyno's lines and the platform's own events, interleaved
with `winston.1 |` prefixes like foreman and honcho. Owns all writing, under one lock."""

from __future__ import annotations

import threading
from typing import Any, TextIO

from pgdyno.logfmt import render

#: Width of the prefix column (`winston.1 ` before the bar).
PREFIX_WIDTH = 10


class Printer:
    """Writes `PREFIX | line` to `output`, one whole line at a time, flushed."""

    def __init__(self, output: TextIO) -> None:
        self._output = output
        self._lock = threading.Lock()

    def write(self, prefix: str, line: str) -> None:
        with self._lock:
            self._output.write(f"{prefix:<{PREFIX_WIDTH}} | {line}\n")
            self._output.flush()

    def event(self, name: str, fields: dict[str, Any]) -> None:
        """A platform event as a logfmt line under the `platform` prefix."""
        self.write("platform", render(name, fields))
