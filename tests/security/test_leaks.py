"""Scenario 8 of the security issue: what a job's row tells its client, and what a flood of
notifications costs. (The row-size bound and the id oracle are in test_poison_rows.py; the
flood's cost per notification is measured on the fake clock in
tests/unit/test_worker_notify_flood.py and in CPU seconds by `python -m bench.notify_flood`.)
"""

from __future__ import annotations

import threading

import psycopg
from helpers import log_fields, wait_for_status, wait_until
from psycopg.types.json import Jsonb
from reports_support import write_report

import pgdyno


def test_unknown_task_and_report_errors_name_no_other_task_report_or_folder(
    db, owner, attacker, attack, tmp_path
):
    folder = tmp_path / "private-reports"
    write_report(folder, "salaries_by_person", "SELECT 1 AS n")
    system = attack(db, owner, queues=("q", "reports"), PGDYNO_REPORTS_DIR=str(folder))
    attacker.execute("INSERT INTO pgdyno.jobs (queue, task) VALUES ('q', 'nope')")
    task_job = owner.execute("SELECT max(id) FROM pgdyno.jobs").fetchone()[0]
    attacker.execute(
        "INSERT INTO pgdyno.jobs (queue, task, args) VALUES ('reports', 'report', %s)",
        (Jsonb({"name": "nope"}),),
    )
    report_job = owner.execute("SELECT max(id) FROM pgdyno.jobs").fetchone()[0]
    task_error = wait_for_status(owner, task_job, "failed")["last_error"]
    report_error = wait_for_status(owner, report_job, "failed")["last_error"]
    assert task_error.startswith("UnknownTask: unknown task 'nope'")
    assert report_error.startswith("InvalidReport: unknown report 'nope'")
    for error in (task_error, report_error):
        for secret in ("salaries", "private-reports", "sample_tasks", "noop", "record"):
            assert secret not in error, (secret, error)
    # The operator still reads it all in the worker's log.
    output = system.worker.output()
    assert "noop" in log_fields(output, "unknown_task")[0]["known"]
    assert "salaries_by_person" in log_fields(output, "report_invalid")[0]["error"]
    system.assert_unharmed(owner)
    system.stop()


def test_a_notify_flood_from_the_enqueue_role_leaves_the_worker_claiming(
    db, owner, attacker, attack
):
    system = attack(db, owner)
    stop = threading.Event()
    sent = [0]

    def flood() -> None:
        with psycopg.connect(attacker.info.dsn + " password=pw-of-the-test", autocommit=True) as c:
            while not stop.is_set():
                c.execute("NOTIFY pgdyno_jobs, 'q'")
                sent[0] += 1

    thread = threading.Thread(target=flood, daemon=True)
    thread.start()
    try:
        wait_until(lambda: sent[0] > 200, message="the flood to be under way")
        job_id = pgdyno.enqueue(owner, "noop", queue="q")
        wait_for_status(owner, job_id, "done", timeout=10)
        system.assert_unharmed(owner)
    finally:
        stop.set()
        thread.join(10)
    system.stop()
