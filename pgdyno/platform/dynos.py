"""Runs each process type as real OS processes, as many as its quantity, like Heroku's dyno
manager: scaling down sends SIGTERM then SIGKILL after the kill timeout (30 s on Heroku); a
process that exits on its own while its quantity says it should run is restarted with backoff.
Output is interleaved with `winston.1 |` prefixes, like foreman and honcho.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

from pgdyno import backoff
from pgdyno.logfmt import render

#: (monotonic time, wall time, event, fields): what the platform did, for summaries and tests.
PlatformEvent = tuple[float, float, str, dict[str, Any]]


@dataclass
class Dyno:
    process_type: str
    index: int
    proc: subprocess.Popen[bytes]
    started_at: float = field(default_factory=time.monotonic)
    stopping: bool = False

    @property
    def name(self) -> str:
        return f"{self.process_type}.{self.index}"


class DynoManager:
    """Keeps the running processes of every type equal to its quantity."""

    def __init__(
        self,
        commands: Mapping[str, str],
        env: Mapping[str, str],
        *,
        output: TextIO,
        kill_timeout: float = 30.0,
        base_port: int = 5100,
        on_event: Callable[[PlatformEvent], None] | None = None,
        cwd: str | None = None,
    ) -> None:
        self.commands = dict(commands)
        self.cwd = cwd  # where commands run: the app root (the Procfile's folder)
        self.quantities: dict[str, int] = dict.fromkeys(self.commands, 0)
        self.sizes: dict[str, str] = dict.fromkeys(self.commands, "standard-1X")
        self.env = dict(env)
        self.kill_timeout = kill_timeout
        self._output = output
        self._base_port = base_port
        self._on_event = on_event
        self._lock = threading.RLock()
        self._dynos: dict[str, Dyno] = {}  # running, by name
        self._stopping: list[Dyno] = []  # SIGTERM sent, not yet exited
        self._crashes: dict[str, int] = {}  # consecutive crashes, by name
        self._restart_timers: dict[str, threading.Timer] = {}
        self._closed = False
        self._port_seq = 0

    # --- scaling -------------------------------------------------------------------------------

    def scale(self, process_type: str, quantity: int, size: str | None = None) -> None:
        """Set the quantity and start or stop processes to match it."""
        with self._lock:
            before = self.quantities[process_type]
            self.quantities[process_type] = quantity
            if size:
                self.sizes[process_type] = size
            if before != quantity:
                self.event("scale", type=process_type, **{"from": before}, to=quantity)
            for index in range(1, quantity + 1):
                name = f"{process_type}.{index}"
                if name not in self._dynos and name not in self._restart_timers:
                    self._start(process_type, index)
            for dyno in [
                d
                for d in self._dynos.values()
                if d.process_type == process_type and d.index > quantity
            ]:
                self._stop(dyno)

    def running(self, process_type: str | None = None) -> list[str]:
        """Names of the dynos that are up (not stopping)."""
        with self._lock:
            return sorted(
                name
                for name, dyno in self._dynos.items()
                if process_type is None or dyno.process_type == process_type
            )

    def alive(self, process_type: str | None = None) -> list[str]:
        """Names of all dynos whose process has not exited yet, stopping ones included."""
        with self._lock:
            dynos = [*self._dynos.values(), *self._stopping]
            return sorted(
                d.name for d in dynos if process_type is None or d.process_type == process_type
            )

    def pid(self, name: str) -> int | None:
        with self._lock:
            dyno = self._dynos.get(name)
            return dyno.proc.pid if dyno else None

    def run_once(self, name: str, command: str, timeout: float = 300.0) -> int:
        """Run a one-off process (the release phase) and return its exit status."""
        proc = self._spawn(command, f"{name}.1")
        self._pump(f"{name}.1", proc)
        return proc.wait(timeout)

    def close(self) -> None:
        """Stop everything: SIGTERM to every dyno, SIGKILL after the kill timeout."""
        with self._lock:
            self._closed = True
            for timer in self._restart_timers.values():
                timer.cancel()
            self._restart_timers.clear()
            for dyno in list(self._dynos.values()):
                self._stop(dyno)
        deadline = time.monotonic() + self.kill_timeout + 5
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.05)

    # --- processes -----------------------------------------------------------------------------

    def _spawn(self, command: str, name: str) -> subprocess.Popen[bytes]:
        self._port_seq += 1
        env = {**self.env, "DYNO": name, "PORT": str(self._base_port + self._port_seq)}
        return subprocess.Popen(  # as written, through the shell, as Heroku runs Procfile lines
            ["/bin/sh", "-c", command],
            env=env,
            cwd=self.cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def _start(self, process_type: str, index: int) -> None:
        if self._closed:  # a scale-up that arrives while everything stops starts nothing
            return
        name = f"{process_type}.{index}"
        proc = self._spawn(self.commands[process_type], name)
        dyno = Dyno(process_type, index, proc)
        self._dynos[name] = dyno
        self.event("dyno_started", dyno=name, pid=proc.pid, command=self.commands[process_type])
        threading.Thread(target=self._watch, args=(dyno,), name=f"dyno-{name}", daemon=True).start()

    def _stop(self, dyno: Dyno) -> None:
        """SIGTERM now, SIGKILL after the kill timeout if it is still running."""
        self._dynos.pop(dyno.name, None)
        dyno.stopping = True
        self._stopping.append(dyno)
        self.event("dyno_stopping", dyno=dyno.name, signal="SIGTERM")
        self._signal(dyno, signal.SIGTERM)
        timer = threading.Timer(self.kill_timeout, self._kill, args=(dyno,))
        timer.daemon = True
        timer.start()

    def kill_now(self) -> None:
        """SIGKILL every dyno still running or stopping, without waiting (a second Ctrl-C)."""
        with self._lock:
            self._closed = True
            dynos = [*self._dynos.values(), *self._stopping]
        for dyno in dynos:
            self.event("dyno_killed", dyno=dyno.name, signal="SIGKILL", msg="killed at once")
            self._signal(dyno, signal.SIGKILL)

    def _kill(self, dyno: Dyno) -> None:
        # The shell may be gone while the command it started still runs: the process group
        # lives until the dyno's output ends, which is when _watch drops it from _stopping.
        if dyno in self._stopping:
            self.event(
                "dyno_killed",
                dyno=dyno.name,
                signal="SIGKILL",
                msg=f"still running {self.kill_timeout:g}s after SIGTERM",
            )
            self._signal(dyno, signal.SIGKILL)

    def _signal(self, dyno: Dyno, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(dyno.proc.pid, signum)

    def _watch(self, dyno: Dyno) -> None:
        """Copy the dyno's output, then handle its exit (restart it if it should run)."""
        self._pump(dyno.name, dyno.proc)
        status = dyno.proc.wait()
        with self._lock:
            if dyno in self._stopping:
                self._stopping.remove(dyno)
            self.event(
                "dyno_exited",
                dyno=dyno.name,
                status=status,
                uptime_s=round(time.monotonic() - dyno.started_at, 2),
            )
            if dyno.stopping or self._closed or self._dynos.get(dyno.name) is not dyno:
                return
            del self._dynos[dyno.name]
            if dyno.index > self.quantities[dyno.process_type]:
                return
            crashes = self._crashes.get(dyno.name, 0) + 1
            if time.monotonic() - dyno.started_at > 60:
                crashes = 1  # it ran for a while: not a crash loop
            self._crashes[dyno.name] = crashes
            delay = backoff.delay(crashes, 1.0, 20.0)
            self.event("dyno_crashed", dyno=dyno.name, status=status, restart_in_s=round(delay, 2))
            timer = threading.Timer(delay, self._restart, args=(dyno.process_type, dyno.index))
            timer.daemon = True
            self._restart_timers[dyno.name] = timer
            timer.start()

    def _restart(self, process_type: str, index: int) -> None:
        with self._lock:
            name = f"{process_type}.{index}"
            self._restart_timers.pop(name, None)
            if (
                not self._closed
                and index <= self.quantities[process_type]
                and name not in self._dynos
            ):
                self._start(process_type, index)

    # --- output --------------------------------------------------------------------------------

    def _pump(self, name: str, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            self.write(name, raw.decode(errors="replace").rstrip("\n"))

    def write(self, prefix: str, line: str) -> None:
        with self._lock:
            self._output.write(f"{prefix:<10} | {line}\n")
            self._output.flush()

    def event(self, name: str, **fields: Any) -> None:
        """Print a platform event and hand it to the observer."""
        self.write("platform", render(name, fields))
        if self._on_event is not None:
            self._on_event((time.monotonic(), time.time(), name, fields))
