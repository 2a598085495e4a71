"""Who may see the dashboard: credentials, the refusal to serve publicly without one, CSRF on
actions, and no secret on any page. Over real HTTP with requests."""

from __future__ import annotations

import re

import pytest
import requests
from helpers import PgdynoProcess
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgdyno import pausing, queue
from pgdyno.errors import ConfigError
from pgdyno.schedules import store
from pgdyno.schedules.timing import Timing
from pgdyno.web.app import app_from_env
from pgdyno.web.auth import Credentials

PAGES = ["", "types", "timeline", "timeline.json", "jobs", "schedules", "reports", "metrics"]


def test_pgdyno_web_refuses_a_non_loopback_bind_without_a_credential(database_url):
    with PgdynoProcess(["web", "--host", "0.0.0.0", "--port", "0"], database_url) as proc:
        assert proc.wait(30) == 1
        assert "refusing to serve the dashboard on 0.0.0.0 without a credential" in proc.output()
        assert "PGDYNO_WEB_PASSWORD" in proc.output()


def test_pgdyno_web_serves_on_loopback_and_prints_its_url(database_url):
    with PgdynoProcess(["web", "--port", "0"], database_url) as proc:
        text = proc.wait_for_output("pgdyno dashboard at http://127.0.0.1:")
        url = re.search(r"http://127\.0\.0\.1:\d+/", text).group(0)
        assert requests.get(url, timeout=10).status_code == 200


def test_the_importable_app_needs_a_credential(database_url):
    with pytest.raises(ConfigError, match="PGDYNO_WEB_PASSWORD"):
        app_from_env({"DATABASE_URL": database_url})
    app = app_from_env({"DATABASE_URL": database_url, "PGDYNO_WEB_TOKEN": "t0ken"})
    client = app.test_client()
    assert client.get("/").status_code == 401
    assert client.get("/", headers={"Authorization": "Bearer t0ken"}).status_code == 200
    app.extensions["pgdyno_db"].close()


def test_wrong_or_missing_password_is_401_and_the_right_one_passes(start_dashboard):
    dashboard = start_dashboard(credentials=Credentials(password="hunter2", token="tok-123"))
    for path in [*PAGES, "static/pgdyno.css"]:
        answer = requests.get(dashboard.url + path, timeout=10)
        assert answer.status_code == 401, path
        assert answer.headers["WWW-Authenticate"].startswith("Basic")
    assert requests.get(dashboard.url, auth=("admin", "wrong"), timeout=10).status_code == 401
    bad_bearer = {"Authorization": "Bearer tok-12"}
    assert requests.get(dashboard.url, headers=bad_bearer, timeout=10).status_code == 401
    assert requests.get(dashboard.url, auth=("anyone", "hunter2"), timeout=10).status_code == 200
    scrape = requests.get(
        dashboard.url + "metrics", headers={"Authorization": "Bearer tok-123"}, timeout=10
    )
    assert scrape.status_code == 200 and "pgdyno_queue_jobs" in scrape.text


def test_actions_need_the_csrf_token_and_a_same_origin_request(conn, dashboard):
    failed = conn.execute(
        "INSERT INTO pgdyno.jobs (queue, task, status, finished_at) VALUES"
        " ('default', 'x', 'failed', now()) RETURNING id"
    ).fetchone()[0]
    url = dashboard.url + f"jobs/{failed}/retry"
    session = requests.Session()
    assert session.get(dashboard.url + f"jobs/{failed}", timeout=10).ok
    token = session.cookies["pgdyno_csrf"]

    assert requests.get(url, timeout=10).status_code == 405  # never by GET
    assert session.post(url, timeout=10).status_code == 403  # no token
    assert session.post(url, data={"csrf": "forged"}, timeout=10).status_code == 403
    cross_site = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}
    answer = session.post(url, data={"csrf": token}, headers=cross_site, timeout=10)
    assert answer.status_code == 403
    assert queue.get_job(conn, failed)["status"] == "failed"

    answer = session.post(url, data={"csrf": token}, allow_redirects=False, timeout=10)
    assert answer.status_code == 303
    assert queue.get_job(conn, failed)["status"] == "ready"


def test_queue_and_schedule_actions_need_the_csrf_token_and_a_same_origin_request(conn, dashboard):
    store.add(conn, "nightly", task="report", timing=Timing("0 3 * * *"))
    queue.enqueue(conn, "x", queue="mail")
    session = requests.Session()
    assert session.get(dashboard.url, timeout=10).ok  # the overview has forms: a token
    token = session.cookies["pgdyno_csrf"]
    cross_site = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}
    actions = (("queues/pause", {"queue": "mail"}), ("schedules/pause", {"name": "nightly"}))
    for path, form in actions:
        url = dashboard.url + path
        assert requests.get(url, timeout=10).status_code == 405
        assert session.post(url, data=form, timeout=10).status_code == 403
        assert session.post(url, data={**form, "csrf": "forged"}, timeout=10).status_code == 403
        answer = session.post(url, data={**form, "csrf": token}, headers=cross_site, timeout=10)
        assert answer.status_code == 403
    assert pausing.paused(conn) == {}
    assert not store.all_schedules(conn)[0].paused

    for path, form in actions:
        answer = session.post(
            dashboard.url + path, data={**form, "csrf": token}, allow_redirects=False, timeout=10
        )
        assert answer.status_code == 303
    assert list(pausing.paused(conn)) == ["mail"]
    assert store.all_schedules(conn)[0].paused

    # A name no queue can have, a schedule that does not exist: a clear refusal, nothing written.
    answer = session.post(dashboard.url + "queues/pause", data={"queue": " ", "csrf": token})
    assert answer.status_code == 400 and "a queue is a non-empty name" in answer.text
    answer = session.post(dashboard.url + "schedules/resume", data={"name": "nope", "csrf": token})
    assert answer.status_code == 404 and "no schedule named &#39;nope&#39;" in answer.text
    assert list(pausing.paused(conn)) == ["mail"]


def test_no_secret_on_any_page(conn, database_url, start_dashboard, monkeypatch):
    api_key = "hk-secret-0123456789abcdef"
    monkeypatch.setenv("HEROKU_API_KEY", api_key)
    conn.execute("DROP ROLE IF EXISTS web_reader")
    conn.execute("CREATE ROLE web_reader LOGIN SUPERUSER PASSWORD 'pw-Sekr1t-42'")
    info = conninfo_to_dict(database_url)
    url = make_conninfo(database_url, user="web_reader", password="pw-Sekr1t-42")
    secrets = [api_key, "pw-Sekr1t-42", "dsn-pass-77", "tok-in-error-55"]
    error = (
        f"OperationalError: cannot reach postgresql://app:dsn-pass-77@db.internal/{info['dbname']}"
        " with HEROKU_API_KEY=hk-secret-0123456789abcdef token=tok-in-error-55"
    )
    failed = conn.execute(
        "INSERT INTO pgdyno.jobs (queue, task, status, finished_at, last_error) VALUES"
        " ('default', 'x', 'failed', now(), %s) RETURNING id",
        (error,),
    ).fetchone()[0]
    conn.execute(
        "INSERT INTO pgdyno.scale_rules (queue, process_type) VALUES ('default', 'winston')"
    )
    conn.execute(
        "INSERT INTO pgdyno.formations (process_type, quantity, last_error, last_error_at)"
        " VALUES ('winston', 0, %s, now())",
        (error,),
    )
    conn.execute(
        "INSERT INTO pgdyno.scale_events (process_type, from_quantity, to_quantity, reason,"
        " actor, outcome) VALUES ('winston', 0, 1, 'jobs enqueued', 'dispatcher', %s)",
        (f"error: {error}",),
    )
    conn.execute(  # the error the dispatcher recorded for a schedule whose job was refused
        "INSERT INTO pgdyno.schedules (name, task, cron, last_error)"
        " VALUES ('nightly', 't', '0 3 * * *', %s)",
        (error,),
    )
    from pgdyno.web.app import create_app
    from pgdyno.web.server import start_background

    dashboard = start_background(create_app(url))
    try:
        for path in [*PAGES, f"jobs/{failed}", "jobs?status=failed", "timeline.json?range=week"]:
            for headers in ({}, {"HX-Request": "true"}):
                answer = requests.get(dashboard.url + path, headers=headers, timeout=10)
                assert answer.status_code == 200, path
                for secret in secrets:
                    assert secret not in answer.text, (secret, path)
        page = requests.get(dashboard.url + f"jobs/{failed}", timeout=10).text
        assert "postgresql://app:***@db.internal" in page  # redacted, still useful
        page = requests.get(dashboard.url + "schedules", timeout=10).text
        assert "postgresql://app:***@db.internal" in page
    finally:
        dashboard.stop()
        conn.execute("DROP ROLE web_reader")
