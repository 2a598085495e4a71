"""The reports folder: header declarations, report names that must not escape, parameter binding."""

from __future__ import annotations

import os
from datetime import date, datetime
from decimal import Decimal

import pytest
from reports_support import write_report

from pgdyno.errors import InvalidReport, PermanentJobError
from pgdyno.reports import catalog

REVENUE = """\
    -- Revenue per month, from a date on.
    -- Shows 100% of paid orders.
    -- param: since date = 2025-01-01
    -- param: country text = null          -- a null default makes it optional
    -- param: limit integer   -- required
    -- set: statement_timeout = 5min       -- also work_mem, lock_timeout, search_path, ...
    -- set: work_mem = '64MB'
    SELECT %(since)s AS since, %(country)s AS country, %(region)s AS region, 5 %% 2 AS odd
     LIMIT %(limit)s;
"""


@pytest.fixture
def folder(tmp_path):
    return tmp_path / "reports"


def test_header_declares_params_defaults_settings_and_description(folder):
    write_report(folder, "revenue", REVENUE)
    report = catalog.load(folder, "revenue")
    assert report.description == "Revenue per month, from a date on. Shows 100% of paid orders."
    assert [p.describe() for p in report.params] == [
        "since date = 2025-01-01",
        "country text = null",
        "limit integer",
        "region text",
    ]
    assert report.params[0].default == date(2025, 1, 1)
    assert report.params[1].default is None  # the trailing comment is not the default
    # Time settings are read with pgdyno's duration syntax and sent in milliseconds.
    assert report.settings == (("statement_timeout", "300000ms"), ("work_mem", "64MB"))
    assert report.sql.rstrip().endswith("LIMIT %(limit)s")
    assert "-- param" not in report.sql  # header lines are blanked, so % in them is harmless
    assert report.sql.count("\n") == REVENUE.count("\n") - 1  # line numbers still match


def test_bind_fills_defaults_and_types_values(folder):
    write_report(folder, "revenue", REVENUE)
    report = catalog.load(folder, "revenue")
    assert report.bind({"limit": "10", "region": "north"}) == {
        "since": date(2025, 1, 1),
        "country": None,
        "limit": 10,
        "region": "north",
    }
    assert report.bind({"limit": 3, "region": "x", "since": "2026-02-01", "country": "DE"})[
        "since"
    ] == date(2026, 2, 1)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"region": "x"}, "report 'revenue': missing parameter 'limit' (integer)"),
        ({}, "missing parameters 'limit' (integer), 'region' (text)"),
        (
            {"limit": 1, "region": "x", "colour": "red"},
            "unknown parameter 'colour' (it takes: since ",
        ),
        ({"limit": "ten", "region": "x"}, "parameter 'limit' must be of type integer, got 'ten'"),
        ({"limit": 1.5, "region": "x"}, "parameter 'limit' must be of type integer"),
        ({"limit": True, "region": "x"}, "parameter 'limit' must be of type integer"),
        (
            {"limit": 1, "region": "x", "since": "yesterday"},
            "parameter 'since' must be of type date",
        ),
        ({"limit": 1, "region": ["x"]}, "parameter 'region' must be of type text"),
        ({"limit": None, "region": "x"}, "parameter 'limit' must not be null"),
        (["limit", 1], "params must be a JSON object"),
    ],
)
def test_bind_refuses_bad_parameters_naming_which(folder, params, message):
    write_report(folder, "revenue", REVENUE)
    with pytest.raises(InvalidReport) as caught:
        catalog.load(folder, "revenue").bind(params)
    assert message in str(caught.value)
    assert isinstance(caught.value, PermanentJobError)  # the job fails without a retry


@pytest.mark.parametrize(
    ("type_name", "given", "expected"),
    [
        ("numeric", "12.50", Decimal("12.50")),
        ("numeric", 3, Decimal(3)),
        ("boolean", "yes", True),
        ("boolean", False, False),
        (
            "timestamptz",
            "2026-01-31T08:00:00+01:00",
            datetime.fromisoformat("2026-01-31T08:00:00+01:00"),
        ),
        ("bigint", "-9000000000", -9000000000),
        ("text[]", "DE, FR", ["DE", "FR"]),
        ("text[]", "{SE,DE}", ["SE", "DE"]),
        ("text[]", '{"New York", "a\\"b", x}', ["New York", 'a"b', "x"]),
        ("text[]", "{}", []),
        ("integer[]", "{1, 2}", [1, 2]),
        ("integer[]", [1, "2"], [1, 2]),
    ],
)
def test_parameter_types_accept_json_and_cli_spellings(folder, type_name, given, expected):
    write_report(folder, "typed", f"-- param: v {type_name}\nSELECT %(v)s")
    assert catalog.load(folder, "typed").bind({"v": given}) == {"v": expected}


@pytest.mark.parametrize(
    ("type_name", "given"),
    [
        ("numeric", "NaN"),
        ("numeric", "1,5"),
        ("boolean", "maybe"),
        ("date", "2026-02-30"),
        ("integer", str(2**63)),
        ("integer[]", "1,x"),
        ("text[]", "{SE,{DE}}"),
        ("text[]", "{SE,,DE}"),
        ("text[]", "{NULL}"),
        ("text[]", '{"SE}'),
        ("text[]", "{SE"),
        ("timestamptz", 1700000000),
    ],
)
def test_parameter_types_refuse_values_that_do_not_fit(folder, type_name, given):
    write_report(folder, "typed", f"-- param: v {type_name}\nSELECT %(v)s")
    with pytest.raises(InvalidReport) as caught:
        catalog.load(folder, "typed").bind({"v": given})
    assert f"parameter 'v' must be of type {type_name}, got {given!r}" in str(caught.value)


@pytest.mark.parametrize("name", ["../secrets", "..", "a/b", "/etc/passwd", "sub\\x", "x/../y"])
def test_names_that_escape_the_folder_are_refused(folder, name):
    write_report(folder, "ok", "SELECT 1")
    with pytest.raises(InvalidReport, match="escapes the reports folder"):
        catalog.load(folder, name)


def test_a_symlink_out_of_the_folder_is_refused(folder, tmp_path):
    write_report(tmp_path, "outside", "SELECT 'secret'")
    folder.mkdir()
    os.symlink(tmp_path / "outside.sql", folder / "inside.sql")
    with pytest.raises(InvalidReport, match="escapes the reports folder"):
        catalog.load(folder, "inside")


@pytest.mark.parametrize("name", ["", "has space", ".hidden", None, 42])
def test_invalid_names_are_refused(folder, name):
    with pytest.raises(InvalidReport, match="report name"):
        catalog.load(folder, name)


def test_unknown_report_names_the_known_ones(folder):
    write_report(folder, "alpha", "SELECT 1")
    write_report(folder, "beta", "SELECT 2")
    with pytest.raises(
        InvalidReport,
        match=r"unknown report 'gamma': there is no gamma.sql in "
        r".* \(known reports: alpha, beta\)",
    ):
        catalog.load(folder, "gamma")
    assert catalog.names(folder) == ["alpha", "beta"]


def test_missing_folder_says_which_setting_to_fix(tmp_path):
    with pytest.raises(InvalidReport, match=r"does not exist .*PGDYNO_REPORTS_DIR"):
        catalog.load(tmp_path / "nowhere", "x")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("-- param: x text\nSELECT 1", "declares parameter 'x' but the query never uses %(x)s"),
        ("-- param: x text\n-- param: x integer\nSELECT %(x)s", "'x' is declared twice"),
        ("-- param: x money\nSELECT %(x)s", "unknown parameter type 'money'"),
        ("-- param: x date = soon\nSELECT %(x)s", "the default on line 1 does not fit"),
        ("-- param x\nSELECT 1", None),  # not a declaration: part of the description
        ("-- param: \nSELECT 1", "cannot read header line 1"),
        ("-- set: role = admin\nSELECT 1", "setting 'role' (line 1) may not be set"),
        ("-- set: default_transaction_read_only = off\nSELECT 1", "may not be set by a report"),
        (
            "-- set: statement_timeout = 5 minutes\nSELECT 1",
            "statement_timeout (line 1) '5 minutes' is not a duration: write a number with an "
            "optional unit (ms, s, m or min, h, d, w)",
        ),
        (
            "-- param: x text =   -- nothing\nSELECT %(x)s",
            "parameter 'x' (line 1) has '=' but no default; write a value or null",
        ),
        ("DELETE FROM orders", "starts with DELETE, so it is not a read-only query"),
        ("SELECT 1; DROP TABLE orders", "holds 2 statements"),
        ("SELECT 100 % 3", "stray '% ' at line 1: write %% for a literal %"),
        ("SELECT %s", "stray '%s'"),
        ("-- only a comment\n", "holds no SQL statement"),
        ("SELECT 'unterminated", "unterminated quoted string starting at line 1"),
    ],
)
def test_invalid_report_files_say_what_to_fix(folder, text, message):
    write_report(folder, "r", text)
    if message is None:
        catalog.load(folder, "r")
        return
    with pytest.raises(InvalidReport) as caught:
        catalog.load(folder, "r")
    assert message in str(caught.value)
    assert "report 'r' (" in str(caught.value)  # names the file


def test_header_values_end_at_a_trailing_comment_outside_quotes(folder):
    write_report(
        folder,
        "dashes",
        "-- param: sep text = '--' -- a quoted -- is part of the value\n"
        "-- param: since date = 2025-01-01--no space needed\n"
        "-- set: lock_timeout = 250ms--short\n"
        "-- set: search_path = 'demo, public'   -- quoted\n"
        "SELECT %(sep)s, %(since)s",
    )
    report = catalog.load(folder, "dashes")
    assert [p.default for p in report.params] == ["--", date(2025, 1, 1)]
    assert report.settings == (("lock_timeout", "250ms"), ("search_path", "demo, public"))
