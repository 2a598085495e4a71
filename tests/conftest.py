"""Test fixtures: one real Postgres per test session, a fresh migrated database per test.

The tiers, by what a test touches:
- tests/unit: no I/O (no database, no process, no socket); the stateful core is driven with
  the fakes of tests/fakes.py (a clock, the worker's statements, dyno processes);
- tests/integration: one real dependency in the test's process: this Postgres (never a mock
  of it), or a loopback HTTP server (the Heroku client, the local formation API);
- tests/acceptance: pgdyno's processes end to end (workers, dispatchers, the local platform).

The server is the embedded one unless PGDYNO_TEST_DATABASE_URL (or DATABASE_URL) names a
server whose user may create databases. Each test gets its own database cloned from a migrated
template, so tests never see each other's jobs.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgdyno.migrate import migrate

_counter = itertools.count()


def _with_db(url: str, dbname: str) -> str:
    return make_conninfo(url, dbname=dbname)


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """URL of a server where tests may create databases."""
    url = os.environ.get("PGDYNO_TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    from pgdyno.platform.postgres import EmbeddedPostgres

    server = EmbeddedPostgres(
        Path(tempfile.mkdtemp(prefix="pgdyno-test-")) / "pg",
        settings={"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"},
    )
    try:
        yield server.start()
    finally:
        server.destroy()


@pytest.fixture(scope="session")
def template_db(pg_admin_url: str) -> Iterator[str]:
    name = f"pgdyno_template_{os.getpid()}"
    with psycopg.connect(pg_admin_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
    with psycopg.connect(_with_db(pg_admin_url, name), autocommit=True) as conn:
        migrate(conn)
    yield name
    with psycopg.connect(pg_admin_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')


def _throwaway_database(pg_admin_url: str, prefix: str, template: str = "") -> Iterator[str]:
    """A new database (a copy of `template`, if given) for one test; dropped afterwards."""
    name = f"{prefix}_{os.getpid()}_{next(_counter)}"
    copy_of = f' TEMPLATE "{template}"' if template else ""
    with psycopg.connect(pg_admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"{copy_of}')
    yield _with_db(pg_admin_url, name)
    with psycopg.connect(pg_admin_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def database_url(pg_admin_url: str, template_db: str) -> Iterator[str]:
    """A fresh, migrated database for this test."""
    yield from _throwaway_database(pg_admin_url, "pgdyno_test", template_db)


@pytest.fixture
def empty_url(pg_admin_url: str) -> Iterator[str]:
    """A database without the pgdyno schema (an app before its release phase ran)."""
    yield from _throwaway_database(pg_admin_url, "pgdyno_empty")


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection]:
    """An autocommit connection to this test's database."""
    with psycopg.connect(database_url, autocommit=True) as connection:
        yield connection


@pytest.fixture
def db_params(database_url: str) -> dict[str, str]:
    return {k: str(v) for k, v in conninfo_to_dict(database_url).items()}


@pytest.fixture
def effects(conn: psycopg.Connection) -> psycopg.Connection:
    """The table where sample tasks record their side effects (one row per execution)."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS test_effects (id bigserial PRIMARY KEY, kind text NOT NULL,"
        " job_key text NOT NULL, pid int NOT NULL, extra jsonb,"
        " at timestamptz NOT NULL DEFAULT clock_timestamp())"
    )
    return conn
