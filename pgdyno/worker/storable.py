"""What a job's outcome may put in the database, checked before the worker writes it.

Postgres refuses text with a NUL character, JSON with a lone surrogate (`\\ud800`) and values
too big for one message, and a refused value fails the whole statement: the worker's batch of
finished jobs, or the worker itself. So every value a task produces passes through here first:

- `storable_json(value)`: a result or progress as JSON text jsonb accepts, at most `limit`
  bytes, or ValueError saying why not and how big it is (never any other exception: a value
  whose `__str__`, `__iter__` or keys misbehave is refused too);
- `storable_text(text)`: any text made safe for a text column: NUL shown as `\\x00`, lone
  surrogates as `\\udXXX` escapes, cut to a length;
- `exception_text(exc)`: `Type: message` of an exception, even when its `__str__` raises.

Limits (documented in the README): a result at most MAX_RESULT_BYTES (1 MiB) of JSON, progress
at most MAX_PROGRESS_BYTES (64 KiB). Big outputs belong in a store (reports have three).
"""

from __future__ import annotations

import json
import re
from typing import Any

#: The largest result a job may store, in bytes of JSON text.
MAX_RESULT_BYTES = 1024 * 1024
#: The largest progress a running job may publish, in bytes of JSON text.
MAX_PROGRESS_BYTES = 64 * 1024
#: A value over its limit is measured up to this many times the limit (to say how big it is),
#: then refused without encoding the rest.
MEASURE_UP_TO = 16

# An escaped NUL (\u0000) that is not itself an escaped backslash followed by "u0000".
_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
_ADVICE = "; give JSON-compatible data"
_ENCODER = json.JSONEncoder(default=str, allow_nan=False, ensure_ascii=False)


class _TooBig(Exception):
    """The value's JSON is over the limit: `size` characters (exact, or where counting
    stopped)."""

    def __init__(self, size: int, *, exact: bool) -> None:
        super().__init__(size)
        self.size, self.exact = size, exact


def _size(n: int) -> str:
    """1234567 -> '1.2 MiB' (binary units, as the worker's logs use)."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def storable_json(value: Any, what: str = "result", limit: int = MAX_RESULT_BYTES) -> str:
    """`value` as JSON text that a jsonb column accepts, of at most `limit` bytes (UTF-8).

    Raises ValueError, saying why, for anything else: NaN and Infinity (not JSON), keys that
    are not strings or numbers, circular references, values whose str() raises, the NUL
    character and lone surrogates (which jsonb refuses), and values over `limit`. Text past the
    limit is only counted, and counting stops at MEASURE_UP_TO times the limit, so a huge
    value costs a bounded amount of work and memory, not its whole size.
    """
    pieces: list[str] = []
    length = 0
    try:
        if isinstance(value, str | bytes) and len(value) > limit * MEASURE_UP_TO:
            raise _TooBig(len(value), exact=False)
        for piece in _ENCODER.iterencode(value):
            length += len(piece)  # characters: a lower bound of the bytes
            if length <= limit:
                pieces.append(piece)
            elif length > limit * MEASURE_UP_TO:
                raise _TooBig(length, exact=False)
        if length > limit:
            raise _TooBig(length, exact=True)
    except _TooBig as big:
        measured = f"{'' if big.exact else 'over '}{_size(big.size)} of JSON"
        raise ValueError(
            f"the {what} cannot be stored: it is {measured}, over the {_size(limit)} limit of a "
            f"job's {what}; store big outputs elsewhere and return a reference"
        ) from None
    except RecursionError:
        raise ValueError(
            f"the {what} cannot be stored as JSON: it is nested too deeply{_ADVICE}"
        ) from None
    except Exception as exc:  # NaN (ValueError), bad keys (TypeError), a str() that raises...
        raise ValueError(
            f"the {what} cannot be stored as JSON: {exception_text(exc)}{_ADVICE}"
        ) from None
    text = "".join(pieces)
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        char = text[exc.start]
        raise ValueError(
            f"the {what} cannot be stored as JSON: it contains a lone surrogate "
            f"(U+{ord(char):04X}), which is not valid Unicode and which Postgres jsonb refuses"
            f"{_ADVICE}"
        ) from None
    if _JSON_NUL.search(text):
        raise ValueError(
            f"the {what} cannot be stored as JSON: it contains a NUL character "
            f"(\\u0000), which Postgres jsonb refuses{_ADVICE}"
        )
    if size > limit:
        raise ValueError(
            f"the {what} cannot be stored: it is {_size(size)} of JSON, over the "
            f"{_size(limit)} limit of a job's {what}; store big outputs elsewhere and return "
            "a reference"
        )
    return text


def storable_text(text: str, limit: int | None = None) -> str:
    """`text` as a Postgres text column accepts it: NUL written `\\x00`, lone surrogates as
    backslash escapes; cut to `limit` characters."""
    safe = text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    return safe if limit is None else safe[:limit]


def unstorable(text: str) -> bool:
    """Whether a text column would refuse `text` (a NUL character or a lone surrogate)."""
    return storable_text(text) != text


def exception_text(exc: BaseException) -> str:
    """`Type: message`, even for an exception whose __str__ raises (the message is replaced by
    a note saying so). The text may still hold a NUL or a surrogate: see storable_text."""
    return f"{_safe_type_name(exc)}: {_message(exc)[0]}".strip()


def unreadable(exc: BaseException) -> bool:
    """Whether the exception's message cannot be read (its __str__ raises or is not text)."""
    return not _message(exc)[1]


def _message(exc: BaseException) -> tuple[str, bool]:
    try:
        message = str(exc)
    except BaseException as broken:  # any error from user code is a value here
        return f"<str() of the exception raised {_safe_type_name(broken)}>", False
    if not isinstance(message, str):  # a __str__ returning something else
        return "<str() of the exception did not return text>", False
    return message, True


def _safe_type_name(exc: BaseException) -> str:
    try:
        return str(type(exc).__name__)
    except BaseException:
        return "Exception"
