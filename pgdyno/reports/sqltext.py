"""Reads a report's SQL text the way Postgres's lexer does, without a server.

It answers what the report catalog must know before a query runs: how many statements the
text holds, which keyword starts it, and which `%(name)s` placeholders it uses. It skips
comments, quoted strings, quoted identifiers and dollar-quoted bodies, so a `;` or `(` inside
them does not count. It never changes the SQL, except to drop one trailing `;`.

This is the friendly first check. The server has the last word: the runner also asks Postgres
to plan the query through the extended protocol, which refuses more than one statement.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from pgdyno.errors import InvalidReport

#: Keywords that start a query that only reads (writes inside a WITH are refused later by the
#: plan check and the read-only transaction).
READ_ONLY_STARTS = ("SELECT", "WITH", "VALUES", "TABLE")


# Compiled on first use: their character ranges up to U+10FFFF take 40-50 ms to compile, which
# every worker (this module is imported with the built-in report task) paid at start-up.
@functools.cache
def _dollar_tag() -> re.Pattern[str]:
    return re.compile(r"\$([A-Za-z_\x80-\U0010ffff][A-Za-z0-9_\x80-\U0010ffff]*)?\$")


@functools.cache
def _word() -> re.Pattern[str]:
    return re.compile(r"[A-Za-z_\x80-\U0010ffff][A-Za-z0-9_$\x80-\U0010ffff]*")


# psycopg's own placeholder grammar: %% is a literal %, %(name)s a named parameter.
_PERCENT = re.compile(r"%(?:(%)|\(([^)]*)\)(.?)|(.?))", re.DOTALL)
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Statement:
    """The one statement of a report file."""

    #: The SQL to run: the file's statement without its trailing `;` (or anything after it).
    text: str
    #: The first keyword, upper case (SELECT, WITH, ...), or "(" for a parenthesized query.
    first_word: str


def _line(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _skip_quoted(text: str, pos: int, quote: str, backslash: bool) -> int:
    """Index just past the string or identifier opening at `pos`."""
    i = pos + 1
    while i < len(text):
        char = text[i]
        if backslash and char == "\\":
            i += 2
            continue
        if char == quote:
            if text.startswith(quote, i + 1):  # doubled quote: part of the value
                i += 2
                continue
            return i + 1
        i += 1
    what = "quoted identifier" if quote == '"' else "quoted string"
    raise InvalidReport(f"unterminated {what} starting at line {_line(text, pos)}")


def _skip_block_comment(text: str, pos: int) -> int:
    depth, i = 0, pos
    while i < len(text):
        if text.startswith("/*", i):
            depth, i = depth + 1, i + 2
        elif text.startswith("*/", i):
            depth, i = depth - 1, i + 2
            if depth == 0:
                return i
        else:
            i += 1
    raise InvalidReport(f"unterminated /* comment starting at line {_line(text, pos)}")


def split(text: str) -> list[tuple[int, int, str]]:
    """The statements of `text` as (start, end, first word), empty ones left out.

    Strings follow standard_conforming_strings = on (the default since PostgreSQL 9.1): a
    backslash escapes only in E'...' strings.
    """
    statements: list[tuple[int, int, str]] = []
    start, first, depth, i = 0, "", 0, 0
    while i < len(text):
        char = text[i]
        if text.startswith("--", i):
            newline = text.find("\n", i)
            i = len(text) if newline < 0 else newline + 1
            continue
        if text.startswith("/*", i):
            i = _skip_block_comment(text, i)
            continue
        if char == "'":
            # E'...' (an escape string): the E must not end a longer word such as "some'".
            escaped = (
                i > 0
                and text[i - 1] in "eE"
                and (i < 2 or not (text[i - 2].isalnum() or text[i - 2] in "_$"))
            )
            i = _skip_quoted(text, i, "'", backslash=escaped)
            first = first or "'"
            continue
        if char == '"':
            i = _skip_quoted(text, i, '"', backslash=False)
            first = first or '"'
            continue
        if char == "$" and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            tag = _dollar_tag().match(text, i)
            if tag:
                end = text.find(tag.group(0), tag.end())
                if end < 0:
                    raise InvalidReport(
                        f"unterminated dollar-quoted string starting at line {_line(text, i)}"
                    )
                i = end + len(tag.group(0))
                first = first or "$"
                continue
        if char == "(":
            depth += 1
            first = first or "("
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise InvalidReport(f"unbalanced ')' at line {_line(text, i)}")
        elif char == ";" and depth == 0:
            if first:
                statements.append((start, i, first))
            start, first = i + 1, ""
        elif not first and not char.isspace():
            word = _word().match(text, i)
            if word:
                first = word.group(0).upper()
                i = word.end()
                continue
            first = char
        i += 1
    if depth > 0:
        raise InvalidReport("unbalanced '(': a ')' is missing")
    if first:
        statements.append((start, len(text), first))
    return statements


def single_query(text: str) -> Statement:
    """The report's one read-only query; InvalidReport saying what is wrong otherwise."""
    statements = split(text)
    if not statements:
        raise InvalidReport("the file holds no SQL statement: write one SELECT query")
    if len(statements) > 1:
        raise InvalidReport(
            f"the file holds {len(statements)} statements (the first ends with the ';' on line "
            f"{_line(text, statements[0][1])}): a report is a single query"
        )
    _, end, first = statements[0]
    if first not in READ_ONLY_STARTS and first != "(":
        raise InvalidReport(
            f"the statement starts with {first}, so it is not a read-only query: a report is one "
            f"{', '.join(READ_ONLY_STARTS[:-1])} or {READ_ONLY_STARTS[-1]} query"
        )
    return Statement(text[:end].rstrip(), first)


def placeholders(text: str) -> list[str]:
    """The `%(name)s` parameter names `text` uses, in order of first use.

    Follows psycopg's rules, which apply everywhere in the text (comments and strings too): a
    literal % is written %%, and positional %s is refused because reports bind by name.
    """
    names: list[str] = []
    for match in _PERCENT.finditer(text):
        literal, name, fmt, other = match.groups()
        if literal:
            continue
        where = f"line {_line(text, match.start())}"
        if name is None:
            raise InvalidReport(
                f"stray '%{other}' at {where}: write %% for a literal % "
                "and %(name)s for a parameter"
            )
        if not _NAME.match(name) or fmt != "s":
            raise InvalidReport(
                f"bad parameter placeholder {match.group(0)!r} at {where}: "
                "write %(name)s with a name of letters, digits and _"
            )
        if name not in names:
            names.append(name)
    return names
