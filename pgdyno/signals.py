"""Stop signals for the long-running commands: SIGTERM (Heroku's shutdown, 30 s before SIGKILL)
and SIGINT (Ctrl-C). The worker and the dispatcher install their handlers through `install`."""

from __future__ import annotations

import signal
from collections.abc import Callable
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def install(handler: Callable[[signal.Signals], None]) -> Callable[[], None]:
    """Call `handler(signal)` on SIGTERM and SIGINT; returns a function that puts the previous
    handlers back. Only from the main thread (Python's rule)."""

    def handle(signum: int, _frame: FrameType | None) -> None:
        handler(signal.Signals(signum))

    previous = {signum: signal.signal(signum, handle) for signum in STOP_SIGNALS}

    def restore() -> None:
        for signum, old in previous.items():
            signal.signal(signum, old)

    return restore
