"""/metrics parsed with prometheus_client's own parser and checked against the database; the
sampler the dispatcher runs (counters, samples, idle queues, failures, prune)."""

from __future__ import annotations

import logging
from pathlib import Path

import psycopg
import pytest
import requests
from click.testing import CliRunner
from helpers import server_dir
from prometheus_client.parser import text_string_to_metric_families

from pgdyno import pausing, queue, registry
from pgdyno.cli import main
from pgdyno.migrate import migrate
from pgdyno.schedules import store
from pgdyno.schedules.timing import Timing
from pgdyno.web import sampler
from pgdyno.web.app import create_app
from pgdyno.web.sampler import Sampler

PG15_BIN = Path("/usr/lib/postgresql/15/bin")


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    answer = requests.get(url + "metrics", timeout=10)
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("text/plain; version=")
    assert answer.headers["Content-Type"].count("charset") == 1
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def finish(conn, queue_name: str, status: str, count: int) -> None:
    conn.execute(
        "INSERT INTO pgdyno.jobs (queue, task, status, finished_at)"
        " SELECT %s, 't', %s, now() FROM generate_series(1, %s)",
        (queue_name, status, count),
    )


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_metrics_match_the_database(conn, dashboard):
    queue.enqueue(conn, "t", queue="default")
    queue.enqueue(conn, "t", queue="default", run_at=3600)
    conn.execute(
        "INSERT INTO pgdyno.jobs (queue, task, status, started_at, run_at, lease_expires_at)"
        " VALUES ('mail', 't', 'running', now(), now() - interval '90 s', now() + interval '30s'),"
        "        ('mail', 't', 'ready', now(), now() - interval '42 s', NULL)"
    )
    finish(conn, "default", "done", 7)
    finish(conn, "default", "failed", 2)
    finish(conn, "mail", "cancelled", 1)
    conn.execute("INSERT INTO pgdyno.scale_rules (queue, process_type) VALUES ('mail', 'winston')")
    conn.execute("INSERT INTO pgdyno.formations (process_type, quantity) VALUES ('winston', 2)")
    conn.execute(
        "INSERT INTO pgdyno.scale_events (process_type, from_quantity, to_quantity, reason, actor,"
        " outcome) VALUES ('winston', 0, 1, 'r', 'a', 'ok'), ('winston', 1, 2, 'r', 'a', 'ok'),"
        " ('winston', 2, 0, 'r', 'a', 'error: 422 invalid_params: no')"
    )
    Sampler(settle=0).tick(conn)

    metrics = scrape(dashboard.url)

    def value(name: str, **labels: str) -> float:
        return metrics[(name, tuple(sorted(labels.items())))]

    for queue_name, ready, scheduled, running in conn.execute(
        "SELECT queue, count(*) FILTER (WHERE status = 'ready' AND run_at <= now()),"
        " count(*) FILTER (WHERE status = 'ready' AND run_at > now()),"
        " count(*) FILTER (WHERE status = 'running') FROM pgdyno.jobs GROUP BY queue"
    ).fetchall():
        assert value("pgdyno_queue_jobs", queue=queue_name, status="ready") == ready
        assert value("pgdyno_queue_jobs", queue=queue_name, status="scheduled") == scheduled
        assert value("pgdyno_queue_jobs", queue=queue_name, status="running") == running
    for queue_name, status, count in conn.execute(
        "SELECT queue, status::text, count(*) FROM pgdyno.jobs"
        " WHERE status IN ('done', 'failed', 'cancelled') GROUP BY queue, status"
    ).fetchall():
        assert value("pgdyno_jobs_finished_total", queue=queue_name, status=status) == count
    oldest = conn.execute(
        "SELECT extract(epoch FROM now() - min(run_at))::float8 FROM pgdyno.jobs"
        " WHERE queue = 'mail' AND status = 'ready'"
    ).fetchone()[0]
    assert abs(value("pgdyno_queue_oldest_ready_age_seconds", queue="mail") - oldest) < 5
    assert value("pgdyno_formation_quantity", process_type="winston") == 2
    assert value("pgdyno_scale_events_total", process_type="winston", outcome="ok") == 2
    assert value("pgdyno_scale_events_total", process_type="winston", outcome="error") == 1


def test_paused_queues_and_registered_workers_match_the_database(conn, dashboard):
    queue.enqueue(conn, "t", queue="default")
    pausing.pause(conn, "mail")  # paused before any job: a queue of its own
    pausing.pause(conn, "reports")
    pausing.resume(conn, "reports")
    conn.execute(
        "INSERT INTO pgdyno.scale_rules (queue, process_type) VALUES ('reports', 'winston')"
    )
    conn.execute(
        "INSERT INTO pgdyno.formations (process_type, quantity) VALUES ('winston', 1), ('idle', 0)"
    )
    for n, (process_type, fate) in enumerate(
        [
            ("winston", "live"),
            ("winston", "live"),
            ("winston", "lost"),
            ("winston", "stopped"),
            (None, "live"),
        ]
    ):
        entry = registry.Registration(
            f"w{n}", ["reports"], dyno=f"d{n}", process_type=process_type, concurrency=1
        )
        entry.tick(conn, 0.0, running=0)
        if fate == "stopped":
            entry.stopped(conn)
        if fate == "lost":
            conn.execute(
                "UPDATE pgdyno.workers SET heartbeat_at = now() - interval '1 hour' WHERE id = %s",
                (f"w{n}",),
            )

    metrics = scrape(dashboard.url)
    paused = {
        dict(labels)["queue"]: value
        for (name, labels), value in metrics.items()
        if name == "pgdyno_queue_paused"
    }
    assert paused == {"default": 0, "mail": 1, "reports": 0}
    workers = {
        (dict(labels)["process_type"], dict(labels)["state"]): value
        for (name, labels), value in metrics.items()
        if name == "pgdyno_workers"
    }
    expected = {
        (process_type or "", state): count
        for process_type, state, count in conn.execute(
            "SELECT process_type, CASE WHEN heartbeat_at > now() - interval '30 s' THEN 'live'"
            " ELSE 'lost' END, count(*) FROM pgdyno.workers WHERE stopped_at IS NULL GROUP BY 1, 2"
        ).fetchall()
    }
    assert expected == {("winston", "live"): 2, ("winston", "lost"): 1, ("", "live"): 1}
    assert workers == {**expected, ("", "lost"): 0, ("idle", "live"): 0, ("idle", "lost"): 0}


def test_finished_counter_survives_prune_and_counts_each_job_once(conn, dashboard):
    sampler = Sampler(settle=0, min_interval=0)
    finish(conn, "default", "done", 5)
    sampler.tick(conn)
    sampler.tick(conn)  # a second tick counts nothing twice
    conn.execute("UPDATE pgdyno.jobs SET finished_at = now() - interval '30 days'")
    assert (
        CliRunner()
        .invoke(main, ["prune", "--older-than", "7d"], env={"DATABASE_URL": conn.info.dsn})
        .exit_code
        == 0
    )
    finish(conn, "default", "done", 2)
    sampler.tick(conn)
    metrics = scrape(dashboard.url)
    assert metrics[("pgdyno_jobs_finished_total", (("queue", "default"), ("status", "done")))] == 7


def test_sampler_writes_changed_groups_and_a_heartbeat_for_idle_ones(conn):
    clock = Clock()
    sampler = Sampler(settle=0, min_interval=1, heartbeat=60, clock=clock)
    conn.execute(
        "INSERT INTO pgdyno.scale_rules (queue, process_type) VALUES ('reports', 'winston'),"
        " ('exports', 'winston')"
    )
    conn.execute("INSERT INTO pgdyno.formations (process_type, quantity) VALUES ('winston', 0)")
    queue.enqueue(conn, "t", queue="mail")

    assert sampler.tick(conn) == 3  # first tick: every queue
    clock.now += 0.5
    assert sampler.tick(conn) is None  # under min_interval
    clock.now += 1
    assert sampler.tick(conn) == 0  # nothing changed
    queue.enqueue(conn, "t", queue="reports")
    conn.execute("UPDATE pgdyno.formations SET quantity = 1")
    clock.now += 1
    assert sampler.tick(conn) == 2  # both queues of winston, not mail
    clock.now += 60
    assert sampler.tick(conn) == 3  # the heartbeat
    rows = conn.execute(
        "SELECT queue, process_type, quantity, ready FROM pgdyno.metrics_samples"
        " WHERE at = (SELECT max(at) FROM pgdyno.metrics_samples) ORDER BY queue"
    ).fetchall()
    minute = conn.execute(
        "SELECT quantity, depth FROM pgdyno.metrics_minutes WHERE process_type = 'winston'"
        " ORDER BY minute DESC LIMIT 1"
    ).fetchone()
    assert minute == (1, 1)  # the most dynos and jobs of the minute, winston's queues summed
    assert rows == [
        ("exports", "winston", 1, 0),
        ("mail", None, None, 1),
        ("reports", "winston", 1, 1),
    ]


def test_a_failing_sample_never_raises_and_is_logged_once(conn, caplog):
    sampler = Sampler(min_interval=0)
    conn.execute("DROP TABLE pgdyno.metrics_samples")
    queue.enqueue(conn, "t", queue="mail")
    with caplog.at_level(logging.WARNING, logger="pgdyno"):
        assert sampler.tick(conn) is None
        assert sampler.tick(conn) is None
    assert [r.msg for r in caplog.records] == ["metrics_sample_failed"]
    assert conn.execute("SELECT 1").fetchone() == (1,)  # the connection still works


def test_prune_removes_old_samples_with_the_jobs(conn):
    queue.enqueue(conn, "t")
    Sampler().tick(conn)
    conn.execute("UPDATE pgdyno.metrics_samples SET at = now() - interval '8 days'")
    Sampler().tick(conn)
    result = CliRunner().invoke(
        main, ["prune", "--older-than", "7d"], env={"DATABASE_URL": conn.info.dsn}
    )
    assert result.exit_code == 0, result.output
    ages = conn.execute(
        "SELECT count(*), min(at) > now() - interval '1 day' FROM pgdyno.metrics_samples"
    ).fetchone()
    assert ages == (1, True)


def test_every_page_and_the_sampler_run_on_postgres_15():
    """Heroku Postgres runs 15 too: the dashboard's statements on the system PostgreSQL 15."""
    if not (PG15_BIN / "initdb").exists():
        pytest.skip("PostgreSQL 15 binaries are not installed")
    from pgdyno.platform.postgres import EmbeddedPostgres

    with server_dir() as path:
        server = EmbeddedPostgres(path / "pg15", bin_dir=PG15_BIN)
        try:
            url = server.start()
            with psycopg.connect(url, autocommit=True) as conn:
                assert conn.info.server_version // 10000 == 15
                migrate(conn)
                conn.execute(
                    "INSERT INTO pgdyno.scale_rules (queue, process_type) VALUES ('q', 'w')"
                )
                job_id = queue.enqueue(conn, "t", queue="q")
                finish(conn, "q", "failed", 1)
                pausing.pause(conn, "p")
                registry.Registration("w", ["q"], dyno="w.1", process_type="w", concurrency=1).tick(
                    conn, 0.0, running=0
                )
                store.add(conn, "s", task="t", timing=Timing("@daily"))
                assert Sampler(settle=0).tick(conn) == 1
                sampler.prune(conn, 3600)
            app = create_app(url)
            client = app.test_client()
            for path in (
                "/",
                "/types",
                "/timeline",
                "/timeline.json?range=week",
                "/jobs",
                "/jobs?status=failed&queue=q&task=t",
                f"/jobs/{job_id}",
                "/reports",
                "/schedules",
                "/metrics",
            ):
                assert client.get(path).status_code == 200, path
            app.extensions["pgdyno_db"].close()
        finally:
            server.destroy()
