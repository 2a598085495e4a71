"""Stop signals for the long-running commands: SIGTERM (Heroku's shutdown, 30 s before SIGKILL)
and SIGINT (Ctrl-C). The worker and the dispatcher install their handlers through `install`."""

from __future__ import annotations

import signal
from collections.abc import Callable
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def install(handler: Callable[[signal.Signals], None]) -> None:
    """Call `handler(signal)` on SIGTERM and SIGINT. Only from the main thread (Python's rule)."""

    def handle(signum: int, _frame: FrameType | None) -> None:
        handler(signal.Signals(signum))

    for signum in STOP_SIGNALS:
        signal.signal(signum, handle)
