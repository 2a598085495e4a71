"""Settings: durations, flag over environment over default, and refusals that say what to fix."""

from __future__ import annotations

import pytest

from pgdyno.config import MAX_DURATION_S, Settings, format_duration, parse_duration
from pgdyno.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("15m", 900.0),
        ("7d", 604800.0),
        ("250ms", 0.25),
        ("1.5h", 5400.0),
        ("2w", 1209600.0),
        ("10", 10.0),
        ("5min", 300.0),
        ("1 min", 60.0),
        ("2sec", 2.0),
        (" 3 s ", 3.0),
        ("0", 0.0),
        (4, 4.0),
        (0.5, 0.5),
    ],
)
def test_parse_duration_reads_a_number_with_an_optional_unit(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (2.0, "2s"),
        (90.0, "90s"),
        (900.0, "15m"),
        (5400.0, "90m"),
        (7200.0, "2h"),
        (86400.0, "1d"),
        (1209600.0, "2w"),
        (0.25, "250ms"),
        (1.5, "1500ms"),
        (0.0005, "0.0005s"),
        (0.0, "0s"),
        (float(MAX_DURATION_S), "36000d"),  # not 3.1104e+09s
    ],
)
def test_format_duration_writes_the_largest_whole_unit_and_reads_back(seconds, text):
    assert format_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "-1s", "1y", "1.2.3s", "s", "7 days", "1e3"])
def test_parse_duration_refuses_anything_else_naming_the_setting_and_the_units(text):
    with pytest.raises(ConfigError) as refused:
        parse_duration(text, "PGDYNO_LEASE")
    assert str(refused.value) == (
        f"PGDYNO_LEASE {text!r} is not a duration: write a number with an optional unit "
        "(ms, s, m or min, h, d, w), for example 250ms, 30s, 5m (or 5min), 2h, 7d, 2w, "
        "or plain seconds"
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("36600000d", "--delay '36600000d' is too long: at most 100 years"),
        (1e20, "--delay 1e+20 is too long: at most 100 years"),
        (-1, "--delay -1 is not a duration: it must be a finite number of seconds, 0 or more"),
        (
            float("nan"),
            "--delay nan is not a duration: it must be a finite number of seconds, 0 or more",
        ),
        (
            float("inf"),
            "--delay inf is not a duration: it must be a finite number of seconds, 0 or more",
        ),
        (
            True,
            "--delay True is not a duration: 250ms, 30s, 5m (or 5min), 2h, 7d, 2w, or plain "
            "seconds",
        ),
    ],
)
def test_parse_duration_refuses_overflow_negative_and_nan(value, message):
    with pytest.raises(ConfigError) as refused:
        parse_duration(value, "--delay")
    assert str(refused.value) == message


def test_settings_take_the_same_durations_as_report_headers():
    assert Settings.from_env({"PGDYNO_LINGER": "1min", "PGDYNO_LEASE": "2min"}).linger == 60.0
    with pytest.raises(ConfigError, match=r"^PGDYNO_GRACE '1e20' is not a duration"):
        Settings.from_env({"PGDYNO_GRACE": "1e20"})


def test_defaults_keep_the_grace_period_under_herokus_30_seconds():
    settings = Settings.from_env({})
    assert settings.grace < 30
    assert (settings.concurrency, settings.lease, settings.poll_interval) == (1, 30.0, 2.0)
    assert settings.database_url is None


def test_environment_variables_are_read_and_converted():
    settings = Settings.from_env(
        {
            "DATABASE_URL": "postgresql://u@h/db",
            "DYNO": "winston.1",
            "PGDYNO_CONCURRENCY": "8",
            "PGDYNO_LEASE": "2m",
            "PGDYNO_GRACE": "10s",
            "PGDYNO_POLL_INTERVAL": "500ms",
            "PGDYNO_RETRY_BASE": "1",
            "PGDYNO_LOG_LEVEL": "debug",
        }
    )
    assert (settings.database_url, settings.dyno) == ("postgresql://u@h/db", "winston.1")
    assert (settings.concurrency, settings.lease, settings.grace) == (8, 120.0, 10.0)
    assert (settings.poll_interval, settings.retry_base) == (0.5, 1.0)


def test_flags_override_the_environment_and_unset_flags_do_not():
    env = {"PGDYNO_CONCURRENCY": "8", "PGDYNO_LEASE": "2m", "DATABASE_URL": "postgresql://env"}
    settings = Settings.from_env(env, concurrency=2, lease=None, database_url="postgresql://flag")
    assert (settings.concurrency, settings.lease) == (2, 120.0)
    assert settings.database_url == "postgresql://flag"
    assert Settings.from_env(env, lease="5s").lease == 5.0


def test_empty_environment_variables_count_as_unset():
    assert Settings.from_env({"PGDYNO_CONCURRENCY": "", "DATABASE_URL": ""}) == Settings()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PGDYNO_CONCURRENCY": "many"}, "PGDYNO_CONCURRENCY must be a whole number, got 'many'"),
        ({"PGDYNO_CONCURRENCY": "0"}, "concurrency must be at least 1"),
        ({"PGDYNO_LEASE": "0"}, "lease must be positive"),
        ({"PGDYNO_POLL_INTERVAL": "0s"}, "poll_interval must be positive"),
        ({"PGDYNO_GRACE": "forever"}, "PGDYNO_GRACE 'forever' is not a duration"),
        ({"PGDYNO_LOG_LEVEL": "loud"}, "PGDYNO_LOG_LEVEL must be one of"),
    ],
)
def test_invalid_settings_are_refused_saying_which_and_why(env, message):
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(")):
        Settings.from_env(env)


def test_a_zero_grace_period_is_allowed():
    assert Settings.from_env({"PGDYNO_GRACE": "0"}).grace == 0.0


def test_flag_errors_name_the_flag():
    with pytest.raises(ConfigError, match=r"^--concurrency must be a whole number"):
        Settings.from_env({}, concurrency="x")


def test_require_database_url_says_how_to_set_it():
    with pytest.raises(ConfigError, match="DATABASE_URL is not set: export DATABASE_URL="):
        Settings.from_env({}).require_database_url()
    assert Settings.from_env({"DATABASE_URL": "postgresql://x"}).require_database_url() == (
        "postgresql://x"
    )
