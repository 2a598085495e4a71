"""One-line logfmt records (`at=info event=job_done job=42 duration_ms=12`), as Heroku users read,
and the redaction of secrets from any text pgdyno shows.

Code logs with `log_event(logger, "job_done", job=42)`; the formatter renders the event and its
fields. Callers pass no tokens and no DSNs (driver errors are logged by their first line,
db.first_line, which never holds the password); as a safety net every value is still passed
through `redact` (URL credentials, `password=` values), escaped (control characters, which a
client can put in a task name, cannot forge a line or drive a terminal) and cut to
MAX_VALUE_CHARS.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

_SAFE = re.compile(r"^[^\s\"=\x00-\x1f\x7f-\x9f]+$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_LEVELS = {"WARNING": "warn", "CRITICAL": "fatal"}
#: The longest value written (characters); longer ones end with "...".
MAX_VALUE_CHARS = 2000


def _escape_control(match: re.Match[str]) -> str:
    char = match.group(0)
    return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(char, f"\\x{ord(char):02x}")


def format_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        value = f"{value:.3f}".rstrip("0").rstrip(".")
    text = redact(str(value))
    if len(text) > MAX_VALUE_CHARS:
        text = text[: MAX_VALUE_CHARS - 3] + "..."
    if _SAFE.match(text):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{_CONTROL.sub(_escape_control, escaped)}"'


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
# A URL's userinfo: user, and a password that runs to the last @ before the host (an unencoded
# @ in a password included).
_USERINFO = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<user>[^\s/@:'\"]*)(?::(?P<password>[^\s/'\"]*))?@"
)


def _userinfo(match: re.Match[str]) -> str:
    scheme, user = match["scheme"], match["user"]
    if match["password"] is not None:
        return f"{scheme}://{user}:***@"
    if scheme.lower().startswith("postgres"):
        return match.group(0)  # a database user name is no secret
    return f"{scheme}://***@"  # https://TOKEN@host: the user part is the credential


def redact(text: str) -> str:
    """`text` with URL credentials (`scheme://user:***@`, `https://***@`) and `password=`
    values replaced by ***: safe to log, store in a row or show."""
    if "://" not in text and "assword" not in text.lower():
        return text
    return _PASSWORD_VALUE.sub(r"\1***", _USERINFO.sub(_userinfo, text))


def redact_dsn(dsn: str) -> str:
    """The DSN (URL or keyword form) with any password replaced by ***, safe to log or show."""
    return redact(dsn)
