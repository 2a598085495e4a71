"""One-line logfmt records (`at=info event=job_done job=42 duration_ms=12`), as Heroku users read.

Code logs with `log_event(logger, "job_done", job=42)`; the formatter renders the event and its
fields. Secrets never reach here: callers pass no tokens and no DSNs (driver errors are logged
by their first line, db.first_line, which never holds the password).
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

_SAFE = re.compile(r"^[^\s\"=]+$")
_LEVELS = {"WARNING": "warn", "CRITICAL": "fatal"}


def format_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        value = f"{value:.3f}".rstrip("0").rstrip(".")
    text = str(value)
    if _SAFE.match(text):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def render(event: str, fields: dict[str, Any]) -> str:
    """`event=NAME key=value ...`; fields whose value is None are left out."""
    parts = [f"event={format_value(event)}"]
    parts.extend(
        f"{key}={format_value(value)}" for key, value in fields.items() if value is not None
    )
    return " ".join(parts)


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one event as a logfmt line; fields keep their order."""
    if logger.isEnabledFor(level):
        logger.log(level, event, extra={"logfmt": fields})


class LogfmtFormatter(logging.Formatter):
    """Renders records as `at=LEVEL event=... key=value`; plain messages become `msg=`."""

    def format(self, record: logging.LogRecord) -> str:
        level = _LEVELS.get(record.levelname, record.levelname.lower())
        fields = getattr(record, "logfmt", None)
        if fields is None:
            message = format_value(record.getMessage())
            line = f"at={level} event=log logger={record.name} msg={message}"
        else:
            line = f"at={level} {render(record.msg, fields)}"
        if record.exc_info:
            exc = record.exc_info[1]
            line += f" error={format_value(f'{type(exc).__name__}: {exc}')}"
        return line


def configure(level: str = "INFO", stream: Any = None) -> None:
    """Send pgdyno's logs (and only one line per event) to stderr in logfmt."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(LogfmtFormatter())
    root = logging.getLogger("pgdyno")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


# A keyword DSN's password: a quoted value (spaces and \' allowed inside) or a bare word; in a
# URL's query string it ends at the next &.
_PASSWORD_VALUE = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]+)", re.IGNORECASE)


def redact_dsn(dsn: str) -> str:
    """The DSN (URL or keyword form) with any password replaced by ***, safe to log or show."""
    dsn = re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", dsn)
    return _PASSWORD_VALUE.sub(r"\1***", dsn)
