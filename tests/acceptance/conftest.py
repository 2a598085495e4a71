"""Fixtures for end-to-end tests: the local platform running a test Procfile."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

import pytest
from helpers import pgdyno_env

from pgdyno.platform import LocalPlatform

PY = f"{sys.executable} -m pgdyno"


class RunningPlatform:
    """A LocalPlatform whose output goes to a file, with helpers to query it."""

    def __init__(self, platform: LocalPlatform, log_path: Path) -> None:
        self.platform = platform
        self.log_path = log_path

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def quantity(self, process_type: str) -> int:
        return self.platform.dynos.quantities[process_type]

    def alive(self, process_type: str) -> list[str]:
        return self.platform.dynos.alive(process_type)

    def scale_patches(self, process_type: str) -> list[int]:
        """Quantities PATCHed to the formation API, in arrival order."""
        return [
            body["quantity"]
            for _, method, ptype, body, status in self.platform.server.requests
            if method == "PATCH" and ptype == process_type and status == 200 and body
        ]


@pytest.fixture
def start_platform(
    tmp_path: Path, database_url: str, request: pytest.FixtureRequest
) -> Iterator[Callable[..., RunningPlatform]]:
    """start_platform(procfile_text, **env) -> RunningPlatform; stopped after the test."""
    started: list[RunningPlatform] = []
    outputs: list[TextIO] = []

    def start(procfile: str, **env: str) -> RunningPlatform:
        path = tmp_path / "Procfile"
        path.write_text(procfile.replace("{pgdyno}", PY))
        log_path = tmp_path / "platform.log"
        output = log_path.open("w")
        outputs.append(output)
        platform = LocalPlatform(
            path, database_url, output=output, kill_timeout=5, env=pgdyno_env(database_url, **env)
        )
        running = RunningPlatform(platform, log_path)
        started.append(running)
        platform.start()
        return running

    yield start
    for running in started:
        running.platform.stop()
    for output in outputs:
        output.close()
    for running in started:
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(running.output()[-6000:])


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    """Keep each phase's report on the item, so fixtures can print logs of failed tests."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
