"""Schedules: when they run (cronsim, DST), exactly once per scheduled time whatever the
dispatchers do, missed runs once, pause and resume, Python declarations, the CLI, and real
dispatchers: two of them with a leader killed, and a nightly run spinning winston up from zero
on the local platform."""

from __future__ import annotations

import itertools
import json
import signal
import threading
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from fakes import FakeClock
from features.conftest import count
from helpers import effects_of, job_row, wait_until

import pgdyno
from pgdyno.errors import ConfigError
from pgdyno.schedules import declare, store
from pgdyno.schedules.declare import Declared
from pgdyno.schedules.runner import ScheduleRunner, run_key
from pgdyno.schedules.timing import Timing

LONDON = "Europe/London"


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


# --- timing ------------------------------------------------------------------------------------


def test_a_london_cron_schedule_follows_the_clock_changes():
    nightly = Timing(cron="0 3 * * *", timezone=LONDON)
    # Spring forward on 29 March 2026 (01:00 GMT becomes 02:00 BST): 03:00 is an hour earlier
    # in UTC from that night on.
    assert nightly.next_after(utc(2026, 3, 27, 12)) == utc(2026, 3, 28, 3)
    assert nightly.next_after(utc(2026, 3, 28, 12)) == utc(2026, 3, 29, 2)
    # Fall back on 25 October 2026: back to 03:00 UTC.
    assert nightly.next_after(utc(2026, 10, 24, 12)) == utc(2026, 10, 25, 3)
    assert nightly.latest_at_or_before(utc(2026, 10, 25, 2, 59)) == utc(2026, 10, 24, 2)
    assert nightly.latest_at_or_before(utc(2026, 10, 25, 3)) == utc(2026, 10, 25, 3)

    half_past_one = Timing(cron="30 1 * * *", timezone=LONDON)
    # 01:30 does not exist on 29 March: the run comes right after the jump (02:00 BST).
    assert half_past_one.next_after(utc(2026, 3, 28, 12)) == utc(2026, 3, 29, 1)
    # 01:30 happens twice on 25 October: one run (the first), then the next day's.
    assert half_past_one.next_after(utc(2026, 10, 24, 12)) == utc(2026, 10, 25, 0, 30)
    assert half_past_one.next_after(utc(2026, 10, 25, 0, 30)) == utc(2026, 10, 26, 1, 30)


def test_periods_run_on_a_grid_from_the_epoch_and_aliases_are_spelled_out():
    quarter = Timing.of(None, "15m", "UTC")
    assert quarter.next_after(utc(2026, 5, 1, 10, 7)) == utc(2026, 5, 1, 10, 15)
    assert quarter.next_after(utc(2026, 5, 1, 10, 15)) == utc(2026, 5, 1, 10, 30)
    assert quarter.latest_at_or_before(utc(2026, 5, 1, 10, 29, 59)) == utc(2026, 5, 1, 10, 15)
    assert Timing.of(None, "2s", "UTC").next_after(utc(2026, 5, 1, 0, 0, 3)) == utc(
        2026, 5, 1, 0, 0, 4
    )
    assert Timing(cron="@daily").next_after(utc(2026, 5, 1, 10)) == utc(2026, 5, 2)
    assert Timing(cron="*/10 * * * * *").next_after(utc(2026, 5, 1, 0, 0, 3)) == utc(
        2026, 5, 1, 0, 0, 10
    )


@pytest.mark.parametrize(
    ("cron", "every", "zone", "message"),
    [
        ("0 25 * * *", None, "UTC", "cron expression '0 25 \\* \\* \\*' is not valid"),
        ("every day", None, "UTC", "write five fields"),
        ("0 3 * * *", None, "Mars/Olympus", "unknown time zone 'Mars/Olympus'"),
        (None, "500ms", "UTC", "every 0.5s is too short"),
        (None, None, "UTC", "either a cron expression or a period"),
        ("0 3 * * *", "1h", "UTC", "either a cron expression or a period"),
    ],
)
def test_bad_timings_are_refused_saying_how_to_write_them(cron, every, zone, message):
    with pytest.raises(ConfigError, match=message):
        Timing.of(cron, every, zone)


def test_periodic_declares_a_schedule_of_a_task_and_refuses_a_plain_function(monkeypatch):
    monkeypatch.setattr(declare, "_pending", [])

    @pgdyno.periodic(cron="0 3 * * *", queue="reports", args={"day": "yesterday"}, timezone=LONDON)
    @pgdyno.task("feature.nightly")
    def nightly(day: str) -> None: ...

    @pgdyno.periodic(every="15m", task="feature.nightly", name="quarterly")
    def helper() -> None: ...

    assert declare.declared() == [
        Declared(
            "feature.nightly",
            "feature.nightly",
            "reports",
            {"day": "yesterday"},
            Timing("0 3 * * *", None, LONDON),
        ),
        Declared(
            "quarterly",
            "feature.nightly",
            "default",
            {},
            Timing(None, timedelta(minutes=15), "UTC"),
        ),
    ]
    with pytest.raises(ConfigError, match=r"is not a task; put @pgdyno\.periodic above"):
        pgdyno.periodic(cron="@daily")(lambda: None)
    pgdyno.periodic(every="1h", task="feature.nightly")(helper)
    with pytest.raises(ConfigError, match=r"two @pgdyno\.periodic schedules are named"):
        declare.declared()


# --- the dispatcher's runner, on a real database -----------------------------------------------


def add(conn, name: str, *, cron: str | None = None, every: str | None = None, **extra) -> None:
    store.add(conn, name, task="t", queue="ticks", timing=Timing.of(cron, every, "UTC"), **extra)


def jobs_of(conn, name: str) -> list[tuple[int, str]]:
    return conn.execute(
        "SELECT id, unique_key FROM pgdyno.jobs WHERE unique_key LIKE %s ORDER BY id",
        (f"schedule:{name}:%",),
    ).fetchall()


def schedule(conn, name: str) -> store.Schedule:
    return next(s for s in store.all_schedules(conn) if s.name == name)


def db_now(conn) -> datetime:
    return conn.execute("SELECT now()").fetchone()[0]


def test_a_due_run_is_enqueued_once_by_however_many_runners(database_url, conn):
    add(conn, "hourly", every="1h")
    first = ScheduleRunner(FakeClock())
    first.run_due(conn)
    planned = schedule(conn, "hourly").next_run_at
    assert planned == Timing.of(None, "1h", "UTC").next_after(db_now(conn))
    assert jobs_of(conn, "hourly") == []
    assert first.wake_at is not None and 0 < first.wake_at - FakeClock().now() <= 3600

    conn.execute("UPDATE pgdyno.schedules SET next_run_at = now() WHERE name = 'hourly'")
    due = schedule(conn, "hourly").next_run_at
    with psycopg.connect(database_url, autocommit=True) as other:
        for runner, connection in ((first, conn), (ScheduleRunner(FakeClock()), other)) * 2:
            runner.run_due(connection)
    [(job_id, key)] = jobs_of(conn, "hourly")
    assert key == run_key("hourly", due)
    entry = schedule(conn, "hourly")
    assert (entry.last_run_at, entry.last_job_id) == (due, job_id)
    assert entry.next_run_at == Timing.of(None, "1h", "UTC").next_after(due)


def test_a_second_dispatcher_racing_for_the_same_run_waits_and_enqueues_nothing(database_url, conn):
    add(conn, "race", every="1h")
    conn.execute("UPDATE pgdyno.schedules SET next_run_at = now() - interval '1 s'")
    due = schedule(conn, "race").next_run_at
    following = due + timedelta(hours=1)
    with psycopg.connect(database_url, autocommit=True) as other:
        holder = ScheduleRunner(FakeClock())
        late = ScheduleRunner(FakeClock())
        with conn.transaction():  # the first claims the run and holds its row lock...
            holder._enqueue(conn, "race", due, due, following, due)
            racing = threading.Thread(
                target=late._enqueue, args=(other, "race", due, due, following, due)
            )
            racing.start()
            wait_until(
                lambda: count(
                    conn,
                    "SELECT count(*) FROM pg_locks"
                    " WHERE NOT granted AND locktype = 'transactionid'",
                ),
                message="the second dispatcher to wait for the first's row lock",
            )
        racing.join(10)  # ...and the second finds next_run_at moved on
    assert len(jobs_of(conn, "race")) == 1


def test_a_run_whose_key_another_session_holds_waits_2_s_then_is_retried(database_url, conn):
    """An uncommitted job holding a run's unique key (a slow transaction of pgdyno's own role:
    client roles may not use `schedule:` keys) makes the dispatcher give up the run after 2 s
    (lock_timeout) and try it again 5 s later, instead of waiting with all its work stopped."""
    add(conn, "held", every="1h")
    conn.execute("UPDATE pgdyno.schedules SET next_run_at = now() - interval '1 s'")
    due = schedule(conn, "held").next_run_at
    runner = ScheduleRunner(FakeClock())
    with psycopg.connect(database_url) as holder:  # a transaction left open
        holder.execute(
            "INSERT INTO pgdyno.jobs (queue, task, unique_key) VALUES ('ticks', 't', %s)",
            (run_key("held", due),),
        )
        turn = threading.Thread(target=runner.run_due, args=(conn,), daemon=True)
        turn.start()
        turn.join(15)
        assert not turn.is_alive(), "the dispatcher's turn waited on the holder's lock"
        assert schedule(conn, "held").next_run_at == due  # not claimed: rolled back
        assert runner.wake_at is not None and runner.wake_at - FakeClock().now() <= 5.0
        holder.rollback()
    runner.run_due(conn)
    [(_, key)] = jobs_of(conn, "held")
    assert key == run_key("held", due)


def test_runs_missed_while_no_dispatcher_ran_are_enqueued_once(conn):
    add(conn, "minutely", every="1m")
    conn.execute("UPDATE pgdyno.schedules SET next_run_at = now() - interval '10 min'")
    runner = ScheduleRunner(FakeClock())
    runner.start(conn)  # a dispatcher starting to lead
    now = db_now(conn)
    [(_, key)] = jobs_of(conn, "minutely")
    latest = Timing.of(None, "1m", "UTC").latest_at_or_before(now)
    assert key == run_key("minutely", latest)  # the latest missed time, not ten of them
    assert schedule(conn, "minutely").next_run_at == latest + timedelta(minutes=1)
    runner.run_due(conn)
    assert len(jobs_of(conn, "minutely")) == 1


def test_paused_schedules_do_not_run_and_resume_without_making_up(conn):
    add(conn, "paused", every="1m")
    store.set_paused(conn, "paused", True)
    conn.execute("UPDATE pgdyno.schedules SET next_run_at = now() - interval '5 min'")
    runner = ScheduleRunner(FakeClock())
    runner.run_due(conn)
    assert jobs_of(conn, "paused") == [] and runner.wake_at is None
    store.set_paused(conn, "paused", False)
    assert schedule(conn, "paused").next_run_at is None  # starts afresh
    runner.run_due(conn)
    assert jobs_of(conn, "paused") == []
    assert schedule(conn, "paused").next_run_at > db_now(conn)


def test_a_bad_row_written_by_sql_is_reported_and_does_not_stop_the_others(conn):
    conn.execute(
        "INSERT INTO pgdyno.schedules (name, task, cron, timezone) VALUES"
        " ('bad-cron', 't', '61 * * * *', 'UTC'), ('bad-zone', 't', '0 3 * * *', 'Nowhere/City'),"
        " ('good', 't', '0 3 * * *', 'Europe/London')"
    )
    runner = ScheduleRunner(FakeClock())
    runner.run_due(conn)
    runner.run_due(conn)
    assert "is not valid" in schedule(conn, "bad-cron").last_error
    assert "unknown time zone 'Nowhere/City'" in schedule(conn, "bad-zone").last_error
    good = schedule(conn, "good")
    assert good.last_error is None
    assert good.next_run_at == Timing("0 3 * * *", None, LONDON).next_after(db_now(conn))
    with pytest.raises(psycopg.errors.CheckViolation, match="schedule_needs_either_cron_or_every"):
        conn.execute("INSERT INTO pgdyno.schedules (name, task) VALUES ('none', 't')")


def test_python_declarations_are_kept_in_step_and_leave_other_rows_alone(conn):
    add(conn, "taken", every="1h")  # a CLI schedule
    nightly = Timing("0 3 * * *", None, LONDON)
    declared = [
        Declared("nightly", "report", "reports", {"name": "revenue"}, nightly),
        Declared("taken", "report", "reports", {}, nightly),
        Declared("gone-soon", "t", "q", {}, Timing.of(None, "1h", "UTC")),
    ]
    ScheduleRunner(FakeClock(), lambda: declared, prune=True).start(conn)
    rows = {s.name: s for s in store.all_schedules(conn)}
    assert (rows["nightly"].source, rows["nightly"].task, rows["nightly"].args) == (
        "python",
        "report",
        {"name": "revenue"},
    )
    assert rows["taken"].source == "cli" and rows["taken"].every == timedelta(hours=1)
    store.set_paused(conn, "nightly", True)
    ScheduleRunner(FakeClock(), lambda: declared[:2], prune=True).start(conn)
    rows = {s.name: s for s in store.all_schedules(conn)}
    assert set(rows) == {"nightly", "taken"} and rows["nightly"].paused  # pausing survives
    ScheduleRunner(FakeClock()).start(conn)  # a dispatcher without --import removes nothing
    assert {s.name for s in store.all_schedules(conn)} == {"nightly", "taken"}


def test_schedule_commands(cli, conn):
    added = cli(
        "schedule",
        "add",
        "nightly",
        "--task",
        "report",
        "--queue",
        "reports",
        "--cron",
        "0 3 * * *",
        "--timezone",
        LONDON,
        "--args",
        '{"name": "revenue"}',
    )
    assert added.exit_code == 0, added.output
    assert added.stdout.startswith(
        "schedule nightly added: cron 0 3 * * * (Europe/London), first run at "
    )
    assert cli("schedule", "add", "tick", "--task", "t", "--every", "2s").exit_code == 0
    again = cli("schedule", "add", "tick", "--task", "t", "--every", "2s")
    assert again.exit_code == 1 and "exists already" in again.output
    both = cli("schedule", "add", "x", "--task", "t", "--every", "2s", "--cron", "* * * * *")
    assert both.exit_code == 2 and "either --cron" in both.output
    bad = cli("schedule", "add", "x", "--task", "t", "--cron", "0 3 * *")
    assert bad.exit_code == 2 and "is not valid" in bad.output

    listed = cli("schedule", "list").stdout
    assert "schedule nightly: report on reports, 0 3 * * * Europe/London; next " in listed
    assert "schedule tick: t on default, every 2s; next " in listed
    assert cli("schedule", "pause", "tick").stdout == "schedule tick paused\n"
    assert "schedule tick: t on default, every 2s; next paused" in cli("status").stdout
    assert cli("schedule", "resume", "tick").stdout == "schedule tick resumed\n"
    assert cli("schedule", "remove", "tick").stdout == "schedule tick removed\n"
    # A long period reads in the unit it was given (the longest the schedules table takes;
    # one day more is refused before it reaches the table).
    yearly = cli("schedule", "add", "century", "--task", "t", "--every", "36000d")
    assert yearly.stdout.startswith("schedule century added: every 36000d, first run at ")
    assert "schedule century: t on default, every 36000d; next " in cli("schedule", "list").stdout
    longer = cli("schedule", "add", "longer", "--task", "t", "--every", "36001d")
    assert longer.exit_code == 2 and "too long: at most 100 years" in longer.output
    assert cli("schedule", "remove", "century").exit_code == 0
    missing = cli("schedule", "remove", "tick")
    assert missing.exit_code == 1 and "no schedule named 'tick'" in missing.output
    [shown] = json.loads(cli("status", "--json").stdout)["schedules"]
    assert shown["name"] == "nightly" and shown["next_run_at"] is not None


# --- real dispatchers --------------------------------------------------------------------------


def scheduled_times(conn, name: str) -> list[datetime]:
    prefix = f"schedule:{name}:"
    return [datetime.fromisoformat(key.removeprefix(prefix)) for _, key in jobs_of(conn, name)]


def test_two_dispatchers_enqueue_each_tick_once_and_the_standby_goes_on(cli, conn, dispatcher):
    leader = dispatcher()
    leader.wait_for_output("dispatcher_leading")
    standby = dispatcher()
    standby.wait_for_output("dispatcher_standby")
    assert (
        cli(
            "schedule", "add", "tick", "--task", "noop", "--queue", "ticks", "--every", "2s"
        ).exit_code
        == 0
    )
    added = time.monotonic()
    wait_until(lambda: time.monotonic() - added >= 7, timeout=10, message="7 seconds")
    first = scheduled_times(conn, "tick")
    assert 2 <= len(first) <= 4, first
    assert len(set(first)) == len(first)

    leader.signal(signal.SIGKILL)
    standby.wait_for_output("dispatcher_leading", timeout=10)
    wait_until(
        lambda: len(scheduled_times(conn, "tick")) >= len(first) + 2,
        timeout=15,
        message="two more ticks from the new leader",
    )
    times = scheduled_times(conn, "tick")
    assert len(set(times)) == len(times), times  # no scheduled time twice
    gaps = {(b - a).total_seconds() for a, b in itertools.pairwise(times)}
    assert gaps <= {2.0, 4.0}, times  # no gap of more than one tick
    assert "schedule_enqueued" in standby.output()


def test_a_nightly_schedule_spins_winston_up_from_zero_and_back(start_platform, conn, effects):
    platform = start_platform(
        "julia: {pgdyno} dispatcher --scale reports=winston,linger=0 --import scheduled_tasks\n"
        "winston: {pgdyno} worker --queue reports --import sample_tasks\n",
        PGDYNO_RECONCILE_INTERVAL="1h",  # no safety net: the schedule's own timer must act
    )
    wait_until(
        lambda: (
            conn.execute(
                "SELECT next_run_at FROM pgdyno.schedules WHERE name = 'nightly-report'"
            ).fetchone()
            not in (None, (None,))
        ),
        message="the dispatcher to sync and plan the @periodic schedule",
    )
    nightly = Timing("0 3 * * *", None, LONDON)
    planned = schedule(conn, "nightly-report")
    assert planned.source == "python" and planned.task == "record"
    assert planned.next_run_at == nightly.next_after(db_now(conn))
    assert platform.quantity("winston") == 0

    # It is 02:59:58 in London: the run is two seconds away.
    soon = conn.execute(
        "UPDATE pgdyno.schedules SET next_run_at = now() + interval '2 s'"
        " WHERE name = 'nightly-report' RETURNING next_run_at"
    ).fetchone()[0]
    wait_until(lambda: platform.alive("winston"), timeout=20, message="winston to start")
    wait_until(lambda: effects_of(conn, "nightly", "done"), timeout=30, message="the run")
    wait_until(
        lambda: platform.quantity("winston") == 0 and not platform.alive("winston"),
        timeout=30,
        message="winston back to zero",
    )
    [(job_id, key)] = jobs_of(conn, "nightly-report")
    assert key == run_key("nightly-report", soon)
    created = job_row(conn, job_id)["created_at"]
    assert timedelta(0) <= created - soon < timedelta(seconds=2)  # on time
    after = schedule(conn, "nightly-report")
    assert (after.last_run_at, after.last_job_id) == (soon, job_id)
    assert after.next_run_at == nightly.next_after(soon)
    assert platform.scale_patches("winston") == [1, 0]
