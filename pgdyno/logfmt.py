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

import functools
import logging
import re
import sys
import threading
import time
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
    kind = type(value)  # the common types first, by identity: every job's line has six values
    if kind is int:
        return str(value)
    if kind is str:
        return _format_text(value) if len(value) <= 200 else _format_text_uncached(value)
    if value is None:
        return ""
    if kind is bool:
        return "true" if value else "false"
    if isinstance(value, float):  # digits, a point, a sign, inf or nan: nothing to escape
        return f"{value:.3f}".rstrip("0").rstrip(".")
    return _format_text_uncached(str(value))


def _format_text_uncached(text: str) -> str:
    text = redact(text)
    if len(text) > MAX_VALUE_CHARS:
        text = text[: MAX_VALUE_CHARS - 3] + "..."
    if _SAFE.match(text):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{_CONTROL.sub(_escape_control, escaped)}"'


#: Names repeat on every job's line (task, queue): their formatting is cached.
_format_text = functools.lru_cache(maxsize=4096)(_format_text_uncached)


def render(event: str, fields: dict[str, Any]) -> str:
    """`event=NAME key=value ...`; fields whose value is None are left out."""
    parts = [f"event={format_value(event)}"]
    parts.extend(
        f"{key}={format_value(value)}" for key, value in fields.items() if value is not None
    )
    return " ".join(parts)


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one event as a logfmt line; fields keep their order.

    The record carries no caller's file and line (finding them walked the stack: a fifth of
    the cost of a job's line), which the logfmt line never shows."""
    if not logger.isEnabledFor(level):
        return
    handler = _batching_handler(logger) if level < logging.WARNING else None
    if handler is not None:  # the worker's own lines: straight into the batch (see the class)
        handler.add_line(f"at={_LEVEL_NAMES.get(level, 'info')} {render(event, fields)}")
        return
    logger.handle(
        logger.makeRecord(logger.name, level, "", 0, event, (), None, extra={"logfmt": fields})
    )


_LEVEL_NAMES = {logging.DEBUG: "debug", logging.INFO: "info"}


def batch_handler(logger: logging.Logger, level: int = logging.INFO) -> BatchingHandler | None:
    """Where `logger`'s lines at `level` (INFO or DEBUG) go straight to, without a LogRecord:
    the batching handler, when `level` is enabled, the worker batches (`batching(True)`), and
    no filter could drop or change a record; else None (log with `log_event` then). A caller
    that writes many lines at once (the worker's job_done lines) asks once, renders them
    itself as `log_event` would, and adds them with `BatchingHandler.add_lines`."""
    if level >= logging.WARNING or not logger.isEnabledFor(level):
        return None
    return _batching_handler(logger)


def _batching_handler(logger: logging.Logger) -> BatchingHandler | None:
    """The one handler `logger`'s records would reach, when it is a batching BatchingHandler
    and no filter anywhere could drop or change a record; else None."""
    found: BatchingHandler | None = None
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters:
            return None
        for handler in current.handlers:
            if found is not None or not isinstance(handler, BatchingHandler):
                return None
            found = handler
        if not current.propagate:
            break
        current = current.parent
    if found is None or not found.batching or found.filters or found.level > logging.DEBUG:
        return None
    return found


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


class BatchingHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that, while `batching`, writes its lines a batch at a time.

    One write (a system call, on Heroku a pipe to the log router) per line cost a busy worker
    more than the line itself. While batching (the worker loop turns it on), INFO and DEBUG
    lines wait until MAX_LINES are pending, the oldest is MAX_DELAY_S old, a WARNING or worse
    comes (written at once, after the lines before it), or `flush()` is called: the worker loop
    flushes before it sleeps, and logging.shutdown at exit. A process killed with SIGKILL loses
    at most the lines of its last turn."""

    MAX_LINES = 256
    MAX_DELAY_S = 0.2

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        self.batching = False
        self._pending: list[str] = []
        self._since = 0.0

    def emit(self, record: logging.LogRecord) -> None:
        if not self.batching:
            super().emit(record)
            return
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self.add_line(line, urgent=record.levelno >= logging.WARNING)

    def add_line(self, line: str, urgent: bool = False) -> None:
        """Add a formatted line to the batch (log_event's shortcut for pgdyno's own INFO and
        DEBUG lines, when this handler is the only place they go: no LogRecord is made)."""
        with self.lock:  # type: ignore[union-attr]
            if not self._pending:
                self._since = time.monotonic()
            self._pending.append(line)
            if (
                not urgent
                and len(self._pending) < self.MAX_LINES
                and time.monotonic() - self._since < self.MAX_DELAY_S
            ):
                return
        self.flush()

    def add_lines(self, lines: list[str]) -> None:
        """Add formatted lines, in order, to the batch (one lock and one clock read for all:
        the worker's job_done lines of a turn); written as add_line would."""
        if not lines:
            return
        with self.lock:  # type: ignore[union-attr]
            now = time.monotonic()
            if not self._pending:
                self._since = now
            self._pending.extend(lines)
            if len(self._pending) < self.MAX_LINES and now - self._since < self.MAX_DELAY_S:
                return
        self.flush()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            pending, self._pending = self._pending, []
            if pending:
                pending.append("")  # the last line's terminator
                try:
                    self.stream.write(self.terminator.join(pending))
                except Exception:  # a closed or broken stream: as StreamHandler, say so
                    sys.stderr.write(f"pgdyno: could not write {len(pending) - 1} log lines\n")
            super().flush()


_handler_lock = threading.Lock()


def batching(on: bool) -> None:
    """Batch pgdyno's log lines (the worker loop, while it runs) or write each at once; turning
    it off writes what is pending."""
    with _handler_lock:
        for handler in logging.getLogger("pgdyno").handlers:
            if isinstance(handler, BatchingHandler):
                handler.flush()
                handler.batching = on


def flush() -> None:
    """Write pgdyno's pending log lines now (the worker loop, before it sleeps)."""
    for handler in logging.getLogger("pgdyno").handlers:
        if isinstance(handler, BatchingHandler) and handler.batching:
            handler.flush()


def configure(level: str = "INFO", stream: Any = None) -> None:
    """Send pgdyno's logs (and only one line per event) to stderr in logfmt.

    Log records then carry no thread or process names, which the lines never show: looking
    them up was a third of the cost of a record (pgdyno's own processes only: the CLI and the
    job processes call this, an application embedding pgdyno keeps its own logging)."""
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = BatchingHandler(stream or sys.stderr)
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
