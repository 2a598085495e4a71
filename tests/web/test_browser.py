"""The dashboard in a real headless Chromium: what a user sees and clicks.

Every test here also asserts that the browser logged no console error (the `page` fixture),
and saves a screenshot of the page it exercised under test-artifacts/web/.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import requests
from helpers import open_gate, psql_binary, wait_for_status, wait_until, worker
from reports_support import write_report

from pgdyno import pausing, queue
from pgdyno.schedules import store
from pgdyno.schedules.timing import Timing
from pgdyno.web.sampler import SETTLE_S, Sampler

PROCFILE = """\
julia: {pgdyno} dispatcher --scale reports=winston,linger=0
winston: {pgdyno} worker --queue reports --import sample_tasks
"""


def psql(database_url: str, statement: str) -> str:
    done = subprocess.run(
        [psql_binary(), database_url, "-qtAX", "-c", statement],
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip()


def finished_job(conn, status: str, queue_name: str = "default", error: str | None = None) -> int:
    return conn.execute(
        "INSERT INTO pgdyno.jobs (queue, task, status, attempts, finished_at, last_error)"
        " VALUES (%s, 'send_invoice', %s, 5, now(), %s) RETURNING id",
        (queue_name, status, error),
    ).fetchone()[0]


def test_overview_lists_queues_and_a_job_enqueued_with_psql_appears_without_reload(
    conn, dashboard, page, database_url
):
    queue.enqueue(conn, "send_invoice", {"id": 1}, queue="default")
    queue.enqueue(conn, "report", {"name": "x"}, queue="reports")
    for status, count in (("done", 120), ("failed", 3), ("cancelled", 1)):
        for _ in range(count):
            finished_job(conn, status)
    conn.execute(
        "INSERT INTO pgdyno.scale_rules (queue, process_type, max_quantity)"
        " VALUES ('reports', 'winston', 2)"
    )
    conn.execute("INSERT INTO pgdyno.formations (process_type, quantity) VALUES ('winston', 1)")
    Sampler(settle=0).tick(conn)
    page.goto(dashboard.url)
    assert page.locator("#queues tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.queue)"
    ) == [
        "default",
        "reports",
    ]
    assert page.locator('tr[data-queue="default"] [data-col="ready"]').inner_text() == "1"
    assert page.locator('tr[data-queue="default"] [data-col="done"]').inner_text() == "120"
    assert page.locator('tr[data-type="winston"] [data-col="quantity"]').inner_text() == "1"
    page.evaluate("window.notReloaded = true")

    psql(
        database_url,
        "INSERT INTO pgdyno.jobs (queue, task) VALUES ('mail', 'welcome'), ('default', 'x')"
        " RETURNING id",
    )

    page.locator('tr[data-queue="mail"]').wait_for()
    page.wait_for_function(
        """() => document.querySelector('tr[data-queue="default"] [data-col="ready"]')
                 .textContent === '2'"""
    )
    assert page.evaluate("window.notReloaded") is True
    page.screenshot_as("overview")


def test_finished_jobs_are_counted_without_a_dispatcher_and_appear_live(conn, dashboard, page):
    page.goto(dashboard.url)
    page.evaluate("window.notReloaded = true")
    for _ in range(3):
        finished_job(conn, "done", queue_name="mail")
    # Counted by the dashboard itself once they are SETTLE_S old; the page refreshes itself.
    page.wait_for_function(
        """() => {
            const cell = document.querySelector('tr[data-queue="mail"] [data-col="done"]');
            return cell && cell.textContent === '3';
        }""",
        timeout=(SETTLE_S + 15) * 1000,
    )
    assert page.evaluate("window.notReloaded") is True


def test_retry_and_cancel_buttons_change_the_job(conn, dashboard, page):
    failed = finished_job(conn, "failed", error="ValueError: boom\nTraceback (most recent call)")
    ready = queue.enqueue(conn, "send_invoice", {"id": 2}, run_at=3600)

    page.goto(dashboard.url + "jobs?status=failed")
    page.locator(f'tr[data-job="{failed}"] a').click()
    page.wait_for_url(f"**/jobs/{failed}")
    assert "ValueError: boom" in page.locator("#error").inner_text()
    assert page.locator("#cancel").count() == 0
    page.screenshot_as("job")
    page.locator("#retry").click()
    page.locator(".notice").wait_for()
    assert "ready again" in page.locator(".notice").inner_text()
    assert queue.get_job(conn, failed)["status"] == "ready"
    assert queue.get_job(conn, failed)["attempts"] == 0

    page.goto(dashboard.url + f"jobs/{ready}")
    assert page.locator("#retry").count() == 0
    page.locator("#cancel").click()
    page.locator(".notice").wait_for()
    assert queue.get_job(conn, ready)["status"] == "cancelled"

    page.goto(dashboard.url + "jobs")
    page.screenshot_as("jobs")


def test_read_only_dashboard_has_no_buttons_and_refuses_actions(conn, start_dashboard, page):
    dashboard = start_dashboard(read_only=True)
    failed = finished_job(conn, "failed", error="boom")
    ready = queue.enqueue(conn, "send_invoice", {"id": 3}, run_at=3600)
    running = conn.execute(
        "INSERT INTO pgdyno.jobs (queue, task, status, attempts, started_at, lease_expires_at)"
        " VALUES ('default', 'x', 'running', 1, now(), now() + interval '1 min') RETURNING id"
    ).fetchone()[0]
    pausing.pause(conn, "mail")
    store.add(conn, "nightly", task="report", timing=Timing("0 3 * * *"))

    for path in (f"jobs/{failed}", f"jobs/{ready}", f"jobs/{running}", "", "schedules"):
        page.goto(dashboard.url + path)
        assert page.locator("#read-only").is_visible()
        assert page.locator("#retry, #cancel, form[method=post], button").count() == 0, path
    assert page.locator('tr[data-schedule="nightly"]').count() == 1  # shown, without buttons

    session = requests.Session()
    session.get(dashboard.url + f"jobs/{ready}", timeout=10)
    token = session.cookies.get("pgdyno_csrf") or "x"
    for path, form in (
        (f"jobs/{failed}/retry", {}),
        (f"jobs/{ready}/cancel", {}),
        (f"jobs/{running}/cancel", {}),
        ("queues/pause", {"queue": "default"}),
        ("queues/resume", {"queue": "mail"}),
        ("schedules/pause", {"name": "nightly"}),
    ):
        answer = session.post(dashboard.url + path, data={"csrf": token, **form}, timeout=10)
        assert answer.status_code == 403, path
    assert queue.get_job(conn, failed)["status"] == "failed"
    assert queue.get_job(conn, ready)["status"] == "ready"
    assert queue.get_job(conn, running)["cancel_requested_at"] is None
    assert list(pausing.paused(conn)) == ["mail"]
    assert not store.all_schedules(conn)[0].paused


def test_report_csv_download_equals_report_fetch(
    conn, dashboard, page, reports_dir: Path, database_url, tmp_path: Path
):
    write_report(
        reports_dir,
        "squares",
        """
        -- Squares, with a comma and a quote in the text.
        -- param: upto integer = 5000
        SELECT n, n * n AS square, 'say "hi", ' || n AS text
          FROM generate_series(1, %(upto)s) AS n
        """,
    )
    job_id = queue.enqueue(
        conn, "report", {"name": "squares", "params": {"upto": 20000}}, queue="reports"
    )
    with worker(database_url, "reports", burst=True, PGDYNO_REPORTS_DIR=str(reports_dir)) as proc:
        assert proc.wait(60) == 0
    assert wait_for_status(conn, job_id, "done")

    page.goto(dashboard.url + "reports")
    assert "upto integer = 5000" in page.locator('tr[data-report="squares"]').inner_text()
    row = page.locator(f'#runs tr[data-job="{job_id}"]')
    assert "20,000" in row.inner_text()
    page.screenshot_as("reports")
    with page.expect_download() as download_info:
        row.locator("a.download").click()
    downloaded = tmp_path / "downloaded.csv"
    download_info.value.save_as(downloaded)

    fetched = subprocess.run(
        [sys.executable, "-m", "pgdyno", "report", "fetch", str(job_id)],
        env={"DATABASE_URL": database_url, "PATH": "/usr/bin:/bin"},
        check=True,
        capture_output=True,
    ).stdout
    assert fetched.startswith(b"n,square,text\n1,1,") and len(fetched) > 400_000
    assert downloaded.read_bytes() == fetched


def test_timeline_draws_the_quantity_and_scale_events_of_a_0_1_0_cycle(
    start_platform, effects, dashboard, page
):
    conn = effects
    platform = start_platform(PROCFILE, PGDYNO_RECONCILE_INTERVAL="0.5s")
    wait_until(
        lambda: conn.execute("SELECT count(*) FROM pgdyno.scale_rules").fetchone()[0],
        message="the dispatcher to record its rules",
    )
    page.goto(dashboard.url + "timeline")
    chart = "Chart.getChart(document.querySelector('section[data-type=winston] canvas'))"
    page.wait_for_function(f"() => {chart} !== undefined")

    job_id = conn.execute(
        "INSERT INTO pgdyno.jobs (queue, task, args) VALUES ('reports', 'gate', "
        """'{"key": "timeline"}') RETURNING id"""
    ).fetchone()[0]
    # The quantity line reaches 1 while the job runs (no reload: the chart refreshes itself).
    page.wait_for_function(
        f"() => {chart}.data.datasets[0].data.some(p => p.y === 1)", timeout=30_000
    )
    page.wait_for_function(f"() => {chart}.data.datasets[1].data.some(p => p.y >= 1)")
    open_gate(conn, "timeline")
    wait_for_status(conn, job_id, "done", timeout=30)
    wait_until(
        lambda: platform.quantity("winston") == 0 and not platform.alive("winston"),
        timeout=30,
        message="winston back to zero",
    )
    page.wait_for_function(
        f"""() => {{
            const c = {chart};
            const dynos = c.data.datasets[0].data.filter(p => p.y !== null).map(p => p.y);
            const events = c.data.datasets[2].data;
            return events.length === 2 && dynos.indexOf(1) >= 0
                   && dynos.lastIndexOf(0) > dynos.indexOf(1);
        }}""",
        timeout=30_000,
    )
    events = conn.execute(
        "SELECT from_quantity, to_quantity, actor, request_id FROM pgdyno.scale_events"
        " WHERE process_type = 'winston' ORDER BY id"
    ).fetchall()
    assert [(e[0], e[1]) for e in events] == [(0, 1), (1, 0)]
    drawn = page.evaluate(
        f"{chart}.data.datasets[2].data.map(p => [p.event.from_quantity, p.y, p.event.actor])"
    )
    assert drawn == [[e[0], e[1], e[2]] for e in events]

    # Hovering the scale-up marker shows who, why, outcome and the Request-Id.
    x, y = page.evaluate(
        f"(() => {{ const m = {chart}.getDatasetMeta(2).data[0]; return [m.x, m.y]; }})()"
    )
    box = page.locator("section[data-type=winston] canvas").bounding_box()
    page.mouse.move(box["x"] + x, box["y"] + y)
    page.wait_for_function(f"() => {chart}.tooltip.getActiveElements().length > 0")
    tooltip = "\n".join(page.evaluate(f"{chart}.tooltip.body.flatMap(b => b.lines)"))
    assert f"0 → 1 by {events[0][2]}" in tooltip
    assert "why: jobs enqueued" in tooltip and "outcome: ok" in tooltip
    assert events[0][3] and f"Request-Id: {events[0][3]}" in tooltip
    page.screenshot_as("timeline")

    page.goto(dashboard.url + "types")
    assert "0 → 1" in page.locator("#type-winston .events").inner_text()
    page.screenshot_as("process-types")
