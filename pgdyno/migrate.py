"""Applies the migrations in sql/migrations, once each, under an advisory lock.

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
    conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
    try:
        with conn.transaction():
            conn.execute("CREATE SCHEMA IF NOT EXISTS pgdyno")
            conn.execute(
                """CREATE TABLE IF NOT EXISTS pgdyno.schema_migrations (
                       version integer PRIMARY KEY,
                       name text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
        done = {row[0] for row in conn.execute("SELECT version FROM pgdyno.schema_migrations")}
        for version, name, text in sql.migrations():
            if version in done:
                continue
            with conn.transaction():
                conn.execute(text)
                conn.execute(
                    "INSERT INTO pgdyno.schema_migrations (version, name) VALUES (%s, %s)",
                    (version, name),
                )
            log_event(log, "migration_applied", version=version, name=name)
            applied_now.append(version)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
    return applied_now


def applied_versions(conn: psycopg.Connection) -> list[int]:
    rows = conn.execute("SELECT version FROM pgdyno.schema_migrations ORDER BY version").fetchall()
    return [row[0] for row in rows]
