"""What a job may store (worker/storable.py), outcomes that cannot be stored as they are, thread
timeouts, task options, sizes and the LISTEN probe (issue 11). No database."""

from __future__ import annotations

import math
import threading
import time

import pytest
from helpers import wait_until

import pgdyno
from pgdyno import tasks
from pgdyno.config import Settings, parse_size
from pgdyno.errors import ConfigError
from pgdyno.queue import ClaimedJob
from pgdyno.worker import cancels, executor
from pgdyno.worker.abandoned import AbandonedThreads
from pgdyno.worker.health import ListenProbe
from pgdyno.worker.storable import (
    MAX_RESULT_BYTES,
    exception_text,
    storable_json,
    storable_text,
)

release = threading.Event()


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no")


class BrokenMessage(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no message")


@pgdyno.task("unit.raises")
def raises(kind: str) -> None:
    if kind == "nul":
        raise ValueError("a\x00b")
    if kind == "surrogate":
        raise ValueError("x\udc80y")
    raise BrokenMessage()


@pgdyno.task("unit.value")
def value(kind: str) -> object:
    return {
        "tuple_keys": {(1, 2): "pair"},
        "unprintable": {"x": Unprintable()},
        "surrogate": ["\ud800"],
        "huge": "y" * (3 << 20),
    }[kind]


@pgdyno.task("unit.waits")
def waits(seconds: float) -> str:
    release.wait(seconds)
    return "finished"


def job(task: str, args: dict, attempts: int = 1) -> ClaimedJob:
    return ClaimedJob(7, "q", task, args, attempts, 5)


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (math.nan, "Out of range float values are not JSON compliant"),
        ({(1, 2): 1}, "keys must be str, int, float, bool or None, not tuple"),
        ({"a": Unprintable()}, "as JSON: RuntimeError: no; give JSON-compatible data"),
        ("nul\x00", "it contains a NUL character"),
        ({"k": "\udfff"}, "it contains a lone surrogate (U+DFFF)"),
        ("x" * (2 << 20), "it is 2.0 MiB of JSON, over the 1.0 MiB limit of a job's result"),
        ("x" * (20 << 20), "it is over 20.0 MiB of JSON, over the 1.0 MiB limit"),
        ([["x" * 1000] * 1000] * 100, "it is over 16.0 MiB of JSON"),  # counted, then given up
    ],
)
def test_values_a_jsonb_column_refuses_raise_value_error_saying_why(value, why):
    with pytest.raises(ValueError, match="the result cannot be stored") as refused:
        storable_json(value)
    assert why in str(refused.value)


def test_storable_values_come_back_as_compact_utf8_json():
    assert storable_json({"å": [1, 2.5, None, True]}) == '{"å": [1, 2.5, null, true]}'
    assert storable_json("\\u0000") == '"\\\\u0000"'  # an escaped backslash, not a NUL
    assert len(storable_json("x" * (MAX_RESULT_BYTES - 2))) == MAX_RESULT_BYTES


def test_text_is_made_storable_and_exceptions_describable_whatever_they_hold():
    assert storable_text("a\x00b\ud800c") == "a\\x00b\\ud800c"
    assert storable_text("a\x00b", 3) == "a\\x"
    assert exception_text(BrokenMessage()) == (
        "BrokenMessage: <str() of the exception raised RuntimeError>"
    )


@pytest.mark.parametrize(
    ("kind", "kept"),
    [
        ("nul", "ValueError: a\\x00b"),
        ("surrogate", "ValueError: x\\udc80y"),
        ("broken", "BrokenMessage: <str() of the exception raised RuntimeError>"),
    ],
)
def test_an_error_that_cannot_be_stored_is_kept_escaped_and_keeps_its_retry(kind, kept):
    outcome = executor.run(job("unit.raises", {"kind": kind}))
    assert outcome.error.startswith("UnstorableResult: ")
    assert kept in outcome.error
    assert outcome.retryable
    assert storable_text(outcome.error) == outcome.error


@pytest.mark.parametrize("kind", ["tuple_keys", "unprintable", "surrogate", "huge"])
def test_a_result_that_cannot_be_stored_fails_the_job_without_retry(kind):
    outcome = executor.run(job("unit.value", {"kind": kind}))
    assert outcome.error.startswith("UnstorableResult: task 'unit.value' returned a value")
    assert (outcome.result, outcome.retryable) == (None, False)


#: What unit.cancellable saw: whether current_job().cancel_requested was set when it returned.
seen: list[bool] = []


@pgdyno.task("unit.cancellable")
def cancellable() -> None:
    """Waits until asked to stop through on_cancel (as the report runner does), at most 30 s."""
    asked = threading.Event()
    pgdyno.current_job().on_cancel(asked.set)
    asked.wait(30)
    seen.append(pgdyno.current_job().cancel_requested)


def _abandoning(threads: AbandonedThreads, claimed: ClaimedJob, timeout: float):
    """threads.run(claimed, timeout) on an executor thread of its own: (thread, posted)."""
    posted: list[executor.Outcome] = []

    def target() -> None:
        executor.bind_thread("w", "postgresql://unit", lambda *_: None)
        threads.run(claimed, timeout, posted.append)

    runner = threading.Thread(target=target, daemon=True)
    runner.start()
    return runner, posted


def test_thread_timeout_posts_job_timeout_at_once_and_holds_the_slot_until_the_task_returns():
    release.clear()
    threads = AbandonedThreads(concurrency=1)
    started = time.monotonic()
    runner, posted = _abandoning(threads, job("unit.waits", {"seconds": 30}, attempts=2), 0.2)
    wait_until(lambda: posted, timeout=5, message="the JobTimeout outcome")
    assert time.monotonic() - started < 5
    assert posted[0].error == (
        "JobTimeout: task 'unit.waits' ran longer than its timeout of 0.2 s in attempt 2; it "
        "was abandoned (a thread cannot be stopped: the task was asked to stop, and its slot "
        "stays taken until it returns; use --pool process to stop such tasks)"
    )
    assert posted[0].retryable
    assert threads.count == 1 and runner.is_alive()  # the task still runs: its slot is taken
    release.set()
    runner.join(5)
    assert threads.count == 0 and len(posted) == 1  # returned; its late outcome is dropped
    runner, posted = _abandoning(threads, job("unit.waits", {"seconds": 0}), 5)
    runner.join(5)
    assert [outcome.result for outcome in posted] == ['"finished"'] and threads.count == 0


def test_thread_timeout_asks_the_task_to_stop_through_on_cancel_and_cancel_requested():
    seen.clear()
    threads = AbandonedThreads(concurrency=1)
    runner, posted = _abandoning(threads, job("unit.cancellable", {}), 0.2)
    runner.join(10)  # returns once the task has: it was asked to stop at its timeout
    assert not runner.is_alive() and threads.count == 0
    assert posted[0].error.startswith("JobTimeout: task 'unit.cancellable'")
    assert seen == [True]
    assert not cancels.is_requested("w", 7, 1)  # the flag goes with the attempt's thread


def test_task_options_are_kept_and_checked():
    @pgdyno.task("unit.with_options", timeout=2.5, pool="process")
    def with_options() -> None: ...

    assert tasks.options("unit.with_options") == (2.5, "process")
    assert tasks.options("unit.no_such_task") == (None, None)
    for bad in (0, -1, math.inf, 86401, "5s", True):
        with pytest.raises(ConfigError, match="task timeout must be seconds"):
            pgdyno.task("unit.bad_timeout", timeout=bad)
    with pytest.raises(ConfigError, match="task pool must be 'thread' or 'process'"):
        pgdyno.task("unit.bad_pool", pool="fork")  # type: ignore[arg-type]


def test_sizes_are_binary_and_the_pool_is_checked():
    assert parse_size("512MB") == parse_size("512mib") == 512 << 20
    assert parse_size("2GB") == parse_size("2g") == 2 << 30
    for bad in ("lots", "-5MB", "1e3MB", "10KB", "2TB"):
        with pytest.raises(ConfigError):
            parse_size(bad, "--max-job-memory")
    settings = Settings.from_env({"PGDYNO_POOL": "process", "PGDYNO_MAX_JOB_MEMORY": "1.5GB"})
    assert (settings.pool, settings.max_job_memory) == ("process", 3 << 29)
    with pytest.raises(ConfigError, match="pool must be 'thread' or 'process', got 'fork'"):
        Settings.from_env({"PGDYNO_POOL": "fork"})


def test_listen_probe_goes_out_comes_back_and_gives_up_after_its_timeout():
    probe = ListenProbe(now=100.0, interval=10.0, timeout=10.0)
    assert probe.channel.startswith("pgdyno_probe_")
    assert (probe.due(105.0), probe.wake_in(105.0)) == (None, 5.0)
    token = probe.due(110.0)
    assert token is not None and probe.due(111.0) is None  # one probe out at a time
    assert probe.wake_in(111.0) == 9.0
    probe.arrived("a stranger's payload", 112.0)
    assert probe.silent_for(119.0) is None
    probe.arrived(token, 112.0)
    assert probe.silent_for(125.0) is None and probe.wake_in(112.0) == 10.0
    token = probe.due(122.0)
    assert probe.silent_for(131.0) is None
    assert probe.silent_for(133.0) == 11.0  # dead


def test_a_job_process_that_sent_its_outcome_before_it_was_stopped_keeps_it():
    from types import SimpleNamespace

    from pgdyno.worker import pool

    children = pool.ChildProcesses(
        worker="w", database_url="postgresql://unused", memory_limit=None, progress=print
    )
    running = pool._Child(SimpleNamespace(pid=None, exitcode=-9))  # type: ignore[arg-type]
    running.kill("JobStopped: the worker handed the job back", True, handed_back=True)
    claimed = job("unit.value", {})
    sent = ("outcome", '"finished"', None, False, 1.5, 5 << 20)
    kept = children._outcome(claimed, running, sent, 7 << 20, 2.0)
    assert (kept.result, kept.error, kept.handed_back, kept.peak_rss_bytes) == (
        '"finished"',
        None,
        False,
        7 << 20,
    )
    stopped = children._outcome(claimed, running, None, None, 2.0)
    assert (stopped.error, stopped.handed_back) == (
        "JobStopped: the worker handed the job back",
        True,
    )
    crashed = children._outcome(claimed, pool._Child(running.process), None, None, 2.0)
    assert crashed.error.startswith("JobCrashed: the process running task 'unit.value'")
    assert "died of signal SIGKILL" in crashed.error
