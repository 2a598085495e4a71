"""The job process (process pool): runs one job's task and sends its outcome to the worker.

`main` is the target of each child process the worker's pool starts (worker/pool.py), forked
from a fork server that imported the task modules once: the process starts clean (no thread,
no connection of the worker), runs exactly one job, and exits, so all its memory goes back to
the operating system. It talks to the worker over one pipe: ("started",) as the task is
called (the job's timeout counts from there, not from the process's start), ("progress",
attempt, json) while the task runs, then ("outcome", result, error, retryable, duration_s,
peak_rss_bytes).

It ignores SIGTERM and SIGINT (the worker decides when a job stops, after its grace period)
and dies with its parent, the fork server, which exits when the worker does: a worker killed
with kill -9 leaves no job running behind it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from typing import TYPE_CHECKING

from pgdyno.logfmt import configure
from pgdyno.queue import ClaimedJob
from pgdyno.worker import executor, memory

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (elsewhere: nothing); exit at
    once if the parent is already gone (this process was handed to init)."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if parent == 1 or os.getppid() != parent:  # the parent died first: run nothing orphaned
        os._exit(1)


def main(job: ClaimedJob, worker: str, database_url: str, pipe: Connection, log_level: str) -> None:
    """Run `job` and send its outcome over `pipe`; the process exits afterwards."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent()
    configure(log_level)

    def progress(job_id: int, attempt: int, fields: str) -> None:
        pipe.send(("progress", attempt, fields))

    executor.bind_thread(worker, database_url, progress)
    pipe.send(("started",))
    outcome = executor.run(job)
    with contextlib.suppress(OSError):  # the worker is gone: nobody to tell
        pipe.send(
            (
                "outcome",
                outcome.result,
                outcome.error,
                outcome.retryable,
                outcome.duration_s,
                memory.own_peak(),
            )
        )
        pipe.close()
