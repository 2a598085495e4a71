"""The named-statement loader: every statement the code asks for exists and binds by name."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pgdyno import sql
from pgdyno.errors import ConfigError

PGDYNO_DIR = Path(__file__).resolve().parents[2] / "pgdyno"


def test_parse_splits_named_blocks_and_strips_trailing_semicolons():
    text = "-- a file comment\n-- name: first\nSELECT 1;\n\n-- name: second\n-- why\nSELECT 2\n"
    assert sql.parse(text) == {"first": "SELECT 1", "second": "-- why\nSELECT 2"}


def test_a_name_defined_twice_is_an_error_naming_it():
    with pytest.raises(ConfigError, match=r"'twice' is defined twice in x\.sql"):
        sql.parse("-- name: twice\nSELECT 1;\n-- name: twice\nSELECT 2;\n", "x.sql")


def test_asking_for_an_unknown_statement_is_an_error_naming_it():
    with pytest.raises(ConfigError, match="no SQL statement named 'nope'"):
        sql.query("nope")


def test_every_statement_the_code_asks_for_exists():
    asked = set()
    for path in PGDYNO_DIR.rglob("*.py"):
        asked |= set(re.findall(r"sql\.query\(\"(\w+)\"\)", path.read_text()))
    assert asked  # the scan found the callers
    for name in sorted(asked):
        assert sql.query(name)


def test_statements_bind_parameters_by_name_only():
    for name in (
        "job_insert",
        "job_complete_and_claim",
        "job_fail",
        "job_rescue_expired",
        "job_list",
        "job_prune",
    ):
        statement = sql.query(name)
        assert not re.search(r"(?<!%)%[sbt]|\{\w*\}", statement), name
        assert not statement.rstrip().endswith(";")


def test_migrations_are_numbered_and_in_order():
    found = sql.migrations()
    versions = [version for version, _, _ in found]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)
    assert found[0][:2] == (1, "queue")
    assert "CREATE TABLE pgdyno.jobs" in found[0][2]


def test_a_migration_file_without_a_number_is_an_error(tmp_path, monkeypatch):
    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "first_schema.sql").write_text("SELECT 1")
    with pytest.raises(ConfigError, match=r"must be named NNNN_name\.sql"):
        sql.migrations(tmp_path / "migrations")


def test_an_empty_migrations_folder_is_an_error_that_says_to_reinstall(tmp_path):
    with pytest.raises(ConfigError, match="installation is incomplete"):
        sql.migrations(tmp_path)
