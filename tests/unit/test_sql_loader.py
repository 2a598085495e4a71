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


def test_migration_versions_are_those_of_the_migrations_without_reading_them(tmp_path):
    (tmp_path / "0002_second.sql").write_text("SELECT 2")
    (tmp_path / "0001_first.sql").write_text("SELECT 1")
    assert sql.migration_versions(tmp_path) == [1, 2]
    assert sql.migration_versions() == [version for version, _, _ in sql.migrations()]
    (tmp_path / "third.sql").write_text("SELECT 3")
    with pytest.raises(ConfigError, match=r"must be named NNNN_name\.sql"):
        sql.migration_versions(tmp_path)


@pytest.fixture
def sql_folder(tmp_path, monkeypatch):
    """The core statements read from `tmp_path` by a fresh loader."""
    monkeypatch.setattr(sql, "sql_dir", lambda: tmp_path)
    monkeypatch.setattr(sql, "_statements", sql._Statements())
    sql._core_texts.cache_clear()
    yield tmp_path
    sql._core_texts.cache_clear()


def test_a_name_is_found_in_its_file_and_the_files_without_it_are_not_parsed(sql_folder):
    (sql_folder / "a.sql").write_text("-- name: alpha\nSELECT 1;\n-- name: alpha_two\nSELECT 2;\n")
    (sql_folder / "b.sql").write_text("-- name: beta\nSELECT 'b';\n")
    # Parsing this file would fail: a name defined twice.
    (sql_folder / "c.sql").write_text("-- name: twice\nSELECT 1;\n-- name: twice\nSELECT 2;\n")
    assert sql.query("beta") == "SELECT 'b'"
    assert sql.query("alpha_two") == "SELECT 2"
    assert sql.query("alpha") == "SELECT 1"  # a.sql was parsed for alpha_two: read once
    with pytest.raises(ConfigError, match="'twice' is defined twice"):
        sql.query("twice")


def test_a_name_defined_in_two_files_is_an_error_once_both_are_parsed(sql_folder):
    (sql_folder / "a.sql").write_text("-- name: shared\nSELECT 1;\n")
    (sql_folder / "b.sql").write_text("-- name: other\nSELECT 2;\n-- name: shared\nSELECT 3;\n")
    assert sql.query("shared") == "SELECT 1"  # the first file in name order that defines it
    with pytest.raises(ConfigError, match="'shared' is defined in two files"):
        sql.query("other")
    with pytest.raises(ConfigError, match="'shared' is defined in two files"):
        sql.statements()


def test_an_unknown_name_is_an_error_after_looking_in_every_file_that_mentions_it(sql_folder):
    (sql_folder / "a.sql").write_text("-- name: alpha\n-- unlike alphabet\nSELECT 1;\n")
    with pytest.raises(ConfigError, match="no SQL statement named 'alphabet'"):
        sql.query("alphabet")
    assert sql.query("alpha") == "-- unlike alphabet\nSELECT 1"


def test_no_sql_file_at_all_says_to_reinstall(sql_folder):
    with pytest.raises(ConfigError, match="no SQL files found"):
        sql.query("anything")


def test_every_core_statement_is_defined_once_across_the_files():
    every = sql.statements()
    assert "job_complete_and_claim" in every and "sleepers_prune" in every
    for name, statement in every.items():
        assert sql.query(name) == statement


def test_the_core_statements_are_read_from_the_package_folder_in_the_file_system():
    assert sql.sql_dir() == PGDYNO_DIR / "sql"
