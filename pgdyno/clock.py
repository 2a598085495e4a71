"""Time and waiting for the long-running loops: the clock, waits on sockets, the self-pipe.

The worker loop, the dispatcher and the local dyno manager read the time, wait and schedule
through a `Clock`, never through `time` or `threading.Timer` directly, so their tests drive
them with a fake clock (tests/fakes.py) instead of real seconds. `SystemClock` is the real one.
`Wakeup` is the self-pipe that cuts a wait short: executor threads, task progress, signal
handlers and `stop()` write one byte to it.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import threading
import time
from collections.abc import Callable
from typing import Protocol


class Timer(Protocol):
    """A scheduled call that has not run yet; cancel() stops it (no effect once it ran)."""

    def cancel(self) -> None: ...


class Clock(Protocol):
    """Monotonic time in seconds, waiting on file descriptors, and delayed calls."""

    def now(self) -> float:
        """Seconds on a monotonic clock (only differences mean something)."""
        ...

    def wait_readable(self, fds: list[int], timeout: float | None) -> list[int]:
        """Block until one of `fds` is readable or `timeout` seconds pass (None: no limit);
        returns the readable ones."""
        ...

    def call_later(self, delay: float, action: Callable[[], None], name: str) -> Timer:
        """Call `action` (on another thread) after `delay` seconds."""
        ...


def wait_readable(fds: list[int], timeout: float | None) -> list[int]:
    """Block until one of `fds` is readable or `timeout` seconds pass (None: no limit)."""
    with selectors.DefaultSelector() as selector:
        for fd in fds:
            selector.register(fd, selectors.EVENT_READ)
        ready = selector.select(None if timeout is None else max(timeout, 0.0))
        return [key.fd for key, _ in ready]


class SystemClock:
    """The real clock: time.monotonic, select(), daemon threading.Timers."""

    def now(self) -> float:
        return time.monotonic()

    def wait_readable(self, fds: list[int], timeout: float | None) -> list[int]:
        return wait_readable(fds, timeout)

    def call_later(self, delay: float, action: Callable[[], None], name: str) -> Timer:
        timer = threading.Timer(delay, action)
        timer.name = name
        timer.daemon = True
        timer.start()
        return timer


SYSTEM_CLOCK = SystemClock()


class Wakeup:
    """A self-pipe: executor threads, signal handlers and task progress wake a sleeping loop."""

    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self._clock = clock
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        #: True while the loop waits: only then is a poke worth a system call.
        self.sleeping = False

    def poke(self) -> None:
        """Wake the loop (now, or at its next wait). Safe in a signal handler."""
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._write, b"x")

    def poke_if_sleeping(self) -> None:
        if self.sleeping:
            self.poke()

    def wait(
        self, fds: list[int], timeout: float | None, ready: Callable[[], bool] = lambda: False
    ) -> None:
        """Wait until one of `fds` is readable, a poke, or `timeout` (None: no limit); not at
        all if `ready()`
        (checked after `sleeping` is set, so a poke cannot slip between check and wait)."""
        self.sleeping = True
        try:
            if not ready():
                self._clock.wait_readable([*fds, self._read], timeout)
        finally:
            self.sleeping = False
        self.drain()

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._read, 512):
                pass
