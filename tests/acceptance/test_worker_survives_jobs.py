"""A worker survives its jobs (issue 11, scenarios 1, 2, 6, 7 and 9, and the memory guard).

Real worker processes, real Postgres. Each test runs one worker through a series of jobs that
misbehave (tests/safety_tasks.py) next to a well-behaved neighbour held open by a gate, then
checks that the worker is still running, the neighbour ran once and finished with its first
attempt, and each bad job ended with the error its kind promises.
"""

from __future__ import annotations

import signal

from click.testing import CliRunner
from helpers import effects_of, job_row, open_gate, wait_for_status, wait_until, worker

import pgdyno
from pgdyno.cli import main as cli


def _started(conn, key: str) -> None:
    wait_until(lambda: effects_of(conn, key, "start"), message=f"job {key!r} to start")


def _bad(conn, task: str, key: str, **args: object) -> int:
    return pgdyno.enqueue(conn, task, {"key": key, **args}, queue="q", max_attempts=1)


def _stop(proc) -> str:
    assert proc.proc.poll() is None, "the worker died:\n" + proc.output()[-3000:]
    proc.signal(signal.SIGTERM)
    assert proc.wait() == 0
    return proc.output()


def test_unstorable_outcomes_fail_their_job_and_the_worker_runs_on(effects, database_url):
    """Scenarios 1, 2 and 9: NUL and lone surrogates in an error, a result or progress; a
    result JSON cannot encode; an exception whose __str__ raises; a result over 1 MiB."""
    neighbour = pgdyno.enqueue(effects, "safety.gate", {"key": "neighbour"}, queue="q")
    with worker(database_url, "q", concurrency=2, imports=("safety_tasks",)) as proc:
        _started(effects, "neighbour")
        bad = {
            "nul_error": _bad(effects, "safety.raise_text", "nul_error", nasty="nul"),
            "surrogate_error": _bad(effects, "safety.raise_text", "s_error", nasty="surrogate"),
            "surrogate_result": _bad(effects, "safety.returns", "s_result", nasty="surrogate"),
            "tuple_keys": _bad(effects, "safety.tuple_keys", "tuple_keys"),
            "broken_str": _bad(effects, "safety.broken_str", "broken_str"),
            "huge_result": _bad(effects, "safety.returns", "huge", mib=5),
        }
        progress = _bad(effects, "safety.progress", "s_progress", nasty="surrogate")
        after = pgdyno.enqueue(effects, "safety.returns", {"key": "after", "value": 1}, queue="q")
        rows = {name: wait_for_status(effects, job, "failed") for name, job in bad.items()}
        assert wait_for_status(effects, after, "done")["result"] == 1  # it claims on
        open_gate(effects, "neighbour")
        assert wait_for_status(effects, neighbour, "done")["attempts"] == 1
        output = _stop(proc)
    for name, row in rows.items():
        assert row["last_error"].startswith("UnstorableResult"), (name, row["last_error"])
        assert row["attempts"] == 1, name
    assert "ValueError: a\\x00b" in rows["nul_error"]["last_error"]
    assert "bad \\ud800 text" in rows["surrogate_error"]["last_error"]
    assert "lone surrogate (U+D800)" in rows["surrogate_result"]["last_error"]
    assert "keys must be str" in rows["tuple_keys"]["last_error"]
    assert (
        "BrokenMessage: <str() of the exception raised RuntimeError>"
        in (rows["broken_str"]["last_error"])
    )
    assert "it is 5.0 MiB of JSON, over the 1.0 MiB limit" in rows["huge_result"]["last_error"]
    # Progress the column cannot hold is refused in the task, which can carry on.
    assert job_row(effects, progress)["result"].startswith(
        "refused: the progress cannot be stored as JSON: it contains a lone surrogate"
    )
    assert len(effects_of(effects, "neighbour", "start")) == 1  # never rescued, never re-run
    assert output.count("event=worker_started") == 1


def test_process_pool_crash_timeout_and_memory_stop_only_their_job(effects, database_url):
    """Scenarios 6 and 7, and the memory guard: in the process pool a crashing job, a job past
    its timeout and a job over the memory limit each end alone, failed with their own error;
    the jobs running beside them finish on their first attempt; the worker goes on."""
    neighbours = [
        pgdyno.enqueue(effects, "safety.gate", {"key": key}, queue="q") for key in ("n1", "n2")
    ]
    extra = ["--pool", "process", "--max-job-memory", "100MB", "--lease", "3s"]
    with worker(database_url, "q", concurrency=3, imports=("safety_tasks",), extra=extra) as proc:
        _started(effects, "n1")
        _started(effects, "n2")
        crash = _bad(effects, "safety.crash", "crash")
        effects.execute(  # a plain INSERT sets the timeout column
            "INSERT INTO pgdyno.jobs (queue, task, args, max_attempts, timeout) VALUES"
            " ('q', 'safety.sleep', '{\"key\": \"slow\", \"seconds\": 60}', 1, '1 second')"
        )
        slow = effects.execute("SELECT max(id) FROM pgdyno.jobs").fetchone()[0]
        hog = _bad(effects, "safety.hog", "hog", mib=300)
        fine = pgdyno.enqueue(effects, "safety.returns", {"key": "fine", "value": 2}, queue="q")
        crashed = wait_for_status(effects, crash, "failed")
        timed_out = wait_for_status(effects, slow, "failed")
        too_big = wait_for_status(effects, hog, "failed", timeout=30)
        done = wait_for_status(effects, fine, "done")
        for key in ("n1", "n2"):
            open_gate(effects, key)
        finished = [wait_for_status(effects, job, "done") for job in neighbours]
        _stop(proc)
    assert crashed["last_error"].startswith("JobCrashed: the process running task 'safety.crash'")
    assert "died of signal SIGSEGV" in crashed["last_error"]
    assert timed_out["last_error"].startswith(
        "JobTimeout: task 'safety.sleep' ran longer than its timeout of 1 s in attempt 1; "
        "its process was stopped"
    )
    assert effects_of(effects, "slow", "done") == []  # really stopped, not abandoned
    assert too_big["last_error"].startswith("JobMemoryExceeded: task 'safety.hog' used ")
    assert "over the limit of 100.0 MiB per job" in too_big["last_error"]
    assert too_big["peak_rss_bytes"] > 100 << 20
    assert effects_of(effects, "hog", "done") == []
    assert [row["attempts"] for row in finished] == [1, 1]  # no rescue counted against them
    assert all(row["last_error"] is None for row in finished)
    # Each job ran in a process of its own, never in the worker's.
    starts = [effects_of(effects, key, "start") for key in ("n1", "n2", "crash", "fine")]
    pids = {start["pid"] for each in starts for start in each}
    assert len(pids) == 4 and proc.pid not in pids
    assert 10 << 20 < done["peak_rss_bytes"] < 100 << 20
    shown = CliRunner().invoke(cli, ["jobs", "show", str(fine), "--database-url", database_url])
    assert f"peak_rss_bytes:   {done['peak_rss_bytes']}" in shown.output


def test_thread_pool_abandons_a_job_past_its_timeout_and_goes_on(effects, database_url):
    """Scenario 6 in the thread pool: the task's own timeout, enqueue(timeout=) and
    `pgdyno enqueue --timeout` each fail their job with JobTimeout, retried per its policy;
    the worker runs the next job at once in its free slot (each abandoned task, which sleeps
    on, keeps its own: tests/acceptance/test_job_timeouts.py)."""
    by_task = _bad(effects, "safety.sleeps_by_default", "by_task", seconds=60)
    by_enqueue = pgdyno.enqueue(
        effects, "safety.sleep", {"key": "by_enqueue", "seconds": 60}, queue="q", timeout=1
    )
    by_cli = CliRunner().invoke(
        cli,
        [
            "enqueue",
            "safety.sleep",
            "--queue",
            "q",
            "--args",
            '{"key": "by_cli", "seconds": 60}',
            "--max-attempts",
            "1",
            "--timeout",
            "1s",
            "--database-url",
            database_url,
        ],
    )
    assert by_cli.exit_code == 0, by_cli.output
    cli_job = int(by_cli.output.strip())
    after = pgdyno.enqueue(effects, "safety.returns", {"key": "after", "value": 3}, queue="q")
    isolated = pgdyno.enqueue(effects, "safety.isolated", {"key": "isolated"}, queue="q")
    extra = ["--lease", "3s"]
    retry_later = {"PGDYNO_RETRY_BASE": "60s"}  # the retried job stays ready while we look
    imports = ("safety_tasks", "safety_task_options")
    with worker(
        database_url, "q", concurrency=4, imports=imports, extra=extra, **retry_later
    ) as proc:
        rows = [wait_for_status(effects, job, "failed") for job in (by_task, cli_job)]
        retried = wait_until(
            lambda: (row := job_row(effects, by_enqueue))["last_error"] and row,
            message="the first attempt of the job enqueued with timeout=1 to time out",
        )
        assert wait_for_status(effects, after, "done")["result"] == 3
        # A task declared with pool="process" runs in a process of its own even here, and
        # its progress reaches the job's row.
        wait_until(
            lambda: job_row(effects, isolated)["progress"] == {"step": 1},
            message="the progress of the job running in its own process",
        )
        open_gate(effects, "isolated")
        isolated_row = wait_for_status(effects, isolated, "done")
        _stop(proc)
    assert isolated_row["result"] not in (None, proc.pid)
    assert isolated_row["peak_rss_bytes"] > 0
    for row in [*rows, retried]:
        assert row["last_error"].startswith("JobTimeout: task ")
        assert "it was abandoned" in row["last_error"]
    assert retried["status"] == "ready" and retried["attempts"] == 1  # retried per its policy
    assert effects_of(effects, "by_task", "done") == []
