"""A first end-to-end check: a job inserted with plain SQL is run by a worker process."""

from __future__ import annotations

from helpers import wait_until, worker


def test_job_inserted_with_sql_is_run_by_a_worker(effects, database_url):
    job_id = effects.execute(
        "INSERT INTO pgdyno.jobs (queue, task, args) VALUES ('q', 'record', '{\"key\": \"a\"}')"
        " RETURNING id"
    ).fetchone()[0]
    with worker(database_url, "q") as proc:
        wait_until(
            lambda: (
                effects.execute(
                    "SELECT status FROM pgdyno.jobs WHERE id = %s", (job_id,)
                ).fetchone()[0]
                == "done"
            ),
            message="job done",
        )
        proc.signal(15)
        assert proc.wait() == 0
    kinds = [r[0] for r in effects.execute("SELECT kind FROM test_effects ORDER BY id")]
    assert kinds == ["start", "done"]
