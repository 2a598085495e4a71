"""Invented queue names cost nothing that grows: an enqueue role inserts one job into each of
20,000 new queues (the tester's statement) and 500 more with a due job, and the sampler's rows
per tick, /metrics, the overview, `pgdyno queue list`, `pgdyno status` and the finished-job
counters stay bounded: the queues that matter (a scale rule, a live worker, a pause) and the 20
deepest others one by one, the rest summed. Their time with 20,000 queues is measured in
bench/queue_cap.py, not here."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
import requests
from click.testing import CliRunner, Result
from fakes import FakeClock
from helpers import enqueue_role
from prometheus_client.parser import text_string_to_metric_families

from pgdyno import pausing, registry
from pgdyno.cli import main
from pgdyno.web import sampler
from pgdyno.web.sampler import Sampler

SPAM = 20_000
DUE_SPAM = 500
#: The queues that matter in `installation`: a rule's, a live worker's, a paused one.
MATTER = {"reports", "default", "mail"}
#: The deepest others shown (README: the 20 deepest), then one row for the rest.
OTHERS_SHOWN = 20
#: `mailers` (5 due jobs) and the first 19 queues with a due job, by name.
DEEPEST = {"mailers"} | set(sorted(f"due-{n}" for n in range(1, DUE_SPAM + 1))[:19])
FOLDED = SPAM + DUE_SPAM - 19
TOTALS_SQL = (
    "SELECT count(*) FILTER (WHERE status = 'ready' AND run_at <= now()),"
    " count(*) FILTER (WHERE status = 'ready' AND run_at > now()),"
    " count(*) FILTER (WHERE status = 'running') FROM pgdyno.jobs"
)


@pytest.fixture
def enqueue_url(conn: psycopg.Connection, database_url: str) -> Iterator[str]:
    """The URL of an enqueue role (`pgdyno grant-enqueue`): a client that may insert jobs."""
    with enqueue_role(conn, database_url) as url:
        yield url


def spam(url: str, prefix: str = "") -> None:
    """The tester's statement, as the enqueue role, and 500 queues with a job due now."""
    with psycopg.connect(url, autocommit=True) as client:
        client.execute(
            "INSERT INTO pgdyno.jobs (queue, task, run_at) SELECT %s || 'spam-' || g, 'x',"
            " '2199-01-01' FROM generate_series(1, %s) AS g",
            (prefix, SPAM),
        )
        client.execute(
            "INSERT INTO pgdyno.jobs (queue, task) SELECT %s || 'due-' || g, 'x'"
            " FROM generate_series(1, %s) AS g",
            (prefix, DUE_SPAM),
        )


@pytest.fixture
def installation(conn: psycopg.Connection, enqueue_url: str) -> psycopg.Connection:
    """winston scales `reports`, a live worker serves `default` and `reports`, `mail` is
    paused, `mailers` (no rule, no worker) holds 5 due jobs; then the spam."""
    conn.execute(
        "INSERT INTO pgdyno.scale_rules (queue, process_type) VALUES ('reports', 'winston')"
    )
    conn.execute("INSERT INTO pgdyno.formations (process_type, quantity) VALUES ('winston', 0)")
    pausing.pause(conn, "mail")
    registry.Registration(
        "worker.1:1:ab",
        ["default", "reports"],
        dyno="worker.1",
        process_type="worker",
        concurrency=2,
    ).tick(conn, 0.0, running=0)
    conn.execute(
        "INSERT INTO pgdyno.jobs (queue, task) VALUES ('default', 't'), ('default', 't'),"
        " ('reports', 't'), ('mailers', 't'), ('mailers', 't'), ('mailers', 't'),"
        " ('mailers', 't'), ('mailers', 't')"
    )
    conn.execute(
        "INSERT INTO pgdyno.jobs (queue, task, status, finished_at)"
        " SELECT 'default', 't', 'done', now() FROM generate_series(1, 4)"
    )
    spam(enqueue_url)
    return conn


def totals(conn: psycopg.Connection) -> tuple[int, int, int]:
    """Due ready, scheduled and running jobs of every queue."""
    row = conn.execute(TOTALS_SQL).fetchone()
    assert row is not None
    return row


def test_a_sampler_tick_writes_the_queues_shown_and_one_row_for_the_rest(installation, enqueue_url):
    conn = installation
    clock = FakeClock()
    ticks = Sampler(settle=0, min_interval=0, clock=clock.now)

    # mail (paused, no job) has nothing to sample: 2 that matter, 20 others, 1 summed row.
    assert ticks.tick(conn) == 2 + OTHERS_SHOWN + 1  # was one row per queue: 20,506
    rows = conn.execute(
        "SELECT queue, process_type, ready, running FROM pgdyno.metrics_samples"
    ).fetchall()
    assert {row[0] for row in rows} == {"default", "reports", ""} | DEEPEST
    assert sum(row[2] for row in rows) == totals(conn)[0]  # every due job counted once
    assert [row[2:] for row in rows if row[0] == ""] == [(DUE_SPAM - 19, 0)]

    clock.advance(sampler.HEARTBEAT_S)  # every group due again: the most a tick writes
    assert ticks.tick(conn) == 2 + OTHERS_SHOWN + 1

    # New names every time cost the dispatcher no memory either: groups gone are forgotten.
    conn.execute("DELETE FROM pgdyno.jobs WHERE queue ~ '^(spam|due)-'")
    spam(enqueue_url, prefix="new-")
    clock.advance(sampler.HEARTBEAT_S)
    assert ticks.tick(conn) == 2 + OTHERS_SHOWN + 1
    groups = set(ticks._last)  # one per unscaled queue, one per process type
    assert len(groups) == 2 + OTHERS_SHOWN + 1
    assert {"queue:default", "type:winston", "queue:", "queue:new-due-1"} <= groups
    assert not [group for group in groups if group.startswith("queue:due-")]


def scrape(url: str) -> tuple[int, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    answer = requests.get(url + "metrics", timeout=60)
    assert answer.status_code == 200
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }
    return len(answer.content), samples


def test_metrics_show_the_queues_that_matter_and_the_deepest_and_sum_the_rest(
    installation, dashboard
):
    size, metrics = scrape(dashboard.url)
    assert size < 16_000  # was 4.7 MB
    queues = {dict(labels)["queue"] for (name, labels) in metrics if name == "pgdyno_queue_jobs"}
    assert queues == MATTER | DEEPEST | {""}
    assert metrics[("pgdyno_other_queues", ())] == FOLDED
    for index, status in enumerate(("ready", "scheduled", "running")):
        shown = sum(
            value
            for (name, labels), value in metrics.items()
            if name == "pgdyno_queue_jobs" and dict(labels)["status"] == status
        )
        assert shown == totals(installation)[index], status  # the sum over queues is whole
    assert metrics[("pgdyno_queue_jobs", (("queue", ""), ("status", "scheduled")))] == SPAM
    assert metrics[("pgdyno_queue_paused", (("queue", "mail"),))] == 1


def test_the_overview_lists_the_queues_shown_then_how_many_more(installation, dashboard):
    for headers in ({}, {"HX-Request": "true"}):  # the page, and its refresh every 2-3 s
        answer = requests.get(dashboard.url, headers=headers, timeout=60)
        assert answer.status_code == 200
        assert len(answer.content) < 60_000  # was 9.8 MB
        listed = re.findall(r'<tr data-queue="([^"]*)"', answer.text)
        assert set(listed) == MATTER | DEEPEST
        assert f"and {FOLDED:,} more queues ({FOLDED:,} jobs)" in answer.text

    # The Jobs page's queue filter offers the queues shown, and still finds any queue's jobs.
    jobs = requests.get(dashboard.url + "jobs", params={"queue": "spam-77"}, timeout=60)
    assert len(jobs.content) < 60_000  # its queue menu listed every queue: 545 kB
    assert "<option selected>spam-77</option>" in jobs.text
    assert len(re.findall(r"<tr data-job", jobs.text)) == 1


@pytest.fixture
def cli(database_url: str) -> Callable[..., Result]:
    def invoke(*args: str) -> Result:
        result = CliRunner().invoke(main, list(args), env={"DATABASE_URL": database_url})
        assert result.exit_code == 0, result.output
        return result

    return invoke


def test_queue_list_shows_the_queues_that_matter_and_the_deepest_then_how_many_more(
    installation, cli
):
    lines = cli("queue", "list").stdout.splitlines()
    assert len(lines) == 1 + len(MATTER) + OTHERS_SHOWN + 1  # was a line per queue
    assert {line.split()[0] for line in lines[1:-1]} == MATTER | DEEPEST
    assert lines[-1] == f"and {FOLDED:,} more queues ({FOLDED:,} jobs)"

    rows: list[dict[str, Any]] = json.loads(cli("queue", "list", "--json").stdout)
    assert len(rows) == len(MATTER) + OTHERS_SHOWN + 1
    assert (rows[-1]["name"], rows[-1]["queues"]) == ("", FOLDED)
    shown = tuple(sum(row[key] for row in rows) for key in ("ready", "scheduled", "running"))
    assert shown == totals(installation)


def test_status_shows_the_queues_that_matter_and_the_deepest_then_how_many_more(installation, cli):
    text = cli("status").stdout
    assert len(text.splitlines()) < 40  # was a line per queue
    assert "queue mail: PAUSED (no jobs)" in text
    assert f"and {FOLDED:,} more queues ({FOLDED:,} jobs)" in text

    queues: dict[str, dict[str, Any]] = json.loads(cli("status", "--json").stdout)["queues"]
    assert set(queues) == {"default", "reports", ""} | DEEPEST  # mail has no job
    assert queues[""]["queues"] == FOLDED
    ready, scheduled, running = totals(installation)
    assert sum(entry["ready"] for entry in queues.values()) == ready + scheduled
    assert sum(entry["running"] for entry in queues.values()) == running
    assert sum(entry["done"] for entry in queues.values()) == 4


def test_cancelling_the_invented_queues_keeps_the_counters_bounded(installation, dashboard):
    conn = installation
    conn.execute(
        "UPDATE pgdyno.jobs SET status = 'cancelled', finished_at = now()"
        " WHERE queue ~ '^(spam|due)-'"
    )
    sampler.advance_counters(conn, settle=0)
    queues, cancelled = conn.execute(
        "SELECT count(DISTINCT queue), sum(total) FILTER (WHERE status = 'cancelled')"
        " FROM pgdyno.metrics_counters"
    ).fetchone()
    assert queues == 1 + 1_000 + 1  # default, 1,000 others (COUNTED_QUEUES), '': was 20,501
    assert cancelled == SPAM + DUE_SPAM  # each counted once, under its queue or ''
    size, metrics = scrape(dashboard.url)
    assert size < 16_000
    shown_cancelled = sum(
        value
        for (name, labels), value in metrics.items()
        if name == "pgdyno_jobs_finished_total" and dict(labels)["status"] == "cancelled"
    )
    assert shown_cancelled == SPAM + DUE_SPAM
