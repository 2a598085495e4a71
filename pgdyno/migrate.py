"""The schema's version: applies the migrations in pgdyno/sql/migrations, once each, under an
advisory lock, and checks that a database is migrated before anything else uses it.

Safe to run from several processes at once (a Heroku release phase and a developer, say): the
second waits for the first and then finds nothing left to do. `require_migrated` is the one
check every command, the worker and the dispatcher make after connecting.
"""

from __future__ import annotations

import logging

import psycopg

from pgdyno import sql
from pgdyno.errors import SchemaNotMigrated
from pgdyno.logfmt import log_event

log = logging.getLogger(__name__)

# Arbitrary but fixed: the advisory lock key that serializes migrations ("pgdyno" in hex-ish).
MIGRATION_LOCK_KEY = 0x706764796E6F01


def migrate(conn: psycopg.Connection) -> list[int]:
    """Apply pending migrations; return the versions applied now (empty when up to date)."""
    applied_now: list[int] = []
    available = sql.migrations()  # ConfigError when the package ships none: nothing is created
    key = {"key": MIGRATION_LOCK_KEY}
    conn.execute(sql.query("migration_lock"), key)
    try:
        with conn.transaction():
            conn.execute(sql.query("schema_create"))
            conn.execute(sql.query("schema_migrations_create"))
        done = set(applied_versions(conn))
        for version, name, text in available:
            if version in done:
                continue
            with conn.transaction():
                conn.execute(text)
                conn.execute(
                    sql.query("schema_migration_record"), {"version": version, "name": name}
                )
            log_event(log, "migration_applied", version=version, name=name)
            applied_now.append(version)
    finally:
        conn.execute(sql.query("migration_unlock"), key)
    return applied_now


def applied_versions(conn: psycopg.Connection) -> list[int]:
    """The migration versions recorded in pgdyno.schema_migrations, in order."""
    rows = conn.execute(sql.query("schema_migrations_applied")).fetchall()
    return [row[0] for row in rows]


def pending_versions(conn: psycopg.Connection) -> list[int]:
    """The versions this pgdyno ships that the database has not applied, in order
    (all of them when `pgdyno migrate` never ran there)."""
    shipped = sql.migration_versions()
    exists = conn.execute(sql.query("schema_migrations_exists")).fetchone()
    if not exists or not exists[0]:
        return shipped
    done = set(applied_versions(conn))
    return [version for version in shipped if version not in done]


def require_migrated(conn: psycopg.Connection) -> None:
    """Raise SchemaNotMigrated, saying to run `pgdyno migrate`, unless every migration this
    pgdyno ships is applied. A role that may not read pgdyno.schema_migrations (a
    least-privilege enqueue role) is not checked: its statements say what is missing."""
    try:
        missing = pending_versions(conn)
    except psycopg.errors.InsufficientPrivilege:
        if not conn.autocommit:
            conn.rollback()
        return
    if not missing:
        return
    shipped = len(sql.migration_versions())
    if len(missing) == shipped:
        state = "has no pgdyno schema"
    else:
        state = f"is missing pgdyno migration{'s' if len(missing) > 1 else ''} " + ", ".join(
            f"{version:04d}" for version in missing
        )
    raise SchemaNotMigrated(
        f"the database {conn.info.dbname!r} {state}: run `pgdyno migrate` "
        "(on Heroku, in the release phase: `release: pgdyno migrate`)"
    )
