"""Fuzzing the enqueue contract: a few hundred random INSERTs through the enqueue role, values
at the edges of the columns' types, while two workers and a dispatcher run. None of them may
exit, and every row must end refused at INSERT or finished (done or failed; the jobs scheduled
after the test are cancelled at its end, as an operator would).

Hypothesis draws the rows (derandomized: the same rows on every run, so a failure reproduces);
values are sent as text and cast by the server, so that what no driver would send (infinity,
BC dates, JSON numbers of thousands of digits, args nested hundreds deep) reaches Postgres.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
from helpers import wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

EXAMPLES = 500
QUEUE = "fz"

INT4_EDGES = [-(2**31), -1001, -1000, -1, 0, 1, 1000, 1001, 2**31 - 1, 2**31, 2**63 - 1, 10**20]
TIMES = [
    "infinity",
    "-infinity",
    "epoch",
    "0044-03-15 12:00:00+00 BC",
    "1969-12-31 23:59:59+00",
    "1970-01-01 00:00:00+00",
    "2199-12-31 23:59:59+00",
    "2200-01-01 00:00:01+00",
    "20000-01-01 00:00:00+00",
    "294276-12-31 23:59:59+00",
    "now",
    "yesterday",
    "not a time",
]


def _nested(depth: int) -> str:
    return '{"a": ' + "[" * depth + "]" * depth + "}"


json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=50),
)
json_values = st.recursive(
    json_leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
objects = st.dictionaries(st.text(max_size=10), json_values, max_size=6).map(json.dumps)
args_text = st.one_of(
    objects,
    objects,
    objects,
    st.integers(min_value=0, max_value=300).map(_nested),
    st.sampled_from(
        [
            '{"n": ' + "9" * 5000 + "}",
            '{"n": -1e309}',
            '{"n": 1e308}',
            '{"s": "\\u0000"}',
            '{"s": "' + "x" * 1_100_000 + '"}',
            "[1, 2]",
            "null",
            '"text"',
            "{oops",
            "{}",
        ]
    ),
    json_values.map(json.dumps),
)
# Valid values drawn more often than edges: a statement with one bad row is refused whole.
names = st.one_of(
    st.sampled_from(["noop", "noop", "unknown_task", "report"]),
    st.text(max_size=210),
    st.sampled_from(["", " ", "noop ", "no\nop", "n\x1bop", "t" * 201]),
)
#: Queue names the database refuses (a valid name no worker serves would wait forever).
queues = st.sampled_from(["", " ", f"{QUEUE} ", f"\t{QUEUE}", "q" * 129, "f\x07z", "f\u0085z"])

#: Columns only pgdyno sets: an enqueue role naming one is refused (value unimportant).
SYSTEM_COLUMNS = {
    "id": st.integers(min_value=1, max_value=10),
    "status": st.sampled_from(["ready", "running", "done"]),
    "attempts": st.sampled_from(INT4_EDGES),
    "worker": st.text(max_size=10),
    "lease_expires_at": st.sampled_from(TIMES),
    "result": args_text,
    "started_at": st.sampled_from(TIMES),
    "last_error": st.text(max_size=10),
}
CASTS = {
    "queue": "text",
    "task": "text",
    "args": "jsonb",
    "priority": "int4",
    "run_at": "timestamptz",
    "max_attempts": "int4",
    "id": "int8",
    "status": "pgdyno.job_status",
    "attempts": "int4",
    "worker": "text",
    "lease_expires_at": "timestamptz",
    "result": "jsonb",
    "started_at": "timestamptz",
    "last_error": "text",
}


#: Values of the enqueue columns that a valid job may have.
VALID = {
    "queue": st.just(QUEUE),
    "task": st.one_of(
        st.sampled_from(["noop", "unknown_task", "report"]),
        st.from_regex(r"\A[a-z][a-z_.]{0,30}\Z"),
    ),
    "args": objects,
    "priority": st.integers(-1000, 1000),
    "run_at": st.sampled_from(["now", "epoch", "2000-01-01 00:00+00", "yesterday"]),
    "max_attempts": st.integers(1, 1000),
}
#: Values of the same columns at and past the edges of their types and rules.
EDGES = {
    "queue": queues,
    "task": names,
    "args": args_text,
    "priority": st.one_of(st.integers(-2000, 2000), st.sampled_from(INT4_EDGES)),
    "run_at": st.sampled_from(TIMES),
    "max_attempts": st.one_of(st.integers(-5, 1005), st.sampled_from(INT4_EDGES)),
}


@st.composite
def job_rows(draw: st.DrawFn) -> dict[str, Any]:
    """A row of valid values but for a few drawn from the edges (or none); now and then a
    column only pgdyno may set."""
    row: dict[str, Any] = {"queue": QUEUE, "task": draw(VALID["task"])}
    edgy = draw(st.sets(st.sampled_from(sorted(EDGES)), max_size=2))
    for column in sorted(VALID):
        if column in edgy:
            row[column] = draw(EDGES[column])
        elif column not in ("queue", "task") and draw(st.booleans()):
            row[column] = draw(VALID[column])
    if draw(st.integers(0, 14)) == 14:
        column = draw(st.sampled_from(sorted(SYSTEM_COLUMNS)))
        row[column] = draw(SYSTEM_COLUMNS[column])
    return row


def _insert(conn: psycopg.Connection, rows: list[dict[str, Any]]) -> None:
    """One INSERT of `rows` (columns a row lacks take their DEFAULT); values cast server-side."""
    columns = sorted({column for row in rows for column in row})
    values, params = [], []
    for row in rows:
        cells = []
        for column in columns:
            if column in row:
                cells.append(f"%s::{CASTS[column]}")
                value = row[column]
                params.append(value if isinstance(value, str) else str(value))
            else:
                cells.append("DEFAULT")
        values.append(f"({', '.join(cells)})")
    conn.execute(
        f"INSERT INTO pgdyno.jobs ({', '.join(columns)}) VALUES {', '.join(values)}",
        params,
    )


def test_random_rows_through_the_enqueue_role_are_refused_or_finish(db, owner, attacker, attack):
    system = attack(db, owner, queues=(QUEUE,), workers=2)
    outcome = {"accepted": 0, "refused": 0}
    reasons: dict[str, int] = {}

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(job_rows(), min_size=1, max_size=3))
    def insert(rows: list[dict[str, Any]]) -> None:
        try:
            _insert(attacker, rows)
        except (psycopg.Error, ValueError) as exc:  # ValueError: a NUL no text can carry
            outcome["refused"] += 1
            why = getattr(getattr(exc, "diag", None), "constraint_name", None) or type(exc).__name__
            reasons[why] = reasons.get(why, 0) + 1
        else:
            outcome["accepted"] += len(rows)

    insert()
    print("fuzz:", outcome, sorted(reasons.items(), key=lambda x: -x[1]))
    assert outcome["accepted"] > 50 and outcome["refused"] > 100, (
        outcome,
        sorted(reasons.items(), key=lambda x: -x[1]),
    )
    assert owner.execute("SELECT count(*) FROM pgdyno.jobs").fetchone()[0] == outcome["accepted"]
    # The due ones finish; the operator cancels those scheduled later.
    wait_until(
        lambda: (
            not owner.execute(
                "SELECT count(*) FROM pgdyno.jobs WHERE status IN ('ready', 'running')"
                " AND run_at <= now()"
            ).fetchone()[0]
        ),
        timeout=60,
        message="every due job to finish",
    )
    owner.execute(
        "UPDATE pgdyno.jobs SET status = 'cancelled', finished_at = now() WHERE status = 'ready'"
    )
    left = owner.execute(
        "SELECT status::text, count(*) FROM pgdyno.jobs GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert {status for status, _ in left} <= {"done", "failed", "cancelled"}, left
    failures = owner.execute(
        "SELECT DISTINCT split_part(last_error, ':', 1) FROM pgdyno.jobs WHERE status = 'failed'"
    ).fetchall()
    assert {kind for (kind,) in failures} <= {
        "UnknownTask",
        "InvalidReport",
        "InvalidArguments",
        "InvalidArgs",
    }
    system.assert_unharmed(owner)
    system.stop()
