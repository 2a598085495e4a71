"""The local dyno manager with fake processes and a fake clock: scaling, restarts with backoff,
SIGTERM then SIGKILL, output prefixes. No process is started, no second is waited."""

from __future__ import annotations

import io
import signal
from collections.abc import Iterator

import pytest
from fakes import FakeClock, FakeSpawn
from helpers import wait_until

from pgdyno.platform.dynos import DynoManager


class Platform:
    def __init__(self, clock: FakeClock, spawn: FakeSpawn) -> None:
        self.clock, self.spawn = clock, spawn
        self.output = io.StringIO()
        self.events: list[tuple[str, dict]] = []
        self.dynos = DynoManager(
            {"winston": "pgdyno worker --queue reports", "julia": "pgdyno dispatcher"},
            {"DATABASE_URL": "postgresql://fake"},
            output=self.output,
            kill_timeout=30.0,
            on_event=lambda event: self.events.append((event[2], event[3])),
            spawn=spawn,
            clock=clock,
        )

    def named(self, event: str) -> list[dict]:
        return [fields for name, fields in self.events if name == event]

    def restart_in(self) -> float:
        """Seconds until the pending restart (exact: the event's restart_in_s is rounded)."""
        (timer,) = self.clock.pending("restart-")
        return timer.at - self.clock.now()

    def wait_for(self, event: str, count: int = 1) -> dict:
        """Wait (real time, briefly) for a dyno's watcher thread to report `event`."""
        wait_until(lambda: len(self.named(event)) >= count, timeout=5, message=event)
        return self.named(event)[count - 1]


@pytest.fixture
def platform(clock: FakeClock) -> Iterator[Platform]:
    made = Platform(clock, FakeSpawn())
    yield made
    for proc in made.spawn.started:
        proc.exit(0)


def test_scale_starts_numbered_dynos_with_their_dyno_name_and_port(platform):
    platform.dynos.scale("winston", 2)
    assert platform.dynos.running("winston") == ["winston.1", "winston.2"]
    first, second = platform.spawn.started
    assert (first.env["DYNO"], second.env["DYNO"]) == ("winston.1", "winston.2")
    assert first.env["PORT"] != second.env["PORT"]
    assert first.env["DATABASE_URL"] == "postgresql://fake"
    assert platform.named("scale") == [{"type": "winston", "from": 0, "to": 2}]


def test_scale_down_sends_sigterm_to_the_highest_numbered_dynos(platform):
    platform.dynos.scale("winston", 3)
    platform.dynos.scale("winston", 1)
    assert platform.dynos.running("winston") == ["winston.1"]
    assert [p.signals for p in platform.spawn.started] == [[], [signal.SIGTERM], [signal.SIGTERM]]
    platform.wait_for("dyno_exited", 2)
    assert platform.dynos.alive("winston") == ["winston.1"]
    assert platform.named("dyno_crashed") == []  # stopped on purpose: not restarted


def test_dyno_that_ignores_sigterm_is_killed_after_the_kill_timeout(platform):
    platform.spawn.obeys_sigterm = False
    platform.dynos.scale("winston", 1)
    platform.dynos.scale("winston", 0)
    (proc,) = platform.spawn.started
    platform.clock.advance(29.9)
    assert proc.signals == [signal.SIGTERM]
    platform.clock.advance(0.1)
    assert proc.signals == [signal.SIGTERM, signal.SIGKILL]
    assert platform.wait_for("dyno_exited")["status"] == -signal.SIGKILL
    assert platform.named("dyno_killed")[0]["msg"] == "still running 30s after SIGTERM"


def test_dyno_that_exits_on_its_own_is_restarted_with_growing_backoff(platform):
    platform.dynos.scale("winston", 1)
    delays = []
    for crash in (1, 2, 3):
        platform.spawn.of("winston.1")[-1].exit(1)
        platform.wait_for("dyno_crashed", crash)
        delays.append(platform.restart_in())
        platform.clock.advance(delays[-1] - 0.001)
        assert platform.dynos.running("winston") == []  # not before the delay
        platform.clock.advance(0.001)
        assert platform.dynos.running("winston") == ["winston.1"]
    assert len(platform.spawn.of("winston.1")) == 4
    # 1 s, 2 s, 4 s, each with jitter in [0.5, 1.5).
    assert 0.5 <= delays[0] < 1.5 and 1.0 <= delays[1] < 3.0 and 2.0 <= delays[2] < 6.0


def test_dyno_that_ran_for_a_while_before_crashing_restarts_after_the_first_delay(platform):
    platform.dynos.scale("winston", 1)
    platform.spawn.of("winston.1")[-1].exit(1)
    platform.wait_for("dyno_crashed", 1)
    platform.clock.advance(platform.restart_in())
    platform.clock.advance(61)  # up for a minute: not a crash loop
    platform.spawn.of("winston.1")[-1].exit(1)
    assert 0.5 <= platform.wait_for("dyno_crashed", 2)["restart_in_s"] < 1.5


def test_no_restart_when_the_type_was_scaled_down_meanwhile(platform):
    platform.dynos.scale("winston", 1)
    platform.spawn.of("winston.1")[-1].exit(1)
    platform.wait_for("dyno_crashed")
    delay = platform.restart_in()
    platform.dynos.scale("winston", 0)
    platform.clock.advance(delay)
    assert platform.dynos.running() == [] and len(platform.spawn.started) == 1


def test_output_is_prefixed_with_the_dyno_name_like_honcho(platform):
    platform.dynos.scale("julia", 1)
    (proc,) = platform.spawn.started
    proc.output = [b"at=info event=dispatcher_started\n"]
    proc.exit(0)
    platform.wait_for("dyno_exited")
    lines = platform.output.getvalue().splitlines()
    assert "julia.1    | at=info event=dispatcher_started" in lines
    assert any(line.startswith("platform   | event=dyno_started dyno=julia.1") for line in lines)


def test_close_stops_every_dyno_and_cancels_pending_restarts(platform):
    platform.dynos.scale("winston", 2)
    platform.spawn.of("winston.2")[-1].exit(1)
    platform.wait_for("dyno_crashed")
    platform.dynos.close()
    assert platform.dynos.alive() == []
    assert platform.spawn.of("winston.1")[0].signals == [signal.SIGTERM]
    assert platform.clock.pending("restart-") == []
