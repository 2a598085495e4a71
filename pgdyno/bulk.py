"""The rows of `enqueue_many`'s COPY: a batch of jobs as COPY text-format data.

enqueue_many (enqueue.py) checks the batch and reserves its ids; this module turns the jobs into
the bytes of `COPY pgdyno.jobs (...) FROM STDIN` and sends them. Two things keep it cheap, as
profiled in bench/PROFILE.md ("Bulk enqueue"): only the columns some job of the batch sets are
sent (a column every job leaves at its default, say priority 0, is left to the table's default,
which is the same value), and each row is joined from bytes here rather than passed value by
value through psycopg's per-value dumpers (binary COPY's write_row cost 9 µs a job for eight
columns). Repeated queue and task names are encoded once per batch.

Every value is still hostile: text is escaped as COPY's text format requires (backslash, tab,
newline, carriage return), so no value can end its field, its row or the data; numbers must be
ints; times are sent in UTC. The database then checks every row as for any INSERT (CHECK
constraints, the enqueue trigger).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from itertools import islice, repeat
from operator import attrgetter, is_not
from typing import Any, TypeVar

import psycopg
from psycopg import sql as pgsql
from psycopg.adapt import PyFormat
from psycopg.types.json import Jsonb

from pgdyno.errors import InvalidJob

#: Rows joined per write to the COPY (bounds the memory of the data beside the jobs).
ROWS_PER_WRITE = 2_000

#: A NULL in COPY's text format.
NULL = b"\\N"

T = TypeVar("T")


def each(jobs: Sequence[Any], field: str, check: Callable[[Any], T], unset: T) -> list[T]:
    """`check`(job.`field`) for each job, or `unset` for a job whose field is None without a
    call: a batch where no job sets the field costs one pass at C speed."""
    values = list(map(attrgetter(field), jobs))
    if not any(map(is_not, values, repeat(None))):
        return [unset] * len(values)
    return [unset if value is None else check(value) for value in values]


def _set(values: Sequence[Any], default: Any) -> bool:
    """Whether some value is not the object `default` (None, the int 0, one shared unset
    value): at C speed."""
    return any(map(is_not, values, repeat(default)))


def escape(data: bytes) -> bytes:
    """`data` as one field of COPY's text format: a backslash, tab, newline or carriage return
    can neither end the field or the row nor start an escape of its own."""
    if b"\\" in data or b"\t" in data or b"\n" in data or b"\r" in data:
        data = data.replace(b"\\", b"\\\\").replace(b"\t", b"\\t")
        data = data.replace(b"\n", b"\\n").replace(b"\r", b"\\r")
    return data


class Columns:
    """The COPY columns of one batch and their values, column by column (what `copy_rows`
    sends), made in two steps: the constructor encodes what needs nothing from the database
    (enqueue_many runs it while the database reserves the batch's ids), `finish` the rest.

    `jobs` are JobSpecs (enqueue.py) whose run_at and timeout were checked: `whens[i]` is job
    i's (time, delay) and `timeouts[i]` its timeout (enqueue._when, enqueue._timeout; a batch
    that sets neither may pass one shared unset value for every job). InvalidJob for a value
    that is not of its column's type (a queue that is no string, a priority that is no int).
    """

    def __init__(
        self,
        connection: psycopg.Connection,
        jobs: Sequence[Any],
        whens: Sequence[tuple[datetime | None, timedelta | None]],
        timeouts: Sequence[timedelta | None],
    ) -> None:
        self.encoding = connection.info.encoding
        self.json = connection.adapters.get_dumper(Jsonb, PyFormat.TEXT)(Jsonb, connection)
        self._times: dict[datetime, bytes] = {}
        self.names = ["queue", "task"]
        self.values: list[list[bytes]] = [
            self.names_of(list(map(attrgetter("queue"), jobs)), "queue"),
            self.names_of(list(map(attrgetter("task"), jobs)), "task"),
        ]
        args = list(map(attrgetter("args"), jobs))
        if _set(args, None) and not all(map(_empty, args)):
            self.add("args", list(map(self.args, args)))
        # Only the int 0 itself leaves the column out (a bool, a float 0.0 are checked, refused).
        priorities = list(map(attrgetter("priority"), jobs))
        if _set(priorities, 0):
            self.add("priority", [_integer(p, "priority") for p in priorities])
        self._whens = whens
        self._attempts = list(map(attrgetter("max_attempts"), jobs))
        if _set(timeouts, None):
            self.add("timeout", list(map(_interval, timeouts)))

    def finish(self, now: datetime, default_attempts: int) -> None:
        """The columns that need the database: run_at (a delay counts from `now`, the
        transaction's now()) and max_attempts (`default_attempts`, the column default, for a
        job that leaves it unset while another sets it)."""
        whens, first = self._whens, self._whens[0]
        if first != (None, None) or _set(whens, first):
            self.add("run_at", [self.run_at(at, delay, now) for at, delay in whens])
        attempts = self._attempts
        if _set(attempts, None):
            attempts = [default_attempts if n is None else n for n in attempts]
            self.add("max_attempts", [_integer(n, "max_attempts") for n in attempts])

    def add(self, name: str, values: list[bytes]) -> None:
        self.names.append(name)
        self.values.append(values)

    def names_of(self, values: list[Any], field: str) -> list[bytes]:
        """Queue or task names, each distinct one encoded once (a batch has few)."""
        try:
            encoded = {value: self.name(value, field) for value in dict.fromkeys(values)}
        except TypeError:  # unhashable, so not a string: say which
            encoded = {}
            for value in values:
                self.name(value, field)
        return list(map(encoded.__getitem__, values))

    def name(self, value: Any, field: str) -> bytes:
        """A queue or task name for COPY (InvalidJob if not a string or not encodable)."""
        if not isinstance(value, str):
            raise InvalidJob(f"job refused: {field} {value!r} must be a string")
        try:
            return escape(value.encode(self.encoding))
        except UnicodeEncodeError as exc:
            raise InvalidJob(
                f"job refused: {field} {value!r} cannot be encoded as {self.encoding} ({exc})"
            ) from None

    def args(self, args: Any) -> bytes:
        """A job's args as JSON text, through the connection's JSON dumper (psycopg's
        set_json_dumps is honoured); anything but an object is refused by the database."""
        if _empty(args):
            return b"{}"
        data = self.json.dump(dict(args) if isinstance(args, Mapping) else args)
        assert data is not None  # only None dumps to None, and None is empty
        return escape(bytes(data))

    def run_at(self, at: datetime | None, delay: timedelta | None, now: datetime) -> bytes:
        """A run_at in UTC, from an aware time, or a delay from `now`."""
        when = at if at is not None else now + delay if delay else now
        encoded = self._times.get(when)
        if encoded is None:
            try:
                encoded = when.astimezone(UTC).isoformat().encode()
            except OverflowError:
                raise InvalidJob(
                    f"job refused: run_at {when.isoformat()} is out of range (run_at must be a "
                    "time from 1970-01-01 to 2200-01-01 UTC)"
                ) from None
            self._times[when] = encoded
        return encoded


def copy_rows(
    connection: psycopg.Connection, statement: pgsql.Composed, columns: Columns, ids: Sequence[int]
) -> None:
    """COPY the batch with `ids` (in the jobs' order): `statement` is job_copy_in with
    {columns} filled in by the caller with "id" and then `columns.names`."""
    rows = zip(list(map(b"%d".__mod__, ids)), *columns.values, strict=True)
    with connection.cursor().copy(statement) as copy:
        while chunk := list(islice(rows, ROWS_PER_WRITE)):
            copy.write(b"\n".join(map(b"\t".join, chunk)) + b"\n")


def _empty(args: Any) -> bool:
    """Whether args leave the column at its default ({}): None or an empty mapping."""
    return args is None or (isinstance(args, Mapping) and not args)


def _integer(value: Any, field: str) -> bytes:
    """An int (or an integer type that says so: numpy's, an IntEnum) as COPY text; a bool, a
    float or a string is refused (COPY text would take the string "5" for 5 without a word)."""
    try:
        if isinstance(value, bool):
            raise TypeError
        return b"%d" % operator.index(value)
    except TypeError:
        raise InvalidJob(f"job refused: {field} {value!r} must be an integer") from None


def _interval(timeout: timedelta | None) -> bytes:
    """A checked timeout (1 s to 1 day) as exact seconds and microseconds."""
    if timeout is None:
        return NULL
    seconds = timeout.days * 86400 + timeout.seconds
    return b"%d.%06d seconds" % (seconds, timeout.microseconds)
