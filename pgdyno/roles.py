"""The enqueue role: the database role a client that is not pgdyno (a Rails app, a psql script,
a partner's service) enqueues with, and the one command that makes a role one.

An enqueue role has USAGE on the pgdyno schema and INSERT on the columns of
`pgdyno.enqueue_columns()` (queue, task, args, priority, run_at, max_attempts, timeout,
unique_key) and nothing else
that writes; with `returning_id`, SELECT on the id column too, which `INSERT ... RETURNING id`,
`pgdyno.enqueue` and `pgdyno.enqueue_many` need. The database enforces the rest (migration
0009): such a role cannot choose a job's id, status, attempts, worker, lease or result, and a
role that could INSERT those columns is refused until it is granted this way.
"""

from __future__ import annotations

import psycopg

from pgdyno import sql


def grant_enqueue(
    conn: psycopg.Connection, role: str, *, returning_id: bool = False, apply: bool = True
) -> list[str]:
    """Make `role` an enqueue role; returns the statements (run now unless `apply` is False).

    Runs as `conn`'s role, which must own the pgdyno schema's tables (what `pgdyno migrate`
    ran as). Raises psycopg errors from Postgres: UndefinedObject for an unknown role,
    InvalidGrantOperation for pgdyno's own role (the owner, a member of it, a superuser), to
    which the enqueue rules do not apply, InsufficientPrivilege for a caller that may not grant.
    """
    name = "grant_enqueue" if apply else "grant_enqueue_statements"
    params = {"role": role, "returning_id": returning_id}
    with conn.transaction():
        return [row[0] for row in conn.execute(sql.query(name), params).fetchall()]
