"""Running one job's function (worker/executor.py): outcomes, error classification,
current_job(). No database."""

from __future__ import annotations

import json
import math

import pytest

import pgdyno
from pgdyno import tasks
from pgdyno.errors import PgdynoError
from pgdyno.queue import ClaimedJob
from pgdyno.worker import executor as execution

progress_seen: list[tuple[int, dict]] = []


@pgdyno.task("unit.add")
def add(a: int, b: int = 0) -> int:
    return a + b


@pgdyno.task("unit.nothing")
def nothing() -> None:
    return None


@pgdyno.task("unit.explode")
def explode(depth: int = 0) -> None:
    if depth:
        _explode_again(depth - 1)
    raise KeyError("missing thing")


def _explode_again(depth: int) -> None:  # alternating frames: Python collapses no repeats
    explode(depth)


@pgdyno.task("unit.internal_type_error")
def internal_type_error() -> None:
    return len(5)  # type: ignore[arg-type]


@pgdyno.task("unit.give_up")
def give_up() -> None:
    raise pgdyno.PermanentJobError("the invoice was deleted")


@pgdyno.task("unit.context")
def context() -> dict:
    job = pgdyno.current_job()
    job.set_progress(step=2, of=3)
    return {
        "id": job.id,
        "attempt": job.attempt,
        "max": job.max_attempts,
        "worker": job.worker,
        "task": job.task,
        "queue": job.queue,
    }


@pgdyno.task("unit.returns")
def returns(value: object = None) -> object:
    return value


@pgdyno.task("unit.bad_progress")
def bad_progress() -> None:
    pgdyno.current_job().set_progress(ratio=math.inf)


@pytest.fixture(autouse=True)
def bound_thread():
    progress_seen.clear()
    execution.bind_thread(
        "winston.1:1:ab",
        "postgresql://unused",
        lambda job_id, attempt, fields: progress_seen.append((job_id, json.loads(fields))),
    )


def job(task: str, args: dict | None = None, attempts: int = 1) -> ClaimedJob:
    return ClaimedJob(7, "q", task, args or {}, attempts, 5)


def test_successful_task_returns_its_value_as_json():
    outcome = execution.run(job("unit.add", {"a": 2, "b": 3}))
    assert (outcome.result, outcome.error) == ("5", None)
    assert outcome.duration_s >= 0


def test_task_returning_none_has_no_result():
    assert execution.run(job("unit.nothing")).result is None


def test_values_json_lacks_are_stored_as_text():
    from datetime import date

    assert execution.run(job("unit.returns", {"value": date(2026, 1, 2)})).result == (
        '"2026-01-02"'
    )


def test_exception_is_retryable_and_keeps_type_message_and_a_trimmed_traceback():
    outcome = execution.run(job("unit.explode", {"depth": 30}))
    assert outcome.retryable
    assert outcome.error.startswith("KeyError: 'missing thing'\nTraceback (innermost last):\n")
    assert outcome.error.count('  File "') == execution.TRACEBACK_FRAMES  # innermost ones
    assert outcome.error.endswith('raise KeyError("missing thing")\n')
    assert " in run\n" not in outcome.error
    assert len(outcome.error) <= execution.MAX_ERROR_CHARS


def test_permanent_job_error_is_not_retryable_and_has_no_traceback():
    outcome = execution.run(job("unit.give_up"))
    assert (outcome.retryable, outcome.error) == (
        False,
        "PermanentJobError: the invoice was deleted",
    )


def test_unknown_task_is_not_retryable_names_the_task_and_logs_what_the_worker_knows(caplog):
    tasks.import_modules(["json"])  # stands for the worker's --import
    with caplog.at_level("WARNING", "pgdyno"):
        outcome = execution.run(job("unit.nope"))
    assert not outcome.retryable
    assert outcome.error.startswith("UnknownTask: unknown task 'unit.nope'")
    assert "--import MODULE" in outcome.error
    # The job's row (readable by clients) lists no tasks nor modules; the worker's log does.
    assert "unit.add" not in outcome.error and "json" not in outcome.error
    [logged] = [r.logfmt for r in caplog.records if r.msg == "unknown_task"]
    assert logged["task"] == "unit.nope"
    assert "json" in logged["imported"].split(",") and "unit.add" in logged["known"].split(",")


@pytest.mark.parametrize(
    ("args", "why"),
    [
        ({}, "missing a required argument: 'a'"),
        ({"a": 1, "c": 2}, "got an unexpected keyword argument 'c'"),
    ],
)
def test_args_the_function_cannot_take_fail_without_retry(args, why):
    outcome = execution.run(job("unit.add", args))
    assert not outcome.retryable
    assert outcome.error == (
        f"InvalidArguments: task 'unit.add' cannot take args {sorted(args)}: {why}"
    )


def test_type_error_raised_inside_the_task_is_an_ordinary_retryable_failure():
    outcome = execution.run(job("unit.internal_type_error"))
    assert outcome.retryable
    assert outcome.error.startswith("TypeError: object of type 'int' has no len()")


@pytest.mark.parametrize("value", [math.nan, {"x": [math.inf]}, "nul\x00byte", {"k\x00": 1}])
def test_result_that_jsonb_cannot_hold_fails_without_retry(value):
    outcome = execution.run(job("unit.returns", {"value": value}))
    assert (outcome.result, outcome.retryable) == (None, False)
    assert outcome.error.startswith("UnstorableResult: task 'unit.returns' returned a value")


def test_a_backslash_u0000_text_is_not_a_nul_character():
    assert execution.run(job("unit.returns", {"value": "\\u0000"})).result == '"\\\\u0000"'


def test_task_reads_its_job_and_publishes_progress_through_current_job():
    outcome = execution.run(job("unit.context", attempts=3))
    assert outcome.error is None
    assert outcome.result == (
        '{"id": 7, "attempt": 3, "max": 5, "worker": "winston.1:1:ab", "task": "unit.context",'
        ' "queue": "q"}'
    )
    assert progress_seen == [(7, {"step": 2, "of": 3})]


def test_progress_jsonb_cannot_hold_is_refused_inside_the_task():
    outcome = execution.run(job("unit.bad_progress"))
    assert outcome.error.startswith("ValueError: the progress cannot be stored as JSON")
    assert progress_seen == []


def test_current_job_outside_a_task_raises():
    import threading

    errors = []
    thread = threading.Thread(target=lambda: errors.append(_current_job_error()))
    thread.start()
    thread.join()
    assert errors == ["current_job() was called outside a running pgdyno task"]


def _current_job_error() -> str | None:
    try:
        pgdyno.current_job()
    except PgdynoError as exc:
        return str(exc)
    return None


def test_the_executor_thread_renders_the_done_line_only_while_info_lines_are_on():
    """The job_done line is rendered where the job ran (the loop thread only adds it to its
    log batch), and only when it would be written; failures carry none."""
    from pgdyno import logfmt

    try:
        logfmt.configure("INFO")
        done = execution.run(job("unit.nothing"))
        assert done.line == execution.done_line(done.job, done.duration_s)
        assert done.line.startswith("at=info event=job_done job=7 task=unit.nothing queue=q ")
        assert execution.run(job("unit.explode")).line is None
        logfmt.configure("WARNING")
        assert execution.run(job("unit.nothing")).line is None
    finally:
        logfmt.configure("INFO")
