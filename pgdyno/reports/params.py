"""Report parameter types: turn a job's JSON value (or a CLI string) into a typed Python value.

The typed value goes to the driver, which quotes it as a literal of the right type; values are
never formatted into SQL here. A value that does not fit its declared type is refused with a
message naming the parameter, the type and an example, so the job fails without a retry.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from pgdyno.errors import InvalidReport

_INTEGER = re.compile(r"^\s*[+-]?\d+\s*$")
_TRUE = {"true", "t", "yes", "y", "on", "1"}
_FALSE = {"false", "f", "no", "n", "off", "0"}
_BIGINT = 2**63


def _text(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError
    return str(value)


def _integer(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and _INTEGER.match(value):
        value = int(value)
    if not isinstance(value, int) or not -_BIGINT <= value < _BIGINT:
        raise ValueError
    return value


def _numeric(value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError from None
    if not number.is_finite():
        raise ValueError
    return number


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError


def _date(value: Any) -> date:
    if not isinstance(value, str):
        raise ValueError
    return date.fromisoformat(value.strip())


def _timestamp(value: Any) -> datetime:
    if not isinstance(value, str):
        raise ValueError
    return datetime.fromisoformat(value.strip())


#: type name -> (converter, example shown in errors)
_SCALARS: dict[str, tuple[Callable[[Any], Any], str]] = {
    "text": (_text, '"north"'),
    "integer": (_integer, "42"),
    "numeric": (_numeric, '"12.50"'),
    "boolean": (_boolean, "true"),
    "date": (_date, '"2026-01-31"'),
    "timestamp": (_timestamp, '"2026-01-31T08:00:00"'),
    "timestamptz": (_timestamp, '"2026-01-31T08:00:00+00:00"'),
}
_ALIASES = {
    "int": "integer",
    "bigint": "integer",
    "int8": "integer",
    "int4": "integer",
    "decimal": "numeric",
    "bool": "boolean",
    "varchar": "text",
}


def array_items(value: Any) -> list[Any]:
    """A JSON list, a Postgres array literal `{SE,DE}` / `{"a b","c"}`, or a comma-separated
    string `SE,DE` (as `--param countries=SE,DE` gives) -> its items; ValueError otherwise."""
    if isinstance(value, list):
        return value
    if not isinstance(value, str):
        raise ValueError
    text = value.strip()
    if not text.startswith("{") and not text.endswith("}"):
        return text.split(",")
    if not (text.startswith("{") and text.endswith("}")) or len(text) < 2:
        raise ValueError
    return _array_literal(text[1:-1])


def _array_literal(body: str) -> list[Any]:
    """The items of a one-dimensional Postgres array literal's body (between the braces):
    elements separated by commas, double-quoted ones with backslash escapes; unquoted NULL is
    a null element. Nested arrays are refused (ValueError)."""
    items: list[Any] = []
    index, size = 0, len(body)
    if not body.strip():
        return items
    while True:
        while index < size and body[index].isspace():
            index += 1
        if index < size and body[index] == '"':
            index += 1
            chars: list[str] = []
            while index < size and body[index] != '"':
                if body[index] == "\\" and index + 1 < size:
                    index += 1
                chars.append(body[index])
                index += 1
            if index >= size:
                raise ValueError  # an unterminated quote
            index += 1
            item: Any = "".join(chars)
        else:
            end = body.find(",", index)
            end = size if end < 0 else end
            raw = body[index:end].strip()
            if "{" in raw or "}" in raw or '"' in raw or not raw:
                raise ValueError
            item = None if raw.upper() == "NULL" else raw
            index = end
        items.append(item)
        while index < size and body[index].isspace():
            index += 1
        if index >= size:
            return items
        if body[index] != ",":
            raise ValueError
        index += 1


def canonical_type(name: str) -> str:
    """'BIGINT' -> 'integer', 'text[]' -> 'text[]'; InvalidReport for a type we cannot bind."""
    base = name.strip().lower()
    array = base.endswith("[]")
    base = base.removesuffix("[]").strip()
    base = _ALIASES.get(base, base)
    if base not in _SCALARS:
        raise InvalidReport(
            f"unknown parameter type {name!r}: use one of "
            f"{', '.join(_SCALARS)}, or an array of them such as text[]"
        )
    return f"{base}[]" if array else base


def convert(param: str, type_name: str, value: Any) -> Any:
    """`value` as the Python value for `type_name`; InvalidReport naming `param` if it does
    not fit. Arrays take a JSON list, a Postgres array literal `{SE,DE}` or a comma-separated
    string (as `--param a=x,y` gives); null elements are refused."""
    base = type_name.removesuffix("[]")
    converter, example = _SCALARS[base]
    try:
        if type_name.endswith("[]"):
            items = array_items(value)
            if any(item is None for item in items):
                raise ValueError
            return [
                converter(item.strip() if isinstance(item, str) else item)
                for item in items
                if not (isinstance(item, str) and not item.strip())
            ]
        return converter(value)
    except ValueError:
        shown = (
            f"[{example}, ...], a Postgres array such as {{SE,DE}} or a comma-separated string"
            if type_name.endswith("[]")
            else example
        )
        raise InvalidReport(
            f"parameter {param!r} must be of type {type_name}, got {value!r} (for example {shown})"
        ) from None
