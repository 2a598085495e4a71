"""The memory guard's measurements: a process's resident memory, and the dyno's memory.

Linux only (/proc, cgroups), as Heroku is; elsewhere the guard measures nothing and stops
nothing. A job process's RSS is read from /proc/PID/status: VmRSS (now) and VmHWM (its peak,
which the kernel keeps, so a spike between two samples still shows in the peak).

The default limit of one job is a share of the dyno's memory: 80% of the container's memory
limit (cgroup v2 memory.max, or v1 memory.limit_in_bytes; on Heroku, the dyno size), else of
the machine's, divided by the worker's concurrency. The rest is for the worker itself.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

#: The share of the dyno's memory the jobs of one worker may use together.
DEFAULT_SHARE = 0.8

_CGROUP_LIMITS = (
    Path("/sys/fs/cgroup/memory.max"),  # cgroup v2
    Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),  # cgroup v1
)


class Usage(NamedTuple):
    """A process's resident memory now and at its peak, in bytes."""

    rss: int
    peak: int


def usage(pid: int) -> Usage | None:
    """The resident memory of process `pid` (None: gone, or no /proc)."""
    fields: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key, value = line.split(":", 1)
                    fields[key] = int(value.split()[0]) * 1024
    except (OSError, ValueError):
        return None
    if "VmRSS" not in fields:  # a zombie has no memory left to measure
        return None
    return Usage(fields["VmRSS"], max(fields.get("VmHWM", 0), fields["VmRSS"]))


def own_peak() -> int | None:
    """This process's peak resident memory, in bytes (None where /proc is missing)."""
    measured = usage(os.getpid())
    return None if measured is None else measured.peak


def dyno_memory() -> int | None:
    """The memory this container may use: its cgroup limit, else the machine's RAM."""
    for path in _CGROUP_LIMITS:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2**60:  # "max" or a huge number: no limit
            return int(text)
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (OSError, ValueError):
        return None


def default_job_limit(concurrency: int) -> int | None:
    """The default memory limit of one job: DEFAULT_SHARE of the dyno's memory over the
    concurrency (None when the memory cannot be read)."""
    total = dyno_memory()
    return None if total is None else int(total * DEFAULT_SHARE / max(concurrency, 1))


def mib(size: int | None) -> str:
    """Bytes as MiB for messages: 536870912 -> '512.0 MiB'."""
    return "unknown" if size is None else f"{size / 2**20:.1f} MiB"
