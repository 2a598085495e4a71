"""Handler-side timestamps for the latency workloads, shared by every system's task module.

A handler calls stamp(key) first thing: one line "key unix-time" appended to the file named by
BENCH_STAMP_FILE. The client records each job's commit time with the same clock (same machine,
time.time()), so latency = stamp - commit. O_APPEND writes of one short line are atomic, so
executor threads and several worker processes may share the file. Standard library only: this
is imported by worker processes whose memory is measured.
"""

from __future__ import annotations

import os
import threading
import time

_lock = threading.Lock()
_fd: int | None = None


def _file() -> int:
    global _fd
    with _lock:
        if _fd is None:
            _fd = os.open(
                os.environ["BENCH_STAMP_FILE"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644
            )
        return _fd


def stamp(key: int | str) -> None:
    """Record that the handler of job `key` started now."""
    now = time.time()
    os.write(_fd if _fd is not None else _file(), f"{key} {now:.6f}\n".encode())


def read(path: str) -> dict[int, float]:
    """{key: handler start time} from a stamp file (the first start wins, for retried jobs)."""
    starts: dict[int, float] = {}
    try:
        with open(path) as handle:
            for line in handle:
                key, _, when = line.partition(" ")
                starts.setdefault(int(key), float(when))
    except FileNotFoundError:
        pass
    return starts
