"""Paused queues: no claim, no dyno; resume wakes the workers and scales up."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import psycopg
import pytest
from features.conftest import patches
from helpers import (
    PgdynoProcess,
    job_row,
    log_fields,
    wait_for_listeners,
    wait_for_status,
    wait_until,
    worker,
)

import pgdyno
from pgdyno import db, pausing, queue, sql
from pgdyno.errors import InvalidJob
from pgdyno.scaling.formation.memory import MemoryFormation
from pgdyno.scaling.policy import Rule, policies
from pgdyno.scaling.scaler import Scaler
from pgdyno.scaling.state import load_of, record_rules

pytestmark = pytest.mark.usefixtures("effects")

POLICY = policies([Rule("reports", "winston"), Rule("other", "winston")])["winston"]


def claim(conn: psycopg.Connection, *queues: str) -> list[int]:
    jobs = queue.complete_and_claim(conn, worker="w", queues=list(queues), limit=10, lease=30)
    return [job.id for job in jobs]


def test_a_paused_queue_is_left_out_of_the_claim_and_comes_back_on_resume(conn):
    paused_job = pgdyno.enqueue(conn, "t", queue="reports", priority=100)
    other_job = pgdyno.enqueue(conn, "t", queue="other")
    pausing.pause(conn, "reports")
    pausing.pause(conn, "reports")  # twice: still one row, paused since the first time
    assert list(pausing.paused(conn)) == ["reports"]
    assert claim(conn, "reports", "other") == [other_job]
    assert job_row(conn, paused_job)["status"] == "ready"
    assert pausing.resume(conn, "reports") is True
    assert pausing.resume(conn, "reports") is False
    assert claim(conn, "reports", "other") == [paused_job]


def test_paused_ready_jobs_want_no_dyno_but_running_ones_still_do(conn):
    record_rules(conn, [Rule("reports", "winston"), Rule("other", "winston")])
    pgdyno.enqueue(conn, "t", queue="reports")
    pausing.pause(conn, "reports")
    assert load_of(conn, POLICY)["reports"].ready == 0
    backend = MemoryFormation({"winston": 1})
    scaler = Scaler(backend, "test")
    assert scaler.scale_up(conn, POLICY, "jobs enqueued").decision is None
    assert scaler.scale_to_zero(conn, POLICY, idle_s=60).at_zero  # its only work is paused
    assert backend.get("winston").quantity == 0
    pausing.resume(conn, "reports")
    assert scaler.scale_up(conn, POLICY, "resumed").decision is not None
    assert backend.get("winston").quantity == 1

    # A running job of a queue paused after it started still holds its dyno.
    claim(conn, "reports")
    pausing.pause(conn, "reports")
    assert load_of(conn, POLICY)["reports"].running == 1
    assert not scaler.scale_to_zero(conn, POLICY, idle_s=60).at_zero


def test_resume_notifies_the_queue(database_url, conn):
    listener = db.connect(database_url)
    db.listen(listener)
    pausing.pause(conn, "reports")
    pausing.resume(conn, "reports")
    wait_until(
        lambda: db.drain_notifications(listener) == ["reports"],
        timeout=5,
        message="the resume's notification",
    )
    listener.close()


def test_queue_commands_and_status(cli, conn):
    pgdyno.enqueue(conn, "t", queue="reports")
    assert cli("queue", "pause", "reports").output.startswith("queue reports paused")
    assert cli("queue", "pause", "mail").exit_code == 0  # no job yet: paused all the same
    listed = cli("queue", "list").stdout.splitlines()
    assert listed[1].split() == ["mail", "paused", "0", "0", "0", "-"]
    assert listed[2].split() == ["reports", "paused", "1", "0", "0", "-"]
    status = cli("status").stdout
    assert "queue mail: PAUSED (no jobs)" in status
    assert next(line for line in status.splitlines() if line.startswith("reports")).endswith(
        "PAUSED"
    )
    assert set(json.loads(cli("status", "--json").stdout)["paused_queues"]) == {"mail", "reports"}
    assert cli("queue", "resume", "reports").stdout == "queue reports resumed\n"
    assert cli("queue", "resume", "nope").stdout == "queue nope was not paused\n"
    refused = cli("queue", "pause", " padded")
    assert refused.exit_code == 1 and "without whitespace at either end" in refused.output
    with pytest.raises(InvalidJob):
        pausing.pause(conn, "")


def test_a_paused_queue_causes_no_claim_and_no_scale_up_until_resumed(
    database_url, conn, dispatcher, heroku
):
    pausing.pause(conn, "reports")
    with (
        dispatcher(PGDYNO_RECONCILE_INTERVAL="1s", PGDYNO_LOG_LEVEL="DEBUG") as julia,
        worker(database_url, "reports", "other") as proc,
    ):
        julia.wait_for_output("dispatcher_leading")
        wait_for_listeners(conn, 1)
        held = pgdyno.enqueue(conn, "record", {"key": "held"}, queue="reports")
        start = time.monotonic()
        # The worker is alive and claiming: a job of its other queue runs meanwhile.
        control = pgdyno.enqueue(conn, "record", {"key": "control"}, queue="other")
        wait_for_status(conn, control, "done")
        wait_until(lambda: time.monotonic() - start >= 5, timeout=10, message="5 seconds")
        assert job_row(conn, held)["status"] == "ready"
        assert patches(heroku) == []
        timer_decisions = [
            f for f in log_fields(julia.output(), "reconcile") if f.get("trigger") == "timer"
        ]
        assert len(timer_decisions) >= 3  # it did look, and saw nothing to scale for

        assert cli_resume(database_url) == 0
        wait_for_status(conn, held, "done", timeout=10)
        wait_until(lambda: patches(heroku) == [1], timeout=10, message="the scale-up")
        assert proc.proc.poll() is None


def cli_resume(database_url: str) -> int:
    with PgdynoProcess(["queue", "resume", "reports"], database_url) as resume:
        return resume.wait()


def test_the_claim_skips_a_paused_queue_before_scanning_its_index(conn):
    """Plan guard: the paused names are read once (an InitPlan) and filter the queue list, so a
    paused queue's ready jobs are neither scanned nor locked, in the worker's generic plan."""
    conn.execute(
        "INSERT INTO pgdyno.jobs (queue, task) SELECT (ARRAY['a', 'b'])[1 + n % 2], 't'"
        " FROM generate_series(1, 2000) AS n"
    )
    conn.execute("ANALYZE pgdyno.jobs_active")
    pausing.pause(conn, "a")
    conn.execute("SET plan_cache_mode = force_generic_plan")
    params = {
        "done_ids": [],
        "done_attempt": None,
        "done_attempts": [],
        "done_results": [],
        "done_peaks": [],
        "queues": ["a", "b"],
        "limit": 5,
        "worker": "w",
        "lease": timedelta(seconds=30),
    }
    with conn.transaction(force_rollback=True):
        explained = conn.execute(
            "EXPLAIN (ANALYZE, FORMAT JSON) " + sql.query("job_complete_and_claim"),
            params,
            prepare=True,
        ).fetchone()[0]

    def nodes(plan):
        yield plan
        for child in plan.get("Plans", []):
            yield from nodes(child)

    found = list(nodes(explained[0]["Plan"]))
    [claim_scan] = [n for n in found if n.get("Index Name") == "jobs_active_claim_idx"]
    assert claim_scan["Actual Loops"] == 1  # queue b only
    [queue_list] = [
        n for n in found if n.get("Function Name") == "unnest" and "<> ALL" in n.get("Filter", "")
    ]
    assert queue_list["Rows Removed by Filter"] == 1
