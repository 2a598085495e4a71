"""Applies the migrations in pgdyno/sql/migrations, once each, under an advisory lock.

Safe to run from several processes at once (a Heroku release phase and a developer, say): the
second waits for the first and then finds nothing left to do.
"""

from __future__ import annotations

import logging

import psycopg

from pgdyno import sql
from pgdyno.logfmt import log_event

log = logging.getLogger(__name__)

# Arbitrary but fixed: the advisory lock key that serializes migrations ("pgdyno" in hex-ish).
MIGRATION_LOCK_KEY = 0x706764796E6F01


def migrate(conn: psycopg.Connection) -> list[int]:
    """Apply pending migrations; return the versions applied now (empty when up to date)."""
    applied_now: list[int] = []
    key = {"key": MIGRATION_LOCK_KEY}
    conn.execute(sql.query("migration_lock"), key)
    try:
        with conn.transaction():
            conn.execute(sql.query("schema_create"))
            conn.execute(sql.query("schema_migrations_create"))
        done = set(applied_versions(conn))
        for version, name, text in sql.migrations():
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
