"""Tasks of the job-timeout tests (--import timeout_tasks, tests/ on the path).

With TEST_FORKSERVER_IMPORT_S set, this module takes that many seconds to import in the
process pool's fork server, as a big app's modules would on a cold dyno. Only the fork server
pays (it imports pgdyno.worker.forkserver_init first, and nothing else does): the worker itself
starts at once, and the job processes forked from the server find the module imported.
"""

from __future__ import annotations

import os
import sys
import time

from sample_tasks import _record

import pgdyno

if "pgdyno.worker.forkserver_init" in sys.modules:
    time.sleep(float(os.environ.get("TEST_FORKSERVER_IMPORT_S", "0")))


@pgdyno.task("timeout.hello")
def hello(**_: object) -> str:
    return "hello"


@pgdyno.task("timeout.sleep")
def sleep(key: str, seconds: float) -> str:
    _record("start", key)
    time.sleep(seconds)
    _record("done", key)
    return key


@pgdyno.task("timeout.flood")
def flood(seconds: float, mib: int = 0) -> int:
    """Publish progress without pause for `seconds`, growing by 1 MiB a message up to `mib`."""
    job = pgdyno.current_job()
    deadline = time.monotonic() + seconds
    held: list[bytes] = []
    sent = 0
    while time.monotonic() < deadline:
        sent += 1
        job.set_progress(sent=sent)
        if len(held) < mib:
            held.append(os.urandom(1 << 20))
    return sent
