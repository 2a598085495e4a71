"""logfmt lines: one record per event, quoted when needed, no passwords."""

from __future__ import annotations

import io
import logging

import pytest

from pgdyno import logfmt
from pgdyno.config import Settings
from pgdyno.logfmt import (
    MAX_VALUE_CHARS,
    BatchingHandler,
    LogfmtFormatter,
    configure,
    format_value,
    log_event,
    redact,
    render,
)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (42, "42"),
        ("reports", "reports"),
        (None, ""),
        (True, "true"),
        (False, "false"),
        (12.5, "12.5"),
        (0.1234567, "0.123"),
        (3.0, "3"),
        ("two words", '"two words"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("a=b", '"a=b"'),
        ("line\nbreak", '"line\\nbreak"'),
        ("back\\slash x", '"back\\\\slash x"'),
        ("", '""'),
    ],
)
def test_values_are_bare_when_safe_and_quoted_otherwise(value, text):
    assert format_value(value) == text


def test_render_puts_the_event_first_and_keeps_field_order():
    assert render(
        "job_done", {"job": 42, "task": "report", "queue": "reports", "duration_ms": 12}
    ) == ("event=job_done job=42 task=report queue=reports duration_ms=12")


def _logger(stream: io.StringIO, level: int = logging.DEBUG) -> logging.Logger:
    logger = logging.getLogger(f"pgdyno.test.{id(stream)}")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(LogfmtFormatter())
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
    return logger


def test_log_event_writes_one_line_with_the_level():
    stream = io.StringIO()
    log_event(
        _logger(stream),
        "db_unavailable",
        logging.WARNING,
        attempt=2,
        error="connection refused\nis the server running?",
    )
    assert stream.getvalue() == (
        'at=warn event=db_unavailable attempt=2 error="connection refused\\nis the server'
        ' running?"\n'
    )


def test_events_below_the_level_are_not_written():
    stream = io.StringIO()
    log_event(_logger(stream, logging.INFO), "db_conflict", logging.DEBUG, attempt=1)
    assert stream.getvalue() == ""


def test_plain_log_messages_and_exceptions_stay_on_one_line():
    stream = io.StringIO()
    logger = _logger(stream)
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        logger.exception("it broke: %s", "really")
    assert stream.getvalue().count("\n") == 1
    assert stream.getvalue() == (
        f'at=error event=log logger={logger.name} msg="it broke: really"'
        ' error="ValueError: bad\\nvalue"\n'
    )


def test_configure_installs_a_single_handler_however_often_it_is_called():
    stream = io.StringIO()
    configure("info", stream)
    configure("warning", stream)
    root = logging.getLogger("pgdyno")
    assert len(root.handlers) == 1
    assert root.level == logging.WARNING
    log_event(logging.getLogger("pgdyno.worker"), "worker_stopped", logging.WARNING, worker="w")
    assert stream.getvalue() == "at=warn event=worker_stopped worker=w\n"


# --- secrets and hostile text (security issue, scenarios 7 and 8) -------------------------------


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("postgresql://wrk:s3cret@db.example.com/app", "postgresql://wrk:***@db.example.com/app"),
        ("postgresql://wrk:p@ss@host/db", "postgresql://wrk:***@host/db"),
        ("postgresql://wrk@host/db", "postgresql://wrk@host/db"),
        (
            "cannot reach https://user:tok@api.heroku.com",
            "cannot reach https://user:***@api.heroku.com",
        ),
        ("https://TOKEN@api.heroku.com/apps", "https://***@api.heroku.com/apps"),
        ("host=h password=s3cret user=u", "host=h password=*** user=u"),
        ("host=h password='it is s3cret' user=u", "host=h password=*** user=u"),
        ("no secret here", "no secret here"),
    ],
)
def test_redact_hides_url_credentials_and_passwords(text, shown):
    assert redact(text) == shown


def test_every_logged_value_is_redacted_escaped_and_cut():
    stream = io.StringIO()
    log_event(
        _logger(stream),
        "formation_api",
        error="cannot reach https://user:s3cret@api.heroku.com",
        task="evil\rat=info event=forged\x1b[2J",
        big="x" * 10_000,
    )
    line = stream.getvalue()
    assert line.count("\n") == 1 and "\r" not in line and "\x1b" not in line
    assert "s3cret" not in line and "https://user:***@api.heroku.com" in line
    assert 'task="evil\\rat=info event=forged\\x1b[2J"' in line
    assert len(line) < MAX_VALUE_CHARS + 200


def test_settings_repr_holds_no_password_token_or_url_credentials():
    settings = Settings(
        database_url="postgresql://wrk:db-s3cret@host/db",
        reports_database_url="postgresql://reader:rd-s3cret@follower/db",
        heroku_api_url="https://user:api-s3cret@api.heroku.com",
        heroku_api_key="key-s3cret",
    )
    shown = repr(settings)
    assert "s3cret" not in shown and "postgresql://wrk:***@host/db" in shown


class _CountingStream(io.StringIO):
    """A stream that counts writes (each one a system call on a real pipe)."""

    writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def test_a_batching_handler_writes_its_lines_a_batch_at_a_time_and_warnings_at_once():
    stream = _CountingStream()
    configure("INFO", stream)
    log = logging.getLogger("pgdyno.test.batching")
    try:
        logfmt.batching(True)
        for job in range(3):
            log_event(log, "job_done", job=job)
        assert stream.getvalue() == ""  # pending
        log_event(log, "job_failed", logging.WARNING, job=3)  # at once, after the others
        assert stream.getvalue().splitlines() == [
            "at=info event=job_done job=0",
            "at=info event=job_done job=1",
            "at=info event=job_done job=2",
            "at=warn event=job_failed job=3",
        ]
        assert stream.writes == 1
        for job in range(BatchingHandler.MAX_LINES):
            log_event(log, "job_done", job=job)
        assert stream.writes == 2  # MAX_LINES pending: written
        log_event(log, "job_done", job=-1)
        logfmt.flush()  # the worker loop, before it sleeps
        assert stream.getvalue().endswith("job=-1\n") and stream.writes == 3
        log_event(log, "job_done", job=-2)
        logfmt.batching(False)  # writes what is pending, then each line at once
        assert stream.getvalue().endswith("job=-2\n")
        log_event(log, "job_done", job=-3)
        assert stream.getvalue().endswith("job=-3\n")
    finally:
        logfmt.batching(False)
        configure("INFO")


def test_names_are_escaped_even_when_their_formatting_is_cached():
    for _ in range(2):
        assert format_value("evil\x1b[2Jname") == '"evil\\x1b[2Jname"'
        assert format_value("https://user:secret@host") == "https://user:***@host"


def test_the_workers_lines_skip_the_log_record_only_when_nothing_else_would_see_it():
    """log_event's shortcut (no LogRecord) is taken only while batching into the one
    handler of pgdyno's logger, with no filter anywhere; the lines are the same."""
    stream = io.StringIO()
    configure("INFO", stream)
    log = logging.getLogger("pgdyno.test.shortcut")
    seen: list[logging.LogRecord] = []

    def keep(record: logging.LogRecord) -> bool:
        seen.append(record)
        return True

    try:
        logfmt.batching(True)
        log_event(log, "job_done", job=1, task="t", duration_ms=1.5)
        assert seen == []
        log.addFilter(keep)  # someone watches: records again
        log_event(log, "job_done", job=2, task="t", duration_ms=1.5)
        assert [record.logfmt["job"] for record in seen] == [2]
        logfmt.flush()
        assert stream.getvalue().splitlines() == [
            "at=info event=job_done job=1 task=t duration_ms=1.5",
            "at=info event=job_done job=2 task=t duration_ms=1.5",
        ]
    finally:
        log.removeFilter(keep)
        logfmt.batching(False)
        configure("INFO")


@pytest.mark.parametrize(
    ("task", "queue", "duration_s", "job_id", "attempt"),
    [
        ("noop", "bench", 0.0000123, 42, 1),
        ("report", "reports", 12.0, 7, 3),
        ("evil\x1b[2Jname", "a b", 0.0995, 1, 1),  # escaped, quoted
        ("https://user:secret@host", "q=1", 1.25, 10**12, 2),  # redacted
        ("t", "q", 0.1004999, 0, 0),
        ("t", "q", 123456.789, 5, 1),
        ("t" * 3000, "q", 0.5, 5, 1),  # cut
        *[("t", "q", ms / 1e4, 1, 1) for ms in (5, 15, 25, 35, 45, 95, 125, 10_005, 99_995)],
        ("t", "q", float("nan"), 1, 1),  # never measured so, but rendered as log_event would
    ],
)
def test_the_job_done_line_rendered_in_a_batch_is_the_line_log_event_writes(
    task, queue, duration_s, job_id, attempt
):
    """executor.log_done renders job_done lines itself (no LogRecord, no generic field loop):
    the same text as log_outcome's log_event, field for field."""
    from pgdyno.queue import ClaimedJob
    from pgdyno.worker import executor

    outcome = executor.Outcome(
        ClaimedJob(job_id, queue, task, {}, attempt, 25), None, None, False, duration_s
    )
    stream = io.StringIO()
    configure("INFO", stream)
    try:
        executor.log_outcome(outcome)  # not batching: through a LogRecord and the formatter
        assert stream.getvalue() == executor.done_line(outcome.job, duration_s) + "\n"
    finally:
        configure("INFO")


def test_job_done_lines_of_a_turn_are_batched_in_order_and_written_with_warnings_at_once():
    from pgdyno.queue import ClaimedJob
    from pgdyno.worker import executor

    def done(job_id: int) -> executor.Outcome:
        return executor.Outcome(ClaimedJob(job_id, "q", "t", {}, 1, 25), None, None, False, 0.002)

    stream = _CountingStream()
    configure("INFO", stream)
    warn = logging.getLogger("pgdyno.test.batch")
    try:
        logfmt.batching(True)
        executor.log_done([done(1), done(2)])
        executor.log_done([])
        assert stream.getvalue() == ""  # pending, with the worker's other lines
        log_event(warn, "lease_lost", logging.WARNING, job=9)  # at once, after them
        executor.log_done([done(3)])
        executor.log_done([done(n) for n in range(4, 4 + BatchingHandler.MAX_LINES)])
        logfmt.flush()
        lines = stream.getvalue().splitlines()
        assert lines[:3] == [
            "at=info event=job_done job=1 task=t queue=q attempt=1 duration_ms=2",
            "at=info event=job_done job=2 task=t queue=q attempt=1 duration_ms=2",
            "at=warn event=lease_lost job=9",
        ]
        jobs = [int(line.split()[2].removeprefix("job=")) for line in lines if "job_done" in line]
        assert jobs == list(range(1, 4 + BatchingHandler.MAX_LINES))
        assert stream.writes == 2  # with the warning, then at MAX_LINES (the flush: none left)
        logfmt.batching(False)
        seen: list[logging.LogRecord] = []
        executor.log.addFilter(lambda record: bool(seen.append(record)) or True)
        executor.log_done([done(99)])  # not batching: a record each, as log_outcome
        assert [record.logfmt["job"] for record in seen] == [99]
        assert stream.getvalue().endswith("job=99 task=t queue=q attempt=1 duration_ms=2\n")
    finally:
        executor.log.filters.clear()
        logfmt.batching(False)
        configure("INFO")


def test_job_done_lines_are_not_rendered_at_warning():
    from pgdyno.queue import ClaimedJob
    from pgdyno.worker import executor

    stream = io.StringIO()
    configure("WARNING", stream)
    try:
        logfmt.batching(True)
        job = ClaimedJob(1, "q", "t", {}, 1, 25)
        executor.log_done([executor.Outcome(job, None, None, False, 0.1)])
        logfmt.flush()
        assert stream.getvalue() == ""
    finally:
        logfmt.batching(False)
        configure("INFO")


def test_a_batch_that_cannot_be_written_is_reported_with_its_line_count(capsys):
    class Broken(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError("pipe closed")

    configure("INFO", Broken())
    log = logging.getLogger("pgdyno.test.broken")
    try:
        logfmt.batching(True)
        log_event(log, "job_done", job=1)
        log_event(log, "job_done", job=2)
        logfmt.flush()
        assert "could not write 2 log lines" in capsys.readouterr().err
    finally:
        logfmt.batching(False)
        configure("INFO")
