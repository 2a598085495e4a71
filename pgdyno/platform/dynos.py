"""Runs each process type as real OS processes, as many as its quantity, like Heroku's dyno
manager: scaling down sends SIGTERM then SIGKILL after the kill timeout (30 s on Heroku); a
process that exits on its own while its quantity says it should run is restarted with backoff;
a restart (or a stop: the formation starts it again, as on Heroku) stops a dyno and starts it
anew once it has exited. `boot_time` simulates a dyno's boot (Heroku workers take 20-60 s):
the command starts that many seconds after the dyno, which is billed (and "starting") meanwhile.
Output goes through a Printer (platform/printer.py), interleaved with `winston.1 |` prefixes.

Processes are started through a `Spawn` function and timed through a `Clock`, so the tests
drive restarts and kill timeouts with fake processes and a fake clock (tests/unit/test_dynos.py).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TextIO

from pgdyno import backoff
from pgdyno.clock import SYSTEM_CLOCK, Clock, Timer
from pgdyno.platform.printer import Printer

#: (monotonic time, wall time, event, fields): what the platform did, for summaries and tests.
PlatformEvent = tuple[float, float, str, dict[str, Any]]
#: A dyno that ran this long before exiting was not crash-looping: its backoff starts over.
CRASH_LOOP_WINDOW_S = 60.0
#: Restart delays after a crash: backoff.delay(consecutive crashes, base, cap).
RESTART_BASE_S, RESTART_CAP_S = 1.0, 20.0


class DynoProcess(Protocol):
    """A started process, as the dyno manager needs it."""

    @property
    def pid(self) -> int: ...

    def lines(self) -> Iterator[bytes]:
        """Its output (stdout and stderr), line by line, until it exits."""
        ...

    def wait(self, timeout: float | None = None) -> int: ...

    def poll(self) -> int | None: ...

    def signal(self, signum: int) -> None:
        """Send `signum` to the process and its children; nothing if it has exited."""
        ...


#: Starts `command` (a shell command line) with `env` in folder `cwd` (None: this process's).
Spawn = Callable[[str, Mapping[str, str], str | None], DynoProcess]


class OsProcess:
    """A `SHELL -c COMMAND` child in a session of its own (signals reach its group)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self._proc = proc

    @property
    def pid(self) -> int:
        return self._proc.pid

    def lines(self) -> Iterator[bytes]:
        stdout = self._proc.stdout
        assert stdout is not None  # always piped by spawn_process
        with stdout:  # closed once the process has closed its end
            yield from stdout

    def wait(self, timeout: float | None = None) -> int:
        return self._proc.wait(timeout)

    def poll(self) -> int | None:
        return self._proc.poll()

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, signum)


#: The shell that runs Procfile lines. bash, as on Heroku: it execs the last command of a line
#: (`cd x && pgdyno worker`), so signals and the exit status are the command's own; dash, the
#: fallback, stays as the parent and dies of the SIGTERM meant for the command.
SHELL = "/bin/bash" if os.path.exists("/bin/bash") else "/bin/sh"


def spawn_process(command: str, env: Mapping[str, str], cwd: str | None = None) -> OsProcess:
    """The real Spawn: a shell runs `command` as written (`cd x && ...`, `VAR=1 cmd`), as
    Heroku runs Procfile lines, in `cwd` (the app root); output piped, no stdin."""
    return OsProcess(
        subprocess.Popen(
            [SHELL, "-c", command],
            env=dict(env),
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    )


@dataclass
class Dyno:
    process_type: str
    index: int
    proc: DynoProcess
    started_at: float
    stopping: bool = False
    #: Start it again once it has exited (a restart or a stop of a formation dyno).
    restart: bool = False
    #: The platform's id for it, and its creation (wall clock, for the API's created_at).
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    created: float = field(default_factory=time.time)

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
        spawn: Spawn = spawn_process,
        clock: Clock = SYSTEM_CLOCK,
        cwd: str | None = None,
        boot_time: float = 0.0,
    ) -> None:
        self.commands = dict(commands)
        self.cwd = cwd  # where commands run: the app root (the Procfile's folder)
        self.quantities: dict[str, int] = dict.fromkeys(self.commands, 0)
        self.sizes: dict[str, str] = dict.fromkeys(self.commands, "Standard-1X")
        #: When each type's formation last changed (wall clock), for the API's updated_at.
        self.updated: dict[str, float] = dict.fromkeys(self.commands, time.time())
        #: Seconds a dyno boots before its command starts (0: at once).
        self.boot_time = boot_time
        self.env = dict(env)
        self.kill_timeout = kill_timeout
        self.printer = Printer(output)
        self._base_port = base_port
        self._on_event = on_event
        self._spawn_process = spawn
        self._clock = clock
        self._lock = threading.RLock()
        self._exited = threading.Condition(self._lock)
        self._dynos: dict[str, Dyno] = {}  # running, by name
        self._stopping: list[Dyno] = []  # SIGTERM sent, not yet exited
        self._crashes: dict[str, int] = {}  # consecutive crashes, by name
        self._restart_timers: dict[str, Timer] = {}
        self._closed = False
        self._port_seq = 0

    # --- scaling -------------------------------------------------------------------------------

    def scale(self, process_type: str, quantity: int, size: str | None = None) -> None:
        """Set the quantity and start or stop processes to match it."""
        with self._lock:
            before = self.quantities[process_type]
            self.quantities[process_type] = quantity
            if (size and size != self.sizes[process_type]) or before != quantity:
                self.updated[process_type] = time.time()
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

    def restart(self, process_type: str | None = None, name: str | None = None) -> list[str]:
        """Stop the running dynos of `process_type` (or the one called `name`, or all) and start
        each again once it has exited, as `heroku ps:restart` and `ps:stop` do. Returns their
        names."""
        with self._lock:
            chosen = [
                dyno
                for dyno in list(self._dynos.values())
                if (process_type is None or dyno.process_type == process_type)
                and (name is None or dyno.name == name)
            ]
            for dyno in chosen:
                self.event("dyno_restarting", dyno=dyno.name)
                dyno.restart = True
                self._stop(dyno)
            return [dyno.name for dyno in chosen]

    def dynos(self) -> list[Dyno]:
        """The dynos that are up or booting (not stopping), by name."""
        with self._lock:
            return sorted(self._dynos.values(), key=lambda d: (d.process_type, d.index))

    def booting(self, dyno: Dyno) -> bool:
        """Whether the dyno is still in its simulated boot."""
        return self._clock.now() < dyno.started_at + self.boot_time

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
            # Real seconds, whatever the clock: the kill timer fires on the clock meanwhile.
            self._exited.wait_for(lambda: not self.alive(), timeout=self.kill_timeout + 5)

    # --- processes -----------------------------------------------------------------------------

    def _spawn(self, command: str, name: str, boot: bool = False) -> DynoProcess:
        self._port_seq += 1
        env = {**self.env, "DYNO": name, "PORT": str(self._base_port + self._port_seq)}
        if boot and self.boot_time > 0:  # the shell sleeps, then runs (execs) the line
            command = f"sleep {self.boot_time:g} && {command}"
        return self._spawn_process(command, env, self.cwd)

    def _start(self, process_type: str, index: int) -> None:
        if self._closed:  # a scale-up that arrives while everything stops starts nothing
            return
        name = f"{process_type}.{index}"
        proc = self._spawn(self.commands[process_type], name, boot=True)
        dyno = Dyno(process_type, index, proc, started_at=self._clock.now())
        self._dynos[name] = dyno
        self.event("dyno_started", dyno=name, pid=proc.pid, command=self.commands[process_type])
        threading.Thread(target=self._watch, args=(dyno,), name=f"dyno-{name}", daemon=True).start()

    def _stop(self, dyno: Dyno) -> None:
        """SIGTERM now, SIGKILL after the kill timeout if it is still running."""
        self._dynos.pop(dyno.name, None)
        dyno.stopping = True
        self._stopping.append(dyno)
        self.event("dyno_stopping", dyno=dyno.name, signal="SIGTERM")
        dyno.proc.signal(signal.SIGTERM)
        self._clock.call_later(
            self.kill_timeout, lambda: self._kill(dyno), name=f"kill-{dyno.name}"
        )

    def kill_now(self) -> None:
        """SIGKILL every dyno still running or stopping, without waiting (a second Ctrl-C)."""
        with self._lock:
            self._closed = True
            dynos = [*self._dynos.values(), *self._stopping]
        for dyno in dynos:
            self.event("dyno_killed", dyno=dyno.name, signal="SIGKILL", msg="killed at once")
            dyno.proc.signal(signal.SIGKILL)

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
            dyno.proc.signal(signal.SIGKILL)

    def _watch(self, dyno: Dyno) -> None:
        """Copy the dyno's output, then handle its exit (restart it if it should run)."""
        self._pump(dyno.name, dyno.proc)
        status = dyno.proc.wait()
        with self._lock:
            self._exit(dyno, status)
            self._exited.notify_all()

    def _exit(self, dyno: Dyno, status: int) -> None:
        """Record an exit; schedule a restart when the dyno should still run."""
        if dyno in self._stopping:
            self._stopping.remove(dyno)
        uptime = self._clock.now() - dyno.started_at
        self.event("dyno_exited", dyno=dyno.name, status=status, uptime_s=round(uptime, 2))
        if dyno.restart and not self._closed and dyno.name not in self._dynos:
            if dyno.index <= self.quantities[dyno.process_type]:
                self._start(dyno.process_type, dyno.index)
            return
        if dyno.stopping or self._closed or self._dynos.get(dyno.name) is not dyno:
            return
        del self._dynos[dyno.name]
        if dyno.index > self.quantities[dyno.process_type]:
            return
        crashes = self._crashes.get(dyno.name, 0) + 1
        if uptime > CRASH_LOOP_WINDOW_S:
            crashes = 1  # it ran for a while: not a crash loop
        self._crashes[dyno.name] = crashes
        delay = backoff.delay(crashes, RESTART_BASE_S, RESTART_CAP_S)
        self.event("dyno_crashed", dyno=dyno.name, status=status, restart_in_s=round(delay, 2))
        self._restart_timers[dyno.name] = self._clock.call_later(
            delay,
            lambda: self._restart(dyno.process_type, dyno.index),
            name=f"restart-{dyno.name}",
        )

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

    def _pump(self, name: str, proc: DynoProcess) -> None:
        for raw in proc.lines():
            self.printer.write(name, raw.decode(errors="replace").rstrip("\n"))

    def event(self, name: str, **fields: Any) -> None:
        """Print a platform event and hand it to the observer."""
        self.printer.event(name, fields)
        if self._on_event is not None:
            self._on_event((self._clock.now(), time.time(), name, fields))
