"""The workers registry on a real database: registration, heartbeats, the throttled busy/idle
writes (at most one per THROTTLE_S, recording the true moment), states, served queues."""

from __future__ import annotations

import psycopg
import pytest

from pgdyno import registry
from pgdyno.registry import HEARTBEAT_S, THROTTLE_S, Registration


def row(conn: psycopg.Connection) -> dict:
    (found,) = [w for w in registry.workers(conn) if w["id"] == "winston.1:1:ab"]
    return found


def busy_age(conn: psycopg.Connection) -> float | None:
    value = conn.execute(
        "SELECT extract(epoch FROM now() - busy_at)::float8 FROM pgdyno.workers"
    ).fetchone()[0]
    return value


@pytest.fixture
def reg() -> Registration:
    return Registration(
        "winston.1:1:ab",
        ["reports", "other"],
        dyno="winston.1",
        process_type="winston",
        concurrency=2,
    )


def test_first_tick_registers_then_heartbeats_and_stopped_marks_it(conn, reg):
    assert reg.tick(conn, 100.0, running=0) == 100.0 + HEARTBEAT_S
    found = row(conn)
    assert (found["state"], found["queues"], found["process_type"]) == (
        "live",
        ["reports", "other"],
        "winston",
    )
    assert found["busy_at"] is None  # never ran a job
    assert reg.tick(conn, 105.0, running=0) == 100.0 + HEARTBEAT_S  # nothing due yet
    reg.stopped(conn)
    assert row(conn)["state"] == "stopped"
    assert registry.served_queues(conn, "winston") == (["other", "reports"], 0)


def test_turning_idle_is_written_within_the_throttle_with_the_true_moment(conn, reg):
    reg.tick(conn, 100.0, running=1)  # registers busy
    assert busy_age(conn) < 1
    conn.execute("UPDATE pgdyno.workers SET busy_at = now() - interval '1 hour'")
    # Idle at 100.5, within the throttle of the first write: deferred to 102.0 ...
    assert reg.tick(conn, 100.5, running=0) == 100.0 + THROTTLE_S
    assert busy_age(conn) > 3000
    # ... busy and idle again meanwhile (a flap): still one write, at 102.0, saying the
    # worker was busy until 101.5, half a second ago.
    reg.tick(conn, 101.0, running=1)
    reg.tick(conn, 101.5, running=0)
    assert reg.tick(conn, 102.0, running=0) == 102.0 + HEARTBEAT_S
    assert 0.4 < busy_age(conn) < 1.5


def test_served_queues_are_those_of_live_workers_else_of_the_latest(conn, reg):
    assert registry.served_queues(conn, "winston") == ([], 0)
    reg.tick(conn, 0.0, running=0)
    conn.execute(
        "INSERT INTO pgdyno.workers (id, process_type, queues, concurrency, heartbeat_at)"
        " VALUES ('old', 'winston', '{mail}', 1, now() - interval '1 minute')"
    )
    assert registry.served_queues(conn, "winston") == (["other", "reports"], 1)
    reg.stopped(conn)
    # None live: the latest worker's queues (the command line last seen).
    conn.execute(
        "UPDATE pgdyno.workers SET started_at = now() - interval '1 hour' WHERE id = 'old'"
    )
    assert registry.served_queues(conn, "winston") == (["other", "reports"], 0)
    states = {w["id"]: w["state"] for w in registry.workers(conn)}
    assert states == {"old": "lost", "winston.1:1:ab": "stopped"}
    conn.execute("UPDATE pgdyno.workers SET heartbeat_at = now() - interval '2 hours'")
    assert registry.prune(conn) == 2
