-- Named statements for schema bookkeeping and the dispatcher's leadership.

-- name: migration_lock
-- Serializes `pgdyno migrate` runs (a release phase and a developer, say).
SELECT pg_advisory_lock(%(key)s);

-- name: migration_unlock
SELECT pg_advisory_unlock(%(key)s);

-- name: schema_create
CREATE SCHEMA IF NOT EXISTS pgdyno;

-- name: schema_migrations_create
CREATE TABLE IF NOT EXISTS pgdyno.schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- name: schema_migrations_applied
SELECT version FROM pgdyno.schema_migrations ORDER BY version;

-- name: schema_migration_record
INSERT INTO pgdyno.schema_migrations (version, name) VALUES (%(version)s, %(name)s);

-- name: leader_try_lock
-- The acting dispatcher holds this session lock; standbys try it every second.
SELECT pg_try_advisory_lock(%(key)s);

-- name: schema_migrations_exists
-- Whether `pgdyno migrate` ever ran here: its bookkeeping table exists.
SELECT to_regclass('pgdyno.schema_migrations') IS NOT NULL;
