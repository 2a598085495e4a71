"""The reports folder: which reports exist, and what each one declares.

A report is a file NAME.sql in the reports folder (PGDYNO_REPORTS_DIR) holding one query whose
parameters are written %(name)s. The comment lines at the top of the file form its header:

    -- Revenue per month, from a month on.      any other comment line: the description
    -- param: since date = 2025-01-01          name, type and an optional default
    -- param: country text = null              a null default makes it optional (NULL)
    -- set: statement_timeout = 10min          a setting for this report's transaction only
    SELECT ... WHERE ordered_at >= %(since)s

A value ends at a trailing `--` comment outside quotes (`-- set: work_mem = 64MB  -- sorts`).
Time settings (statement_timeout, lock_timeout, idle_in_transaction_session_timeout) take
pgdyno's duration syntax (config.parse_duration: 250ms, 30s, 5m or 5min, 2h) and are passed
to Postgres in milliseconds. A placeholder the header does not declare is a required text
parameter. A report name is
checked before any path is built from it, so a job can never read a file outside the folder.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pgdyno.config import parse_duration
from pgdyno.errors import ConfigError, InvalidReport
from pgdyno.reports import params as types
from pgdyno.reports import sqltext

_REPORT_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,199}$")
_PARAM_LINE = re.compile(
    r"^param:\s*(?P<name>[A-Za-z_]\w*)\s+(?P<type>[A-Za-z_]\w*\s*(?:\[\])?)"
    r"\s*(?:=\s*(?P<default>.*?))?\s*$"
)
_SET_LINE = re.compile(r"^set:\s*(?P<name>[A-Za-z_]\w*)\s*=\s*(?P<value>.*?)\s*$")

#: Settings a report may change for its own transaction: limits, memory and planner choices,
#: and output formats. Nothing that changes who runs the query or whether it may write.
ALLOWED_SETTINGS = frozenset(
    {
        "statement_timeout",
        "lock_timeout",
        "idle_in_transaction_session_timeout",
        "work_mem",
        "hash_mem_multiplier",
        "temp_buffers",
        "max_parallel_workers_per_gather",
        "jit",
        "random_page_cost",
        "effective_cache_size",
        "join_collapse_limit",
        "from_collapse_limit",
        "plan_cache_mode",
        "search_path",
        "timezone",
        "datestyle",
        "intervalstyle",
        "extra_float_digits",
    }
)


#: Settings whose value is a duration: read with parse_duration, sent in milliseconds.
DURATION_SETTINGS = frozenset(
    {"statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout"}
)


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


#: The default of a parameter that has none: the job must give it.
REQUIRED: Any = _Required()


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    default: Any = REQUIRED

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def describe(self) -> str:
        """`since date = 2025-01-01`, as the header declares it (for listings and errors)."""
        if self.required:
            return f"{self.name} {self.type}"
        shown = "null" if self.default is None else str(self.default)
        return f"{self.name} {self.type} = {shown}"


@dataclass(frozen=True)
class Report:
    name: str
    path: Path
    description: str
    params: tuple[Param, ...]
    #: (name, value) of each `-- set:` line, applied with SET LOCAL semantics.
    settings: tuple[tuple[str, str], ...]
    #: The query: the file without its header comments and trailing ';'.
    sql: str

    def bind(self, values: Mapping[str, Any] | None) -> dict[str, Any]:
        """Typed values for every parameter, defaults filled in; InvalidReport saying which
        parameter is missing, unknown or of the wrong type."""
        if values is None:
            values = {}
        if not isinstance(values, Mapping):
            raise InvalidReport(
                f"report {self.name!r}: params must be a JSON object such as "
                f'{{"since": "2026-01-01"}}, got {type(values).__name__}'
            )
        declared = {param.name: param for param in self.params}
        takes = ", ".join(param.describe() for param in self.params) or "no parameters"
        extra = sorted(set(values) - set(declared))
        if extra:
            raise InvalidReport(
                f"report {self.name!r}: unknown parameter{'s' if len(extra) > 1 else ''} "
                f"{', '.join(map(repr, extra))} (it takes: {takes})"
            )
        missing = [param for param in self.params if param.required and param.name not in values]
        if missing:
            raise InvalidReport(
                f"report {self.name!r}: missing parameter{'s' if len(missing) > 1 else ''} "
                f"{', '.join(repr(p.name) + ' (' + p.type + ')' for p in missing)} "
                f"(it takes: {takes})"
            )
        bound: dict[str, Any] = {}
        for param in self.params:
            if param.name not in values:
                bound[param.name] = param.default  # converted when the header was read
                continue
            value = values[param.name]
            if value is None:
                if param.default is not None:
                    raise InvalidReport(
                        f"report {self.name!r}: parameter {param.name!r} must not be null "
                        f"(type {param.type})"
                    )
                bound[param.name] = None
                continue
            try:
                bound[param.name] = types.convert(param.name, param.type, value)
            except InvalidReport as exc:
                raise InvalidReport(f"report {self.name!r}: {exc}") from None
        return bound


def report_path(folder: Path, name: Any) -> Path:
    """The file of report `name`, refusing any name that could leave `folder`."""
    if not isinstance(name, str) or not name:
        raise InvalidReport(f"a report name must be a non-empty string, got {name!r}")
    if "/" in name or "\\" in name or ".." in name or "\x00" in name:
        raise InvalidReport(
            f"report name {name!r} escapes the reports folder: give a bare name such as "
            "revenue_by_month (see `pgdyno report list`)"
        )
    if not _REPORT_NAME.match(name):
        raise InvalidReport(
            f"report name {name!r} is not valid: use letters, digits, '_' and '-' "
            "(the file name without .sql)"
        )
    root = folder.resolve()
    path = (root / f"{name}.sql").resolve()
    if not path.is_relative_to(root):  # a symlink pointing elsewhere
        raise InvalidReport(
            f"report {name!r} escapes the reports folder {root}",
            public=f"report {name!r} escapes the reports folder",
        )
    return path


def names(folder: Path) -> list[str]:
    """Names of the reports in `folder`, sorted."""
    if not folder.is_dir():
        return []
    return sorted(path.stem for path in folder.glob("*.sql") if _REPORT_NAME.match(path.stem))


def load(folder: Path, name: Any) -> Report:
    """Report `name` from `folder`: InvalidReport if it is unknown or its file is not valid."""
    path = report_path(folder, name)
    unknown = f"unknown report {name!r} (see `pgdyno report list`)"
    if not path.is_file():
        if not folder.is_dir():
            raise InvalidReport(
                f"unknown report {name!r}: the reports folder {folder.resolve()} does not exist "
                "(set PGDYNO_REPORTS_DIR to the folder of NAME.sql files)",
                public=unknown,
            )
        known = ", ".join(names(folder)) or "none"
        raise InvalidReport(
            f"unknown report {name!r}: there is no {name}.sql in {folder.resolve()} "
            f"(known reports: {known})",
            public=unknown,
        )
    try:
        return parse(name, path, path.read_text(encoding="utf-8"))
    except InvalidReport as exc:
        raise InvalidReport(
            f"report {name!r} ({path}) is not valid: {exc}",
            public=f"report {name!r} is not valid: {exc}",
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidReport(
            f"report {name!r}: cannot read {path}: {exc}",
            public=f"report {name!r}: its file cannot be read ({type(exc).__name__})",
        ) from None


def _strip_comment(text: str) -> str:
    """`5min   -- also work_mem` -> `5min`: a header value ends at a `--` outside quotes."""
    quoted = False
    for index, char in enumerate(text):
        if char == "'":
            quoted = not quoted
        elif not quoted and text.startswith("--", index):
            return text[:index].rstrip()
    return text.strip()


def _setting_value(name: str, raw: str, number: int) -> str:
    value = _unquote(_strip_comment(raw))
    if name not in DURATION_SETTINGS:
        return value
    try:
        seconds = parse_duration(value, f"{name} (line {number})")
    except ConfigError as exc:
        raise InvalidReport(str(exc)) from None
    return f"{round(seconds * 1000)}ms"


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] == "'":
        return text[1:-1].replace("''", "'")
    return text


def parse(name: str, path: Path, text: str) -> Report:
    """Split a report file into its header declarations and its single query."""
    lines = text.splitlines(keepends=True)
    description: list[str] = []
    declared: dict[str, Param] = {}
    settings: dict[str, str] = {}
    header_lines = 0
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if stripped and not stripped.startswith("--"):
            break
        header_lines = number
        comment = stripped[2:].strip()
        if comment.startswith(("param:", "set:")):
            comment = _strip_comment(comment)
        if param_line := _PARAM_LINE.match(comment):
            param = _declared_param(param_line, number)
            if param.name in declared:
                raise InvalidReport(f"parameter {param.name!r} is declared twice (line {number})")
            declared[param.name] = param
        elif set_line := _SET_LINE.match(comment):
            setting = set_line["name"].lower()
            if setting not in ALLOWED_SETTINGS:
                raise InvalidReport(
                    f"setting {set_line['name']!r} (line {number}) may not be set by a report; "
                    f"allowed: {', '.join(sorted(ALLOWED_SETTINGS))}"
                )
            settings[setting] = _setting_value(setting, set_line["value"], number)
        elif comment.startswith(("param:", "set:")):
            raise InvalidReport(
                f"cannot read header line {number}: {comment!r}; write "
                "`-- param: NAME TYPE [= DEFAULT]` or `-- set: NAME = VALUE`"
            )
        elif comment:
            description.append(comment)
    # Header lines become blank lines: line numbers in errors still match the file, and a %
    # in the description is not taken for a placeholder.
    body = "\n" * header_lines + "".join(lines[header_lines:])
    statement = sqltext.single_query(body)
    used = sqltext.placeholders(statement.text)
    unused = [param for param in declared if param not in used]
    if unused:
        raise InvalidReport(
            f"the header declares parameter {unused[0]!r} but the query never uses %({unused[0]})s"
        )
    # Declared parameters in header order, then undeclared ones (text) in order of use.
    params = (*declared.values(), *(Param(name, "text") for name in used if name not in declared))
    return Report(
        name, path, " ".join(description), tuple(params), tuple(settings.items()), statement.text
    )


def _declared_param(match: re.Match[str], number: int) -> Param:
    name, type_name = match["name"], types.canonical_type(match["type"])
    default = None if match["default"] is None else _strip_comment(match["default"])
    if not default:
        if match["default"] is not None:
            raise InvalidReport(
                f"parameter {name!r} (line {number}) has '=' but no default; write a value or null"
            )
        return Param(name, type_name)
    if default.lower() == "null":
        return Param(name, type_name, None)
    try:
        value = types.convert(name, type_name, _unquote(default))
    except InvalidReport as exc:
        raise InvalidReport(f"the default on line {number} does not fit: {exc}") from None
    return Param(name, type_name, value)
