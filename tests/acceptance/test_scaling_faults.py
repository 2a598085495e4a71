"""Issue 12's nine scenarios, end to end: real dispatcher and worker processes against the
Heroku contract server (tests/fake_heroku.py) or the local platform. Each failed on the code
before the fix; the direct cases of each are in tests/integration/test_scaler.py and
test_dispatcher_loop.py.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from fake_heroku import FakeHeroku, Scripted
from helpers import (
    PgdynoProcess,
    log_fields,
    wait_for_listeners,
    wait_for_status,
    wait_until,
    worker,
)

pytestmark = pytest.mark.usefixtures("effects")


@pytest.fixture
def heroku() -> Iterator[FakeHeroku]:
    with FakeHeroku(types={"winston": 0, "ellie": 0}) as server:
        yield server


def heroku_env(heroku: FakeHeroku, **extra: str) -> dict[str, str]:
    return {
        "HEROKU_API_URL": heroku.url,
        "HEROKU_APP_NAME": heroku.app,
        "HEROKU_API_KEY": heroku.token,
        **extra,
    }


def dispatcher(database_url: str, heroku: FakeHeroku, *rules: str, **env: str) -> PgdynoProcess:
    args = ["dispatcher"]
    for rule in rules:
        args += ["--scale", rule]
    return PgdynoProcess(args, database_url, **heroku_env(heroku, **env))


def winston_worker(database_url: str, heroku: FakeHeroku, *queues: str, **env: str):
    """A worker of process type winston (as DYNO=winston.1 would make it), scaling through
    the contract server."""
    return worker(
        database_url,
        *(queues or ("reports",)),
        extra=["--process-type", "winston"],
        **heroku_env(heroku, PGDYNO_LOG_LEVEL="DEBUG", **env),
    )


def insert(conn, queue: str = "reports", task: str = "noop", **args) -> int:
    return conn.execute(
        "INSERT INTO pgdyno.jobs (queue, task, args) VALUES (%s, %s, %s) RETURNING id",
        (queue, task, json.dumps(args)),
    ).fetchone()[0]


def leading(conn) -> bool:
    return conn.execute("SELECT count(*) FROM pgdyno.scale_rules").fetchone()[0] > 0


def status_json(database_url: str) -> dict:
    with PgdynoProcess(["status", "--json"], database_url) as status:
        assert status.wait() == 0
        out = status.output()
        return json.loads(out[out.index("{") :])


def scale_events(conn) -> list[tuple]:
    return conn.execute(
        "SELECT from_quantity, to_quantity, extract(epoch FROM at)::float8 FROM pgdyno.scale_events"
        " WHERE process_type = 'winston' ORDER BY id"
    ).fetchall()


# --- scenario 1 -----------------------------------------------------------------------------


def test_1_linger_counts_from_the_last_job_of_the_type_on_any_dyno(start_platform, conn):
    """linger=6, two dynos, a gated job on one: the type must not go to zero until 6 s after
    that job ended. The idle sibling compared its own idle time with the linger: once past it,
    its 5 s re-checks took the type to zero within 5 s of the other dyno's last job."""
    platform = start_platform(
        "julia: {pgdyno} dispatcher --scale reports=winston,max=2,linger=6\n"
        "winston: {pgdyno} worker --queue reports --import sample_tasks\n"
    )
    wait_until(lambda: leading(conn), message="the dispatcher to lead")
    insert(conn, task="record", key="short")
    gated = insert(conn, task="gate", key="long")
    wait_until(lambda: len(platform.alive("winston")) == 2, timeout=30, message="2 dynos")
    wait_for_status(conn, gated, "running", timeout=30)
    wait_for_listeners(conn, 2, timeout=30)
    both_up = time.monotonic()
    # The linger is time: let the idle sibling pass it (and make its first check) first.
    wait_until(lambda: time.monotonic() > both_up + 6.5, timeout=10, message="the linger")
    conn.execute("INSERT INTO test_effects (kind, job_key, pid) VALUES ('open', 'long', 0)")
    finished = wait_for_status(conn, gated, "done")["finished_at"].timestamp()
    wait_until(
        lambda: any(to == 0 for _, to, _ in scale_events(conn)),
        timeout=30,
        message="winston to scale to zero",
    )
    scaled_down = next(at for _, to, at in scale_events(conn) if to == 0)
    assert scaled_down - finished >= 5.9, f"to zero {scaled_down - finished:.1f}s after the job"


# --- scenarios 2 and 3 ----------------------------------------------------------------------


def _retry_after_forms() -> list[str]:
    return ["60", "http-date"]


@pytest.mark.parametrize("form", _retry_after_forms())
def test_2_3_retry_after_holds_every_process_calls_for_the_type(database_url, heroku, conn, form):
    """Every call answered 429 with Retry-After 60 (seconds, or the same as an HTTP-date):
    the dispatcher's ticks and the worker's re-checks made 17 requests in 40 s; the date
    form was retried after 0.5 s. Now: one request, then none before the time."""
    until = datetime.now(UTC) + timedelta(seconds=60)
    value = "60" if form == "60" else format_datetime(until, usegmt=True)
    heroku.always = Scripted(429, {"Retry-After": value}, "Your account reached the API limit.")
    with (
        dispatcher(
            database_url,
            heroku,
            "reports=winston,linger=0",
            PGDYNO_RECONCILE_INTERVAL="0.2s",
            PGDYNO_LOG_LEVEL="DEBUG",
        ) as julia,
        winston_worker(database_url, heroku) as winston,
    ):
        wait_until(lambda: leading(conn), message="the dispatcher to lead")
        insert(conn)
        wait_until(lambda: heroku.requests, message="the first API call")
        ticks = julia.output().count("trigger=timer")
        wait_until(
            lambda: (
                julia.output().count("trigger=timer") >= ticks + 10
                and "wait=retry_after" in winston.output()
            ),
            timeout=20,
            message="ten dispatcher ticks and a worker re-check after the 429",
        )
        assert len(heroku.requests) == 1, [(r.method, r.path) for r in heroku.requests]
        # Made by the dispatcher or by the idle worker, whichever decided first.
        (held,) = log_fields(julia.output() + winston.output(), "formation_api")
        assert 55 <= float(held["retry_after_s"]) <= 60
        scaling = status_json(database_url)["scaling"]["winston"]
        assert scaling["not_before_cause"] == "retry_after"
        not_before = datetime.fromisoformat(scaling["not_before"])
        assert abs((not_before - until).total_seconds()) < 5


# --- scenario 4 -----------------------------------------------------------------------------


def test_4_after_an_unanswered_scale_down_the_next_job_still_gets_a_dyno(
    database_url, heroku, conn
):
    """The worker's PATCH to 0 was applied but answered 503 (five times): the recorded
    quantity stayed 1, and the next job's scale-up was skipped as a no-op."""
    heroku.formations["winston"]["quantity"] = 1
    heroku.fail_next(*[Scripted(503, applied=True, method="PATCH")] * 5)
    with dispatcher(
        database_url, heroku, "reports=winston,linger=0", PGDYNO_RECONCILE_INTERVAL="1h"
    ) as julia:
        julia.wait_for_output("dispatcher_leading")
        conn.execute(
            "UPDATE pgdyno.formations SET quantity = 1, known_at = now()"
            " WHERE process_type = 'winston'"
        )
        with winston_worker(database_url, heroku):
            # Its decision recorded (committed with its failed scale event), then it goes.
            wait_until(
                lambda: (
                    heroku.formations["winston"]["quantity"] == 0
                    and conn.execute(
                        "SELECT count(*) FROM pgdyno.scale_events WHERE to_quantity = 0"
                    ).fetchone()[0]
                ),
                timeout=20,
                message="the worker's scale-down, applied, answered 503, recorded",
            )
        job = insert(conn, task="noop")
        wait_until(
            lambda: heroku.formations["winston"]["quantity"] == 1,
            timeout=10,
            message=f"job {job} to get a dyno",
        )


# --- scenario 5 -----------------------------------------------------------------------------


def test_5_a_slow_call_for_one_type_never_delays_another_type(database_url, heroku, conn):
    """While a worker's scale-down of winston retried a 429 (Retry-After 9), a job for
    ellie waited for winston's row lock: 35 s."""
    heroku.formations["winston"]["quantity"] = 1
    heroku.fail_next(Scripted(429, {"Retry-After": "9"}, "Slow down.", method="PATCH"))
    with dispatcher(database_url, heroku, "reports=winston,linger=0", "mail=ellie") as julia:
        julia.wait_for_output("dispatcher_leading")
        conn.execute(
            "UPDATE pgdyno.formations SET quantity = 1, known_at = now()"
            " WHERE process_type = 'winston'"
        )
        with winston_worker(database_url, heroku):
            wait_until(
                lambda: heroku.calls("PATCH", "winston"),
                timeout=20,
                message="the worker's scale-down to be answered 429",
            )
            insert(conn, queue="mail")
            wait_until(
                lambda: heroku.calls("PATCH", "ellie"),
                timeout=3,
                message="ellie's scale-up, not held behind winston's",
            )


# --- scenario 6 -----------------------------------------------------------------------------


def test_6_a_rule_queue_no_worker_of_the_type_serves_is_reported(
    start_platform, conn, database_url
):
    """Rule mail=winston, winston's worker runs only --queue reports, one mail job: winston
    stayed at 1 for good, with no warning anywhere."""
    platform = start_platform(
        "julia: {pgdyno} dispatcher --scale reports=winston --scale mail=winston\n"
        "winston: {pgdyno} worker --queue reports --import sample_tasks\n",
        PGDYNO_RECONCILE_INTERVAL="0.3s",
    )
    wait_until(lambda: leading(conn), message="the dispatcher to lead")
    insert(conn, queue="mail")
    wait_until(lambda: platform.alive("winston"), timeout=30, message="winston to start")
    wait_until(
        lambda: "rule_queues_unserved" in platform.output(),
        timeout=20,
        message="the dispatcher's warning",
    )
    warning = log_fields(platform.output(), "rule_queues_unserved")[0]
    assert (warning["type"], warning["queues"], warning["served"]) == ("winston", "mail", "reports")
    scaling = status_json(database_url)["scaling"]["winston"]
    assert scaling["unserved_queues"] == ["mail"] and scaling["workers"] == 1
    with PgdynoProcess(["status"], database_url) as text:
        assert text.wait() == 0
        assert "WARNING: no winston worker serves mail" in text.output()


# --- scenario 7 -----------------------------------------------------------------------------


def test_7_no_scale_down_under_a_running_job_of_another_queue_the_workers_serve(
    start_platform, conn
):
    """Workers run --queue reports --queue other, the rule names only reports, max=2: the
    idle sibling scaled the type 2->0 under a running `other` job, which was handed back and
    stranded `ready` at quantity 0."""
    platform = start_platform(
        "julia: {pgdyno} dispatcher --scale reports=winston,max=2,linger=0\n"
        "winston: {pgdyno} worker --queue reports --queue other --import sample_tasks\n",
        PGDYNO_LOG_LEVEL="DEBUG",
    )
    wait_until(lambda: leading(conn), message="the dispatcher to lead")
    reports = [insert(conn, task="record", key=f"r{i}", sleep=1.0) for i in range(2)]
    wait_until(lambda: len(platform.alive("winston")) == 2, timeout=30, message="2 dynos")
    for job in reports:
        wait_for_status(conn, job, "running", timeout=30)
    other = insert(conn, queue="other", task="gate", key="other")
    wait_for_status(conn, other, "running", timeout=30)
    for job in reports:
        wait_for_status(conn, job, "done")
    # The sibling is idle (linger 0): it decides at once, and must decline.
    wait_until(
        lambda: "busy: other" in platform.output() or platform.quantity("winston") < 2,
        timeout=20,
        message="the idle sibling's scale-down decision",
    )
    assert platform.quantity("winston") == 2
    assert wait_for_status(conn, other, "running")["status"] == "running"
    conn.execute("INSERT INTO test_effects (kind, job_key, pid) VALUES ('open', 'other', 0)")
    wait_for_status(conn, other, "done")
    wait_until(
        lambda: platform.quantity("winston") == 0, timeout=30, message="winston to go to zero"
    )


# --- scenario 8 -----------------------------------------------------------------------------


def test_8_a_job_handed_back_on_sigterm_shows_its_hand_backs(database_url, conn):
    """A job longer than the platform's restart period was handed back on every SIGTERM
    without a trace; `jobs show` now tells how many times (the counting itself is in
    tests/integration/test_handbacks.py)."""
    job = insert(conn, task="gate", key="long")
    for round_ in (1, 2):
        with worker(database_url, "reports", extra=["--grace", "0.2s"]) as proc:
            wait_until(
                lambda n=round_: (
                    conn.execute(
                        "SELECT count(*) FROM test_effects WHERE kind = 'start'"
                    ).fetchone()[0]
                    >= n
                ),
                message="the job to start",
            )
            proc.signal(signal.SIGTERM)
            assert proc.wait() == 0
    row = wait_for_status(conn, job, "ready")
    assert (row["handbacks"], row["attempts"]) == (2, 0)
    with PgdynoProcess(["jobs", "show", str(job)], database_url) as show:
        assert show.wait() == 0
        assert "handbacks:        2" in show.output()


# --- scenario 9 -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "message"),
    [
        ("1X", "Heroku renamed it: write Standard-1X"),
        ("bogus-size", "is not a Heroku dyno size; use Eco, Basic, Standard-1X"),
    ],
)
def test_9_sizes_heroku_refuses_stop_the_dispatcher_at_start(database_url, size, message):
    with PgdynoProcess(
        ["dispatcher", "--scale", f"reports=winston,size={size}"], database_url
    ) as proc:
        assert proc.wait() == 2
        assert message in proc.output()


def test_9_a_standing_refusal_backs_off_and_shows_instead_of_a_row_every_tick(
    database_url, heroku, conn
):
    """A persistent 401 wrote a scale_events row (and made a call) every 5 s, forever."""
    with dispatcher(
        database_url,
        heroku,
        "reports=winston",
        HEROKU_API_KEY="wrong-token",
        PGDYNO_RECONCILE_INTERVAL="0.2s",
        PGDYNO_LOG_LEVEL="DEBUG",
    ) as julia:
        julia.wait_for_output("dispatcher_leading")
        insert(conn)
        julia.wait_for_output("401 unauthorized")
        ticks = julia.output().count("trigger=timer")
        wait_until(
            lambda: julia.output().count("trigger=timer") >= ticks + 10,
            message="ten more ticks",
        )
        assert len(heroku.requests) == 1
        assert conn.execute("SELECT count(*) FROM pgdyno.scale_events").fetchone()[0] <= 1
        scaling = status_json(database_url)["scaling"]["winston"]
        assert "401 unauthorized" in scaling["last_error"] and scaling["failures"] == 1
        assert scaling["not_before_cause"] == "backoff"
