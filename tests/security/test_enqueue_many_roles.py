"""enqueue_many from a role that may not write ids (`pgdyno grant-enqueue ROLE --returning-id`):
its batch goes through INSERT ... RETURNING, not the COPY, and each id is still its own job's."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from security_support import cli, login_role

import pgdyno


def test_a_client_role_gets_each_jobs_own_id_whatever_columns_jobs_set(db, owner):
    jobs = [
        {
            "task": f"t{n % 3}",
            "args": {"n": n} if n % 2 else None,
            "queue": f"q{n % 4}",
            "priority": n % 5 if n % 3 == 0 else 0,
            "max_attempts": 3 if n % 7 == 0 else None,
            "timeout": timedelta(seconds=n + 1) if n % 11 == 0 else None,
            "run_at": n if n % 13 == 0 else None,
        }
        for n in range(500)
    ]
    with login_role(owner, "app") as role:
        assert cli(db, "grant-enqueue", role, "--returning-id").exit_code == 0
        url = make_conninfo(db, user=role, password="pw-of-the-test")
        with psycopg.connect(url, autocommit=True) as client:
            ids = pgdyno.enqueue_many(client, jobs)
            with pytest.raises(pgdyno.InvalidJob, match="priority must be between"):
                pgdyno.enqueue_many(client, [*jobs, {"task": "t", "priority": 5000}])
    rows = owner.execute(
        "SELECT id, task, args, queue, priority, max_attempts, timeout,"
        "       extract(epoch FROM run_at - created_at)::int FROM pgdyno.jobs"
    ).fetchall()
    assert len(rows) == len(jobs)  # the refused batch left nothing
    stored = {row[0]: row[1:] for row in rows}
    for job_id, job in zip(ids, jobs, strict=True):
        assert stored[job_id] == (
            job["task"],
            job["args"] or {},
            job["queue"],
            job["priority"],
            job["max_attempts"] or 5,
            job["timeout"],
            job["run_at"] or 0,
        )
