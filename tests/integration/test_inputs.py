"""Times and durations a user types or passes: one syntax, one rule, a clear message each.

Durations (`--delay`, `--timeout`, `--older-than`, worker and dispatcher flags) go through
config.parse_duration; a naive datetime is refused on every path (enqueue, enqueue_many,
`pgdyno enqueue --run-at`) with the same InvalidJob message; nothing bad is enqueued.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner
from helpers import job_row

import pgdyno
from pgdyno.cli import main
from pgdyno.enqueue import NAIVE_DATETIME

SYNTAX = (
    "write a number with an optional unit (ms, s, m or min, h, d, w), for example 250ms, 30s, "
    "5m (or 5min), 2h, 7d, 2w, or plain seconds"
)
NAIVE = datetime(2030, 1, 2, 9, 0)


@pytest.fixture
def cli(database_url):
    def invoke(*args: str):
        return CliRunner().invoke(
            main, [*args, "--database-url", database_url], env={"PGDYNO_LOG_LEVEL": "WARNING"}
        )

    return invoke


def _count(conn) -> int:
    return conn.execute("SELECT count(*) FROM pgdyno.jobs").fetchone()[0]


@pytest.mark.parametrize(
    ("delay", "seconds"), [("5m", 300), ("5min", 300), ("90s", 90), ("250ms", 0.25), ("2h", 7200)]
)
def test_enqueue_delay_takes_the_duration_syntax(cli, conn, delay, seconds):
    result = cli("enqueue", "t", "--delay", delay)
    assert result.exit_code == 0, result.output
    row = job_row(conn, int(result.output))
    assert row["run_at"] - row["created_at"] == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("enqueue", "t", "--delay", "1e20"), f"--delay '1e20' is not a duration: {SYNTAX}"),
        (("enqueue", "t", "--delay", "-5s"), f"--delay '-5s' is not a duration: {SYNTAX}"),
        (("enqueue", "t", "--delay", "nan"), f"--delay 'nan' is not a duration: {SYNTAX}"),
        (("enqueue", "t", "--delay", "5 years"), f"--delay '5 years' is not a duration: {SYNTAX}"),
        (
            ("enqueue", "t", "--delay", "99999999999999999999d"),
            "--delay '99999999999999999999d' is too long: at most 100 years",
        ),
        (
            ("report", "run", "x", "--no-check", "--wait", "--timeout", "soon"),
            f"--timeout 'soon' is not a duration: {SYNTAX}",
        ),
        (("prune", "--older-than", "1e3d"), f"--older-than '1e3d' is not a duration: {SYNTAX}"),
        (
            ("worker", "--queue", "q", "--grace", "inf"),
            f"--grace 'inf' is not a duration: {SYNTAX}",
        ),
        (
            ("dispatcher", "--scale", "q=w", "--debounce", "-1"),
            f"--debounce '-1' is not a duration: {SYNTAX}",
        ),
        (
            ("enqueue", "t", "--run-at", "2030-01-02T09:00:00"),
            "'2030-01-02T09:00:00' has no UTC offset, so it would run hours early or late "
            "depending on the database's time zone: add one (2030-01-02T09:00:00Z for UTC, or "
            "+01:00), or give --delay 2h instead",
        ),
        (
            ("status", "--watch", "--interval", "0"),
            "Invalid value for '--interval': 0s would query the database continuously: give "
            "200ms or more",
        ),
        (
            ("enqueue", "t", "--run-at", "tomorrow"),
            "'tomorrow' is not an ISO 8601 time such as 2026-03-01T09:00:00+01:00",
        ),
        (
            ("enqueue", "t", "--run-at", "2030-01-02T09:00:00+00:00", "--delay", "5m"),
            "give --delay or --run-at, not both",
        ),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, tuple) else "",
)
def test_bad_times_and_durations_are_usage_errors_that_say_what_to_write(cli, conn, flags, message):
    result = cli(*flags)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert message in " ".join(result.output.split())  # click wraps long lines
    assert _count(conn) == 0


def test_enqueue_run_at_takes_an_aware_time(cli, conn):
    result = cli("enqueue", "t", "--run-at", "2030-01-02T09:00:00+01:00")
    assert result.exit_code == 0, result.output
    assert job_row(conn, int(result.output))["run_at"] == datetime(2030, 1, 2, 8, tzinfo=UTC)


NAIVE_MESSAGE = f"run_at 2030-01-02T09:00:00 refused: {NAIVE_DATETIME}"


def test_enqueue_refuses_a_naive_datetime(conn):
    with pytest.raises(pgdyno.InvalidJob) as refused:
        pgdyno.enqueue(conn, "t", run_at=NAIVE)
    assert str(refused.value) == NAIVE_MESSAGE
    assert _count(conn) == 0


@pytest.mark.parametrize("job", [{"task": "t", "run_at": NAIVE}, pgdyno.JobSpec("t", run_at=NAIVE)])
def test_enqueue_many_refuses_a_naive_datetime_with_the_same_message(conn, job):
    with pytest.raises(pgdyno.InvalidJob) as refused:
        pgdyno.enqueue_many(conn, [{"task": "ok"}, job])
    assert str(refused.value) == NAIVE_MESSAGE
    assert _count(conn) == 0


@pytest.mark.parametrize(
    ("run_at", "message"),
    [
        (
            1e20,
            "run_at delay 1e+20 refused: a delay must be a finite number of seconds (or a "
            "timedelta) of at most 100 years",
        ),
        (
            float("nan"),
            "run_at delay nan refused: a delay must be a finite number of seconds (or a "
            "timedelta) of at most 100 years",
        ),
        (
            timedelta.max,
            "run_at delay datetime.timedelta(days=999999999, seconds=86399, "
            "microseconds=999999) refused: a delay must be a finite number of seconds (or a "
            "timedelta) of at most 100 years",
        ),
        ("5m", "run_at '5m' refused: give an aware datetime, a timedelta or seconds"),
    ],
)
def test_enqueue_and_enqueue_many_refuse_delays_that_cannot_be_times(conn, run_at, message):
    for call in (
        lambda: pgdyno.enqueue(conn, "t", run_at=run_at),
        lambda: pgdyno.enqueue_many(conn, [{"task": "t", "run_at": run_at}]),
    ):
        with pytest.raises(pgdyno.InvalidJob) as refused:
            call()
        assert str(refused.value) == message
    assert _count(conn) == 0


def test_enqueue_many_names_an_unknown_field(conn):
    with pytest.raises(pgdyno.InvalidJob) as refused:
        pgdyno.enqueue_many(conn, [{"task": "t", "delay": 5}])
    assert str(refused.value) == (
        "job {'task': 't', 'delay': 5} refused: unknown field 'delay' (a job has task, args, "
        "queue, priority, run_at, max_attempts, timeout)"
    )


def test_an_aware_datetime_in_any_zone_is_the_same_instant(conn):
    tokyo = datetime(2030, 1, 2, 18, 0, tzinfo=ZoneInfo("Asia/Tokyo"))
    conn.execute("SET TIME ZONE 'America/New_York'")
    ids = [
        pgdyno.enqueue(conn, "t", run_at=tokyo),
        *pgdyno.enqueue_many(conn, [{"task": "t", "run_at": tokyo}]),
    ]
    for job_id in ids:
        assert job_row(conn, job_id)["run_at"] == datetime(2030, 1, 2, 9, 0, tzinfo=UTC)
