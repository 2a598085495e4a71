"""A worker process runs what is due, in order, retries with backoff and fails what cannot work.

Each test starts real `pgdyno worker` processes against a fresh database and watches the jobs
table; nothing is mocked.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import time
from datetime import UTC, datetime, timedelta

from helpers import (
    cpu_seconds,
    effects_of,
    job_row,
    log_fields,
    open_gate,
    psql_binary,
    wait_for_listeners,
    wait_for_status,
    wait_until,
    worker,
)

import pgdyno


def test_job_inserted_by_psql_is_executed(effects, database_url):
    with worker(database_url, "reports") as proc:
        wait_for_listeners(effects, 1)
        result = subprocess.run(
            [
                psql_binary(),
                database_url,
                "-v",
                "ON_ERROR_STOP=1",
                "-qtA",
                "-c",
                "INSERT INTO pgdyno.jobs (queue, task, args)"
                " VALUES ('reports', 'record', '{\"key\": \"from-psql\"}') RETURNING id",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        job_id = int(result.stdout.split()[0])
        row = wait_for_status(effects, job_id, "done")
        proc.signal(15)
        assert proc.wait() == 0
    assert row["result"] == {"key": "from-psql"}
    assert row["attempts"] == 1
    assert [e["kind"] for e in effects_of(effects, "from-psql")] == ["start", "done"]


def test_job_scheduled_in_the_future_does_not_run_before_its_run_at(effects, database_url):
    with worker(database_url, "q", extra=["--poll-interval", "0.1s"]) as proc:
        wait_for_listeners(effects, 1)
        job_id = pgdyno.enqueue(effects, "record", {"key": "later"}, queue="q", run_at=1.5)
        row = wait_for_status(effects, job_id, "done")
        proc.signal(15)
        assert proc.wait() == 0
    started = effects_of(effects, "later", "start")[0]["at"]
    assert started >= row["run_at"]
    assert (row["run_at"] - row["created_at"]).total_seconds() >= 1.5


def test_scheduled_job_runs_when_due_without_waiting_for_the_next_poll(effects, database_url):
    # The poll interval (30 s) is far longer than the delay: only the worker's own timer for
    # the earliest scheduled job can start it in time.
    with worker(database_url, "q", extra=["--poll-interval", "30s"]) as proc:
        wait_for_listeners(effects, 1)
        with effects.transaction():  # the noop's notification wakes the worker, which then
            pgdyno.enqueue(effects, "noop", queue="q")  # sees the scheduled job and sets a timer
            job_id = pgdyno.enqueue(effects, "record", {"key": "soon"}, queue="q", run_at=0.5)
        wait_for_status(effects, job_id, "done", timeout=10)
        proc.signal(15)
        assert proc.wait() == 0


def test_higher_priority_runs_first_then_earlier_run_at_then_lower_id(effects, database_url):
    due = datetime.now(UTC) - timedelta(minutes=1)
    keys = {  # key: (priority, run_at); "mid-early-2" differs from "mid-early" only by id
        "low": (-5, due - timedelta(seconds=30)),
        "mid-late": (0, due),
        "mid-early": (0, due - timedelta(seconds=20)),
        "high": (10, due),
        "mid-early-2": (0, due - timedelta(seconds=20)),
    }
    for key, (priority, run_at) in keys.items():
        pgdyno.enqueue(effects, "record", {"key": key}, queue="q", priority=priority, run_at=run_at)
    with worker(database_url, "q", burst=True) as proc:
        assert proc.wait() == 0
    order = [
        r[0]
        for r in effects.execute(
            "SELECT job_key FROM test_effects WHERE kind = 'start' ORDER BY id"
        )
    ]
    assert order == ["high", "mid-early", "mid-early-2", "mid-late", "low"]


def test_failing_job_retries_with_growing_backoff_and_fails_after_max_attempts(
    effects, database_url
):
    base = 0.2
    job_id = pgdyno.enqueue(effects, "boom", {"message": "flaky"}, queue="q", max_attempts=4)
    with worker(
        database_url, "q", PGDYNO_RETRY_BASE=str(base), extra=["--poll-interval", "30s"]
    ) as proc:
        row = wait_for_status(effects, job_id, "failed", timeout=20)
        proc.signal(15)
        assert proc.wait() == 0
        output = proc.output()
    assert row["attempts"] == 4
    assert row["last_error"].startswith("RuntimeError: flaky\nTraceback")
    assert "in boom" in row["last_error"]
    attempts = [e["at"] for e in effects_of(effects, "flaky", "attempt")]
    assert len(attempts) == 4
    delays = [float(r["retry_in_s"]) for r in log_fields(output, "job_retry")]
    assert len(delays) == 3
    for attempt, delay in enumerate(delays, start=1):
        nominal = base * 2 ** (attempt - 1)  # doubling, jittered by a factor in [0.5, 1.5)
        assert 0.5 * nominal - 0.001 <= delay <= 1.5 * nominal
    assert delays[2] > delays[0]  # 4x the base with jitter always beats 1x with jitter
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(attempts)]
    for gap, delay in zip(gaps, delays, strict=True):
        assert gap >= delay - 0.002  # never early...
        assert gap < delay + 5  # ...and not left for the 30 s poll
    assert len(log_fields(output, "job_failed")) == 1


def test_unknown_task_fails_at_once_naming_the_task_and_logs_the_imported_modules(
    effects, database_url
):
    job_id = pgdyno.enqueue(effects, "no_such_task", queue="q")
    with worker(database_url, "q", burst=True) as proc:
        assert proc.wait() == 0
        output = proc.output()
    row = job_row(effects, job_id)
    assert (row["status"], row["attempts"]) == ("failed", 1)
    assert row["last_error"].startswith("UnknownTask: unknown task 'no_such_task'")
    assert "--import" in row["last_error"] and "sample_tasks" not in row["last_error"]
    [logged] = log_fields(output, "unknown_task")
    assert "sample_tasks" in logged["imported"].split(",") and "noop" in logged["known"]


def test_permanent_job_error_fails_without_retry(effects, database_url):
    job_id = pgdyno.enqueue(effects, "permanent", queue="q", max_attempts=5)
    with worker(database_url, "q", burst=True) as proc:
        assert proc.wait() == 0
    row = job_row(effects, job_id)
    assert (row["status"], row["attempts"]) == ("failed", 1)
    assert row["last_error"] == "PermanentJobError: this cannot work"


def test_job_whose_args_the_task_cannot_take_fails_without_retry(effects, database_url):
    job_id = pgdyno.enqueue(effects, "record", {"kee": "typo"}, queue="q", max_attempts=5)
    with worker(database_url, "q", burst=True) as proc:
        assert proc.wait() == 0
    row = job_row(effects, job_id)
    assert (row["status"], row["attempts"]) == ("failed", 1)
    assert row["last_error"].startswith("InvalidArguments: task 'record' cannot take args ['kee']")
    assert effects_of(effects, "typo") == []


def test_burst_worker_exits_0_once_its_queues_are_drained(effects, database_url):
    ids = [
        pgdyno.enqueue(effects, "record", {"key": f"k{n}"}, queue=q)
        for n, q in enumerate(["a", "b", "a", "b", "a"])
    ]
    other = pgdyno.enqueue(effects, "record", {"key": "other"}, queue="elsewhere")
    with worker(database_url, "a", "b", concurrency=2, burst=True) as proc:
        assert proc.wait() == 0
        assert "event=queues_drained" in proc.output()
    assert {job_row(effects, i)["status"] for i in ids} == {"done"}
    assert job_row(effects, other)["status"] == "ready"


def test_burst_worker_on_an_empty_queue_exits_0_at_once(effects, database_url):
    pgdyno.enqueue(effects, "record", {"key": "tomorrow"}, queue="q", run_at=86400)
    started = time.monotonic()
    with worker(database_url, "q", burst=True) as proc:
        assert proc.wait() == 0
    assert time.monotonic() - started < 10
    assert effects_of(effects, "tomorrow") == []


def test_idle_worker_uses_almost_no_cpu(effects, database_url):
    with worker(database_url, "q", extra=["--poll-interval", "0.5s"]) as proc:
        wait_for_listeners(effects, 1)
        job_id = pgdyno.enqueue(effects, "noop", queue="q")
        wait_for_status(effects, job_id, "done")
        before, started = cpu_seconds(proc.pid), time.monotonic()
        wait_until(
            lambda: time.monotonic() - started >= 2.0, interval=0.1, message="two idle seconds"
        )
        used = cpu_seconds(proc.pid) - before
        proc.signal(15)
        assert proc.wait() == 0
    assert used < 0.2, f"an idle worker used {used:.2f} s of CPU in 2 s"


def test_task_sees_its_own_job_through_current_job(effects, database_url):
    job_id = pgdyno.enqueue(effects, "whoami", queue="q", max_attempts=3)
    with worker(database_url, "q", burst=True) as proc:
        assert proc.wait() == 0
    assert job_row(effects, job_id)["result"] == {
        "id": job_id,
        "queue": "q",
        "task": "whoami",
        "attempt": 1,
        "max_attempts": 3,
    }


def test_result_that_json_cannot_hold_fails_the_job_and_the_worker_goes_on(effects, database_url):
    bad = pgdyno.enqueue(effects, "not_a_number", queue="q", priority=1)
    good = pgdyno.enqueue(effects, "record", {"key": "after"}, queue="q")
    with worker(database_url, "q", burst=True) as proc:
        assert proc.wait() == 0, proc.output()[-2000:]
    row = job_row(effects, bad)
    assert (row["status"], row["attempts"]) == ("failed", 1)
    assert "JSON" in row["last_error"]
    assert job_row(effects, good)["status"] == "done"


def test_worker_logs_each_job_as_one_logfmt_line(effects, database_url):
    job_id = pgdyno.enqueue(effects, "noop", queue="q")
    with worker(database_url, "q", burst=True) as proc:
        assert proc.wait() == 0
        done = log_fields(proc.output(), "job_done")
    assert len(done) == 1
    assert done[0]["job"] == str(job_id)
    assert (done[0]["task"], done[0]["queue"], done[0]["at"]) == ("noop", "q", "info")
    assert float(done[0]["duration_ms"]) >= 0
    assert json.dumps(done)  # plain strings only


def test_worker_runs_up_to_its_concurrency_at_once_and_no_more(effects, database_url):
    ids = [pgdyno.enqueue(effects, "gate", {"key": f"g{n}"}, queue="q") for n in range(4)]
    with worker(database_url, "q", concurrency=3) as proc:
        wait_until(
            lambda: (
                effects.execute(
                    "SELECT count(*) FROM test_effects WHERE kind = 'start'"
                ).fetchone()[0]
                == 3
            ),
            message="three jobs running together",
        )
        states = effects.execute(
            "SELECT status::text, count(*) FROM pgdyno.jobs GROUP BY 1 ORDER BY 1"
        ).fetchall()
        assert states == [("ready", 1), ("running", 3)]
        for n in range(4):
            open_gate(effects, f"g{n}")
        for job_id in ids:
            wait_for_status(effects, job_id, "done")
        proc.signal(15)
        assert proc.wait() == 0
    assert (
        effects.execute("SELECT count(*) FROM test_effects WHERE kind = 'done'").fetchone()[0] == 4
    )
