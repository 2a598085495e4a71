"""logfmt lines: one record per event, quoted when needed, no passwords."""

from __future__ import annotations

import io
import logging

import pytest

from pgdyno.logfmt import LogfmtFormatter, configure, format_value, log_event, render


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
