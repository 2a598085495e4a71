"""The worker loop and jobs abandoned at their timeout (thread pool): a thread still running
one keeps its slot of --concurrency, so the loop claims only when it returns
(worker/abandoned.py)."""

from __future__ import annotations

import logging
import threading

from helpers import wait_until
from loop_harness import gates, open_gate

import pgdyno


@pgdyno.task("unit.stuck", timeout=1)
def stuck(key: str) -> str:
    """Ignores its 1 s timeout: runs until the test opens its gate."""
    gates.setdefault(key, threading.Event()).wait(30)
    return key


def test_abandoned_threads_keep_their_slots_until_they_return(loop, caplog):
    caplog.set_level(logging.INFO, "pgdyno")
    worker = loop(concurrency=2)
    first, second, third = (worker.jobs.insert("unit.stuck", {"key": k}) for k in "abc")
    worker.turn()  # claims two
    worker.finished(2)  # both time out after 1 s
    worker.turn()
    fails = worker.jobs.called("fail")
    assert sorted(call["job_id"] for call in fails) == [first, second]
    assert all(call["error"].startswith("JobTimeout: task 'unit.stuck'") for call in fails)
    # Both threads still run: no slot is free, nothing is claimed.
    assert [c["limit"] for c in worker.jobs.called("complete_and_claim")] == [2]
    assert worker.jobs.jobs[third].status == "ready"
    assert worker.worker._pool.abandoned == 2
    abandoned = [r.logfmt["abandoned"] for r in caplog.records if r.msg == "job_abandoned"]
    assert len(abandoned) == 2 and max(abandoned) == 2
    open_gate("a")
    wait_until(lambda: worker.worker._pool.abandoned == 1, timeout=5, message="a returned")
    worker.turn()
    assert [c["limit"] for c in worker.jobs.called("complete_and_claim")] == [2, 1]
    assert worker.jobs.jobs[third].status == "running"
    open_gate("b")
    open_gate("c")
