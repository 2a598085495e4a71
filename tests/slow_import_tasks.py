"""Tasks whose module takes 3 s to import in the process pool's fork server, as a big app's
would on a cold dyno (--import slow_import_tasks, tests/ on the path).

Only the fork server pays (it imports pgdyno.worker.forkserver_init first, and nothing else
does): the worker itself starts at once, and the job processes forked from the server find the
module imported.
"""

from __future__ import annotations

import sys
import time

from sample_tasks import _record

import pgdyno

#: Seconds the fork server spends importing this module.
IMPORT_SECONDS = 3.0

if "pgdyno.worker.forkserver_init" in sys.modules:
    time.sleep(IMPORT_SECONDS)


@pgdyno.task("slow_import.hello")
def hello() -> str:
    return "hello"


@pgdyno.task("slow_import.sleep")
def sleep(seconds: float) -> str:
    _record("start", "slow_import.sleep")
    time.sleep(seconds)
    _record("done", "slow_import.sleep")
    return "slept"
