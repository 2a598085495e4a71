"""The CLI on a real database through click's CliRunner: enqueue, status, jobs, prune, migrate."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from helpers import PgdynoProcess, job_row

import pgdyno
from pgdyno import queue
from pgdyno.cli import main


@pytest.fixture
def cli(database_url):
    runner = CliRunner()

    def invoke(*args: str, env: dict[str, str] | None = None):
        return runner.invoke(
            main,
            [*args, "--database-url", database_url],
            env={"DATABASE_URL": None, "PGDYNO_LOG_LEVEL": "WARNING", **(env or {})},
        )

    return invoke


def _finished(conn, state: str, queue_name: str = "q", days_ago: float = 0) -> int:
    """A job that finished `days_ago` days ago in `state` (done, failed or cancelled)."""
    return conn.execute(
        "INSERT INTO pgdyno.jobs (queue, task, status, attempts, last_error, finished_at)"
        " VALUES (%s, 't', %s::pgdyno.job_status, 1, %s, now() - %s * interval '1 day')"
        " RETURNING id",
        (queue_name, state, "ValueError: bad\nline two" if state == "failed" else None, days_ago),
    ).fetchone()[0]


# --- enqueue ------------------------------------------------------------------------------------


def test_enqueue_prints_the_new_job_id(cli, conn):
    result = cli(
        "enqueue",
        "send_invoice",
        "--queue",
        "mail",
        "--args",
        '{"id": 7}',
        "--priority",
        "3",
        "--max-attempts",
        "2",
        "--delay",
        "60",
    )
    assert result.exit_code == 0, result.output
    row = job_row(conn, int(result.stdout))
    assert (row["task"], row["queue"], row["args"], row["priority"], row["max_attempts"]) == (
        "send_invoice",
        "mail",
        {"id": 7},
        3,
        2,
    )
    assert (row["run_at"] - row["created_at"]).total_seconds() == 60


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            "{id: 7}",
            "not valid JSON (Expecting property name enclosed in double quotes at column 2)",
        ),
        ('{"id": 7', "not valid JSON"),
        ("[1, 2]", 'must be a JSON object such as {"id": 7}, got list: [1, 2]'),
        ('"x"', "must be a JSON object"),
    ],
)
def test_enqueue_with_invalid_json_exits_2_saying_what_is_wrong(cli, conn, args, message):
    result = cli("enqueue", "t", "--args", args)
    assert result.exit_code == 2
    assert "Invalid value for '--args'" in result.output
    assert message in result.output
    assert conn.execute("SELECT count(*) FROM pgdyno.jobs").fetchone()[0] == 0


def test_enqueue_process_with_invalid_json_exits_2(database_url, conn):
    with PgdynoProcess(["enqueue", "t", "--args", "{nope"], database_url) as proc:
        assert proc.wait() == 2
        assert "not valid JSON" in proc.output()
    assert conn.execute("SELECT count(*) FROM pgdyno.jobs").fetchone()[0] == 0


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--priority", "5000"], "priority must be between -1000 and 1000"),
        (["--max-attempts", "0"], "max_attempts must be between 1 and 1000"),
        (["--queue", ""], "queue must be a non-empty name"),
    ],
)
def test_enqueue_refused_by_the_database_exits_1_with_its_message(cli, conn, flags, message):
    result = cli("enqueue", "t", *flags)
    assert result.exit_code == 1
    assert f"Error: job refused: {message}" in result.output
    assert "Traceback" not in result.output
    assert conn.execute("SELECT count(*) FROM pgdyno.jobs").fetchone()[0] == 0


def test_command_without_a_database_url_says_how_to_set_one():
    result = CliRunner().invoke(main, ["status"], env={"DATABASE_URL": None})
    assert result.exit_code == 1
    assert "DATABASE_URL is not set" in result.output


# --- status -------------------------------------------------------------------------------------


def test_status_json_has_exactly_the_documented_shape(cli, conn):
    for _ in range(3):
        _finished(conn, "done", "reports")
    result = cli("status", "--json")
    assert result.exit_code == 0, result.output
    parsed = json.loads(result.stdout)
    assert parsed["queues"] == {
        "reports": {
            "ready": 0,
            "running": 0,
            "done": 3,
            "failed": 0,
            "cancelled": 0,
            "oldest_ready_age_s": None,
        }
    }
    assert list(parsed["queues"]["reports"]) == [
        "ready",
        "running",
        "done",
        "failed",
        "cancelled",
        "oldest_ready_age_s",
    ]


def test_status_counts_every_status_and_the_age_of_the_oldest_due_job(cli, conn):
    pgdyno.enqueue(conn, "t", queue="q", run_at=-40)
    pgdyno.enqueue(conn, "t", queue="q", run_at=-10)
    pgdyno.enqueue(conn, "t", queue="q", run_at=3600)  # ready, not due: no age
    pgdyno.enqueue(conn, "t", queue="q", run_at=-5, priority=9)
    queue.complete_and_claim(conn, worker="w", queues=["q"], limit=1, lease=30)
    _finished(conn, "failed")
    _finished(conn, "cancelled")
    _finished(conn, "done", "other")
    queues = json.loads(cli("status", "--json").stdout)["queues"]
    assert set(queues) == {"q", "other"}
    q = queues["q"]
    assert (q["ready"], q["running"], q["done"], q["failed"], q["cancelled"]) == (3, 1, 0, 1, 1)
    assert 40 <= q["oldest_ready_age_s"] < 100
    assert queues["other"]["oldest_ready_age_s"] is None


def test_status_prints_a_table(cli, conn):
    pgdyno.enqueue(conn, "t", queue="reports", run_at=-2)
    lines = cli("status").stdout.splitlines()
    assert lines[0].split() == [
        "queue",
        "ready",
        "running",
        "done",
        "failed",
        "cancelled",
        "oldest",
        "ready",
    ]
    assert lines[1].split()[:6] == ["reports", "1", "0", "0", "0", "0"]
    assert lines[1].endswith("s")


def test_status_of_an_empty_queue(cli):
    assert cli("status").stdout == "no jobs\n"
    assert json.loads(cli("status", "--json").stdout)["queues"] == {}


# --- jobs list / show ---------------------------------------------------------------------------


def test_jobs_list_shows_newest_first_and_filters_by_queue_and_status(cli, conn):
    first = pgdyno.enqueue(conn, "alpha", queue="a")
    second = pgdyno.enqueue(conn, "beta", queue="b")
    failed = _finished(conn, "failed", "a")
    listed = json.loads(cli("jobs", "list", "--json").stdout)
    assert [row["id"] for row in listed] == [failed, second, first]
    assert [r["id"] for r in json.loads(cli("jobs", "list", "--json", "-q", "a").stdout)] == [
        failed,
        first,
    ]
    assert [
        r["id"] for r in json.loads(cli("jobs", "list", "--json", "--status", "failed").stdout)
    ] == [failed]
    assert len(json.loads(cli("jobs", "list", "--json", "-n", "1").stdout)) == 1
    text = cli("jobs", "list").stdout.splitlines()
    assert text[0].split()[:5] == ["id", "queue", "task", "status", "tries"]
    assert text[1].split() == [str(failed), "a", "t", "failed", "1/5", "ValueError:", "bad"]


def test_jobs_list_refuses_an_unknown_status(cli):
    result = cli("jobs", "list", "--status", "lost")
    assert result.exit_code == 2
    assert "'lost' is not one of" in result.output


def test_jobs_show_prints_every_field_and_the_whole_error(cli, conn):
    job_id = _finished(conn, "failed")
    lines = [line.rstrip() for line in cli("jobs", "show", str(job_id)).stdout.splitlines()]
    assert f"id:               {job_id}" in lines
    assert "status:           failed" in lines
    at = lines.index("last_error:")
    assert lines[at + 1 : at + 3] == ["  ValueError: bad", "  line two"]
    shown = json.loads(cli("jobs", "show", str(job_id), "--json").stdout)
    assert (shown["id"], shown["status"], shown["attempts"]) == (job_id, "failed", 1)
    assert shown["last_error"] == "ValueError: bad\nline two"
    assert set(shown) >= {
        "queue",
        "task",
        "args",
        "priority",
        "run_at",
        "max_attempts",
        "created_at",
        "started_at",
        "finished_at",
        "result",
        "progress",
        "handbacks",
        "timeout",
        "peak_rss_bytes",
        "unique_key",
        "cancel_requested_at",
        "awaited",
    }


def test_jobs_show_of_a_missing_job_exits_1(cli):
    result = cli("jobs", "show", "424242")
    assert result.exit_code == 1
    assert "Error: no job with id 424242" in result.output


# --- jobs retry / cancel ------------------------------------------------------------------------


@pytest.mark.parametrize("state", ["failed", "cancelled"])
def test_jobs_retry_makes_a_finished_job_ready_with_a_fresh_attempt_budget(cli, conn, state):
    job_id = _finished(conn, state)
    result = cli("jobs", "retry", str(job_id))
    assert result.exit_code == 0, result.output
    assert result.stdout == f"job {job_id} is ready again\n"
    row = job_row(conn, job_id)
    assert (row["status"], row["attempts"], row["finished_at"]) == ("ready", 0, None)
    assert [
        job.id
        for job in queue.complete_and_claim(conn, worker="w", queues=["q"], limit=1, lease=30)
    ] == [job_id]


@pytest.mark.parametrize("state", ["ready", "done"])
def test_jobs_retry_of_a_job_that_has_not_failed_exits_1(cli, conn, state):
    job_id = pgdyno.enqueue(conn, "t") if state == "ready" else _finished(conn, "done")
    result = cli("jobs", "retry", str(job_id))
    assert result.exit_code == 1
    assert f"job {job_id} is {state}: only failed or cancelled jobs can be retried" in (
        result.output
    )
    assert job_row(conn, job_id)["status"] == state


def test_jobs_cancel_cancels_a_job_that_has_not_started(cli, conn):
    job_id = pgdyno.enqueue(conn, "t", queue="q")
    result = cli("jobs", "cancel", str(job_id))
    assert (result.exit_code, result.stdout) == (0, f"job {job_id} cancelled\n")
    assert job_row(conn, job_id)["status"] == "cancelled"
    assert queue.complete_and_claim(conn, worker="w", queues=["q"], limit=1, lease=30) == []


def test_jobs_cancel_of_a_running_job_asks_its_worker_and_of_a_finished_one_exits_1(cli, conn):
    running = pgdyno.enqueue(conn, "t", queue="q")
    queue.complete_and_claim(conn, worker="w", queues=["q"], limit=1, lease=30)
    result = cli("jobs", "cancel", str(running))
    assert result.exit_code == 0, result.output
    assert f"job {running} is running: its worker was asked to stop it" in result.output
    row = job_row(conn, running)
    assert row["status"] == "running" and row["cancel_requested_at"] is not None
    done = _finished(conn, "done")
    result = cli("jobs", "cancel", str(done))
    assert result.exit_code == 1 and "already finished" in result.output
    assert "no job with id 999999" in cli("jobs", "cancel", "999999").output


# --- prune, migrate, worker flags --------------------------------------------------------------


def test_prune_deletes_only_finished_jobs_older_than_the_given_age(cli, conn):
    old = [_finished(conn, state, days_ago=8) for state in ("done", "failed", "cancelled")]
    recent = _finished(conn, "done", days_ago=6)
    waiting = pgdyno.enqueue(conn, "t", run_at=-30 * 86400)
    result = cli("prune", "--older-than", "7d")
    assert (result.exit_code, result.stdout) == (0, "pruned 3 finished jobs\n")
    left = {r[0] for r in conn.execute("SELECT id FROM pgdyno.jobs")}
    assert left == {recent, waiting}
    assert not left & set(old)


@pytest.mark.parametrize("age", ["soon", "7 days", "-1d"])
def test_prune_with_an_unreadable_age_exits_2(cli, conn, age):
    _finished(conn, "done", days_ago=30)
    result = cli("prune", "--older-than", age)
    assert result.exit_code == 2
    assert "is not a duration" in result.output
    assert conn.execute("SELECT count(*) FROM pgdyno.jobs").fetchone()[0] == 1


def test_migrate_on_an_up_to_date_database_changes_nothing(cli):
    result = cli("migrate")
    assert (result.exit_code, result.stdout) == (0, "schema is up to date\n")


def test_worker_with_a_task_module_that_cannot_be_imported_exits_1(cli):
    result = cli("worker", "--queue", "q", "--import", "no_such_module_here")
    assert result.exit_code == 1
    assert "cannot import task module 'no_such_module_here'" in result.output
    assert "--import and PYTHONPATH" in result.output


def test_worker_with_an_unreadable_duration_is_a_usage_error_naming_the_flag(cli):
    result = cli("worker", "--queue", "q", "--lease", "forever")
    assert result.exit_code == 2
    assert "Invalid value for '--lease': --lease 'forever' is not a duration" in result.output


def test_status_before_the_first_formation_call_says_the_quantity_is_not_known(cli, conn):
    from pgdyno.scaling.policy import parse_rule
    from pgdyno.scaling.state import record_rules

    record_rules(conn, [parse_rule("reports=winston,max=2")])
    result = cli("status")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == (
        "process type winston: quantity not known yet (no formation call so far), queues "
        "reports, max 2, linger 30s, 0 live workers"
    )
