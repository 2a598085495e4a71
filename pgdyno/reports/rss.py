"""The worker's peak memory (RSS) while one report runs, so users see which reports need a
bigger dyno.

Linux keeps the process's peak resident set in /proc/self/status (VmHWM); writing 5 to
/proc/self/clear_refs resets it to the current RSS. The peak covers the whole worker process:
with --concurrency above 1 it includes the jobs that ran alongside. Elsewhere (no /proc) the
peak since the process started is reported, and `scope` says so.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def reset_peak() -> bool:
    """Start a new peak at the current RSS; False when the platform cannot."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def _status_kb(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def peak_rss_bytes() -> int:
    """The peak RSS since the last reset_peak() (or since the process started)."""
    kilobytes = _status_kb("VmHWM")
    if kilobytes is not None:
        return kilobytes * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # macOS reports bytes
