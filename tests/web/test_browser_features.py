"""What the scaling, worker and features issues store, in a real headless Chromium: paused
queues and their buttons, schedules, the workers registry and the formation API's hold on the
Process types page, a job's newer columns, and cancelling a running job.

As in test_browser.py, every test asserts that the browser logged no console error (the `page`
fixture) and saves a screenshot of what it exercised under test-artifacts/web/.
"""

from __future__ import annotations

import signal
from datetime import datetime, timedelta

import requests
from fakes import FakeClock
from helpers import effects_of, job_row, wait_for_status, worker

from pgdyno import pausing, queue, registry, sql
from pgdyno.schedules import store
from pgdyno.schedules.runner import ScheduleRunner
from pgdyno.schedules.timing import Timing
from pgdyno.web.app import NONE
from pgdyno.web.sampler import Sampler


def cell(page, row: str, column: str) -> str:
    return page.locator(f'{row} [data-col="{column}"]').inner_text().strip()


def wait_for_text(page, selector: str, text: str) -> None:
    """Until the element's text is `text` (the page refreshes its live part by itself)."""
    page.wait_for_function(
        "([selector, text]) => {"
        " const node = document.querySelector(selector);"
        " return node !== null && node.textContent.trim() === text; }",
        arg=[selector, text],
    )


# --- Overview: paused queues, their buttons, the schedules ------------------------------------


def test_pause_and_resume_a_queue_from_the_overview(conn, dashboard, page):
    queue.enqueue(conn, "send_invoice", {"id": 1}, queue="default")
    queue.enqueue(conn, "report", {"name": "revenue"}, queue="reports")
    pausing.pause(conn, "later")  # paused before it has any job: listed all the same
    page.goto(dashboard.url)
    assert cell(page, 'tr[data-queue="later"]', "state") == "paused"
    assert cell(page, 'tr[data-queue="default"]', "state") == "active"
    page.evaluate("window.notReloaded = true")

    pausing.pause(conn, "reports")  # `pgdyno queue pause reports` elsewhere: seen live
    wait_for_text(page, 'tr[data-queue="reports"] [data-col="state"]', "paused")
    assert page.evaluate("window.notReloaded") is True

    page.locator('tr[data-queue="default"] button[data-action="pause"]').click()
    page.locator(".notice").wait_for()
    assert page.locator(".notice").inner_text().startswith("Queue default paused: no worker")
    assert set(pausing.paused(conn)) == {"default", "later", "reports"}
    assert cell(page, 'tr[data-queue="default"]', "state") == "paused"
    assert page.locator('tr[data-queue="default"] button[data-action="pause"]').count() == 0
    page.screenshot_as("overview-paused")

    page.locator('tr[data-queue="default"] button[data-action="resume"]').click()
    page.locator(".notice").wait_for()
    assert "Queue default resumed" in page.locator(".notice").inner_text()
    assert set(pausing.paused(conn)) == {"later", "reports"}
    assert cell(page, 'tr[data-queue="default"]', "state") == "active"


def test_the_overview_shows_paused_queues_live_workers_the_api_hold_and_schedules(
    conn, dashboard, page
):
    winston_fleet(conn)
    for queue_name, count in (("reports", 3), ("mail", 2), ("default", 1)):
        for n in range(count):
            queue.enqueue(conn, "send_invoice", {"n": n}, queue=queue_name)
    conn.execute(
        "INSERT INTO pgdyno.jobs (queue, task, status, attempts, finished_at)"
        " SELECT 'reports', 'report', 'done', 1, now() FROM generate_series(1, 40)"
    )
    Sampler(settle=0).tick(conn)  # what the dispatcher's sampler counts
    pausing.pause(conn, "mail")
    store.add(conn, "nightly-revenue", task="report", timing=Timing("0 3 * * *"), queue="reports")
    conn.execute(
        "INSERT INTO pgdyno.schedules (name, task, cron) VALUES ('broken', 't', '61 * * * *')"
    )
    ScheduleRunner(FakeClock()).run_due(conn)  # what the acting dispatcher does
    nightly = next(s for s in store.all_schedules(conn) if s.name == "nightly-revenue")
    assert nightly.next_run_at is not None

    page.goto(dashboard.url)
    assert cell(page, 'tr[data-queue="mail"]', "state") == "paused"
    assert cell(page, 'tr[data-queue="reports"]', "state") == "active"
    summary = 'tr[data-type="winston"]'
    assert cell(page, summary, "workers") == "1"
    assert "(Retry-After)" in cell(page, summary, "hold")
    assert cell(page, summary, "unserved") == "no winston worker serves mail"
    row = 'tr[data-schedule="nightly-revenue"]'
    assert cell(page, row, "next") == nightly.next_run_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    assert "is not valid" in page.locator('tr[data-schedule="broken"]').inner_text()
    page.screenshot_as("overview-everything")

    store.set_paused(conn, "nightly-revenue", True)  # `pgdyno schedule pause`: seen live
    wait_for_text(page, f'{row} [data-col="next"]', "paused")


# --- Schedules page ------------------------------------------------------------------------------


def test_schedules_page_shows_next_and_last_runs_and_pauses_and_resumes_a_schedule(
    conn, dashboard, page
):
    store.add(
        conn,
        "nightly-revenue",
        task="report",
        timing=Timing("0 3 * * *", None, "Europe/London"),
        queue="reports",
        args={"name": "revenue_by_month"},
    )
    store.add(conn, "heartbeat", task="ping", timing=Timing(every=timedelta(minutes=15)))
    conn.execute(
        "INSERT INTO pgdyno.schedules (name, task, cron, timezone)"
        " VALUES ('bad-zone', 't', '0 3 * * *', 'Nowhere/City')"
    )
    runner = ScheduleRunner(FakeClock())
    runner.run_due(conn)  # next runs computed, the bad row's error recorded
    conn.execute("UPDATE pgdyno.schedules SET next_run_at = now() WHERE name = 'heartbeat'")
    runner.run_due(conn)  # the heartbeat's run is due: enqueued once
    by_name = {s.name: s for s in store.all_schedules(conn)}
    heartbeat = by_name["heartbeat"]
    assert heartbeat.last_job_id is not None

    page.goto(dashboard.url + "schedules")
    nightly_row = 'tr[data-schedule="nightly-revenue"]'
    heartbeat_row = 'tr[data-schedule="heartbeat"]'
    assert cell(page, nightly_row, "timing") == "0 3 * * * Europe/London"
    assert cell(page, heartbeat_row, "timing") == "every 15 min"
    assert '{"name": "revenue_by_month"}' in page.locator(nightly_row).inner_text()
    assert cell(page, nightly_row, "next").startswith(
        by_name["nightly-revenue"].next_run_at.strftime("%Y-%m-%d %H:%M:%S UTC") + " in "
    )
    assert cell(page, nightly_row, "last") == "never"
    last = cell(page, heartbeat_row, "last")
    assert last.startswith(heartbeat.last_run_at.strftime("%Y-%m-%d %H:%M:%S UTC"))
    assert last.endswith(f"(job {heartbeat.last_job_id})")
    assert "unknown time zone 'Nowhere/City'" in cell(page, 'tr[data-schedule="bad-zone"]', "error")
    page.screenshot_as("schedules")

    page.locator(f'{nightly_row} button[data-action="pause"]').click()
    page.locator(".notice").wait_for()
    assert "Schedule nightly-revenue paused" in page.locator(".notice").inner_text()
    assert next(s for s in store.all_schedules(conn) if s.name == "nightly-revenue").paused
    assert cell(page, nightly_row, "next") == "paused"

    page.locator(f'{nightly_row} button[data-action="resume"]').click()
    page.locator(".notice").wait_for()
    assert "Schedule nightly-revenue resumed" in page.locator(".notice").inner_text()
    assert not next(s for s in store.all_schedules(conn) if s.name == "nightly-revenue").paused


# --- Process types: the workers registry, the API hold, unserved queues ------------------------


BUSY, LOST, STOPPED, STRAY = (
    "winston.1:4242:ab12",
    "winston.2:4343:cd34",
    "winston.3:4444:ef56",
    "laptop:77:aa00",
)


def winston_fleet(conn) -> tuple[int, datetime]:
    """Rules mapping reports and mail to winston, whose workers serve only reports; a live
    winston worker running a report job (returned), a lost one, a stopped one, a worker without
    a process type; and the formation API held back by a Retry-After (its end returned)."""
    conn.execute(
        "INSERT INTO pgdyno.scale_rules (queue, process_type, max_quantity)"
        " VALUES ('reports', 'winston', 2), ('mail', 'winston', 2)"
    )
    # What the scaler records after a 429 with Retry-After: 90 (its third failed call in a row).
    hold = conn.execute(
        "INSERT INTO pgdyno.formations (process_type, quantity, last_error, last_error_at,"
        " failures, not_before, not_before_cause) VALUES ('winston', 1,"
        " '429 rate_limit: Your account reached the API rate limit', now(), 3,"
        " now() + interval '90 seconds', 'retry_after') RETURNING not_before"
    ).fetchone()[0]
    for worker_id, queues, process_type, running in (
        (BUSY, ["reports"], "winston", 1),
        (LOST, ["reports"], "winston", 0),
        (STOPPED, ["reports"], "winston", 0),
        (STRAY, ["default"], None, 0),
    ):
        entry = registry.Registration(
            worker_id,
            queues,
            dyno=worker_id.split(":")[0],
            process_type=process_type,
            concurrency=2,
        )
        entry.tick(conn, 0.0, running=running)  # what each worker's loop writes
        if worker_id == STOPPED:
            entry.stopped(conn)
    conn.execute(  # killed: no heartbeat for 5 minutes
        "UPDATE pgdyno.workers SET heartbeat_at = now() - interval '5 minutes' WHERE id = %s",
        (LOST,),
    )
    job_id = conn.execute(
        "INSERT INTO pgdyno.jobs (queue, task, status, attempts, started_at, lease_expires_at,"
        " worker) VALUES ('reports', 'report', 'running', 1, now(), now() + interval '1 min', %s)"
        " RETURNING id",
        (BUSY,),
    ).fetchone()[0]
    return job_id, hold


def test_process_types_page_shows_workers_what_they_run_the_api_hold_and_unserved_queues(
    conn, dashboard, page
):
    job_id, hold = winston_fleet(conn)

    page.goto(dashboard.url + "types")
    card = "#type-winston"
    unserved = page.locator(f"{card} .unserved").inner_text()
    assert "No winston worker serves mail (they serve reports)" in unserved
    assert cell(page, card, "workers") == "1, serving reports"
    assert cell(page, card, "failures") == "3"
    assert cell(page, card, "hold").startswith(
        f"not before {hold.strftime('%Y-%m-%d %H:%M:%S UTC')} (in 1 min"
    )
    assert cell(page, card, "hold").endswith("the platform's Retry-After")

    busy = f'{card} tr[data-worker="{BUSY}"]'
    assert cell(page, busy, "state") == "live"
    assert cell(page, busy, "jobs") == f"{job_id} report"
    assert page.locator(f'{busy} a[data-job="{job_id}"]').get_attribute("href") == (
        f"/jobs/{job_id}"
    )
    assert cell(page, f'{card} tr[data-worker="{LOST}"]', "state") == "lost"
    assert page.locator(f'{card} tr[data-worker="{STOPPED}"]').count() == 0
    assert "1 worker stopped cleanly" in page.locator(card).inner_text()
    assert cell(page, f'[data-workers=""] tr[data-worker="{STRAY}"]', "state") == "live"
    page.screenshot_as("process-types-workers")

    # The worker stops: the page follows without a reload.
    conn.execute(
        "UPDATE pgdyno.jobs SET status = 'done', finished_at = now() WHERE id = %s", (job_id,)
    )
    conn.execute(sql.query("worker_stopped"), {"id": BUSY})
    wait_for_text(page, f'{card} [data-col="workers"]', "0, serving reports")
    assert "2 workers stopped cleanly" in page.locator(card).inner_text()


# --- A job's page --------------------------------------------------------------------------------


def test_job_page_shows_handbacks_unique_key_timeout_peak_memory_and_awaited(conn, dashboard, page):
    job_id = queue.enqueue(
        conn, "export", {"id": 9}, unique_key="daily-export-2026-12-01", timeout=90, run_at=3600
    )
    conn.execute(sql.query("job_mark_awaited"), {"id": job_id})  # what pgdyno.result() does
    conn.execute(  # what a worker records: two hand-backs on shutdown, its process's peak
        "UPDATE pgdyno.jobs SET handbacks = 2, peak_rss_bytes = 123456789 WHERE id = %s",
        (job_id,),
    )
    plain = queue.enqueue(conn, "export", {"id": 10})

    page.goto(dashboard.url + f"jobs/{job_id}")
    assert cell(page, "dl.facts", "handbacks") == "2"
    assert cell(page, "dl.facts", "unique_key") == "daily-export-2026-12-01"
    assert cell(page, "dl.facts", "timeout") == "1 min 30 s per attempt"
    assert cell(page, "dl.facts", "peak_rss_bytes") == "123.5 MB (its process, last attempt)"
    assert cell(page, "dl.facts", "awaited").startswith("yes")
    assert cell(page, "dl.facts", "cancel_requested_at") == NONE
    page.screenshot_as("job-facts")

    page.goto(dashboard.url + f"jobs/{plain}")
    assert cell(page, "dl.facts", "handbacks") == "0"
    assert cell(page, "dl.facts", "unique_key") == NONE
    assert cell(page, "dl.facts", "timeout") == "the task's own (if any)"
    assert cell(page, "dl.facts", "peak_rss_bytes") == NONE
    assert cell(page, "dl.facts", "awaited") == "no"


def test_cancel_a_running_job_from_its_page_and_see_its_worker_stop_it(
    effects, database_url, dashboard, page
):
    conn = effects
    job_id = queue.enqueue(conn, "cooperative", {"key": "web"}, queue="default")
    with worker(database_url, "default") as proc:
        wait_for_status(conn, job_id, "running", timeout=30)

        # The Process types page: the worker (no process type) and the job it runs.
        page.goto(dashboard.url + "types")
        held = page.locator(f'[data-workers=""] a[data-job="{job_id}"]')
        held.wait_for()  # its registry row is written within a turn of its loop
        assert job_row(conn, job_id)["worker"] in page.locator('[data-workers=""]').inner_text()

        page.goto(dashboard.url + f"jobs/{job_id}")
        assert page.locator("h1 .status").inner_text() == "running"
        page.locator("#cancel").click()
        page.locator(".notice").wait_for()
        notice = page.locator(".notice").inner_text()
        assert notice.startswith("The job is running: its worker was asked to stop it.")
        assert job_row(conn, job_id)["cancel_requested_at"] is not None

        # The live part follows the job to its end, without a reload.
        wait_for_text(page, "h1 .status", "cancelled")
        assert page.locator("#cancel").count() == 0
        assert [e["kind"] for e in effects_of(conn, "web")] == ["start", "cancel_seen"]
        row = job_row(conn, job_id)
        assert row["status"] == "cancelled" and row["last_error"].startswith("JobCancelled")
        assert cell(page, "dl.facts", "cancel_requested_at") == row["cancel_requested_at"].strftime(
            "%Y-%m-%d %H:%M:%S UTC"
        )
        page.screenshot_as("job-cancelled-while-running")
        proc.signal(signal.SIGTERM)
        assert proc.wait(30) == 0


def test_cancel_says_a_ready_job_was_cancelled_and_a_finished_one_was_not(conn, dashboard, page):
    ready = queue.enqueue(conn, "send_invoice", {"id": 4}, run_at=3600)
    page.goto(dashboard.url + f"jobs/{ready}")
    page.locator("#cancel").click()
    page.locator(".notice").wait_for()
    assert page.locator(".notice").inner_text() == "The job was cancelled: it had not started."
    assert queue.get_job(conn, ready)["status"] == "cancelled"
    assert page.locator("#cancel").count() == 0

    # A page left open on a job that has finished meanwhile: the form posts, nothing changes.
    done = conn.execute(
        "INSERT INTO pgdyno.jobs (queue, task, status, finished_at) VALUES"
        " ('default', 'x', 'done', now()) RETURNING id"
    ).fetchone()[0]
    session = requests.Session()
    other = queue.enqueue(conn, "send_invoice", {"id": 5}, run_at=3600)
    session.get(dashboard.url + f"jobs/{other}", timeout=10)  # a page with a form: the token
    answer = session.post(
        dashboard.url + f"jobs/{done}/cancel",
        data={"csrf": session.cookies["pgdyno_csrf"]},
        timeout=10,
    )
    assert answer.status_code == 200 and answer.url.endswith("notice=cancel_refused")
    assert "Not cancelled: the job has already finished." in answer.text
    assert queue.get_job(conn, done)["status"] == "done"


def test_a_database_missing_a_migration_gets_a_503_saying_to_run_migrate(conn, dashboard):
    conn.execute("DROP TABLE pgdyno.schedules")  # as if migration 0010 had not run
    answer = requests.get(dashboard.url + "schedules", timeout=10)
    assert answer.status_code == 503
    assert "not migrated for this version of pgdyno: run `pgdyno migrate`" in answer.text
    assert "relation &#34;pgdyno.schedules&#34; does not exist" in answer.text
