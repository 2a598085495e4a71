"""Watching long work: `report run --wait` draws a progress bar in a terminal (rows, rate,
elapsed) and plain lines elsewhere; `status --watch` refreshes until Ctrl-C. The terminal is a
real pseudo-terminal, as a person's shell would give."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import REPO_DIR, PgdynoProcess, pgdyno_env, wait_until, worker
from reports_support import write_report

import pgdyno

pytestmark = pytest.mark.usefixtures("effects")

# 20 pauses of 0.1 s, each followed by 5,000 rows: COPY streams them as they come, so progress
# moves for about two seconds.
STREAMY = """
    -- Rows arriving over two seconds.
    SELECT g, n, repeat('x', 200) AS pad
      FROM generate_series(1, 20) AS g,
           LATERAL (SELECT pg_sleep(0.1) WHERE g > 0) AS pause,
           generate_series(1, 5000) AS n
"""


def in_terminal(
    args: list[str],
    env: dict[str, str],
    *,
    ctrl_c_when: Callable[[str], bool] | None = None,
    timeout: float = 60,
) -> tuple[str, int]:
    """Run `pgdyno ARGS` with a pseudo-terminal as stdin, stdout and stderr, and read what it
    writes until it exits; once `ctrl_c_when(output)` holds, send it SIGINT (Ctrl-C) and read
    on. Returns the output and the exit status. The terminal stays open until the process has
    exited (a write to a closed one would fail it); the process is killed at `timeout`."""
    controller, terminal = pty.openpty()
    # A terminal of 40 rows and 120 columns (a new pseudo-terminal has none, which a progress
    # bar takes as no room at all).
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "pgdyno", *args],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env=env,
        cwd=REPO_DIR,
        start_new_session=True,
    )
    os.close(terminal)
    received = b""
    interrupted = False
    deadline = time.monotonic() + timeout
    try:
        while True:
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; output so far:\n{received.decode('replace')}")
            if select.select([controller], [], [], 0.05)[0]:
                try:
                    chunk = os.read(controller, 65536)
                except OSError:  # EIO: no process holds the terminal any more
                    chunk = b""
                if not chunk:
                    if proc.poll() is not None:
                        break
                    time.sleep(0.01)
                received += chunk
            elif proc.poll() is not None:
                break
            text = received.decode(errors="replace")
            if ctrl_c_when is not None and not interrupted and ctrl_c_when(text):
                os.killpg(proc.pid, signal.SIGINT)
                interrupted = True
        return received.decode(errors="replace"), proc.wait(10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        os.close(controller)


def test_report_run_wait_draws_a_bar_in_a_terminal_and_lines_elsewhere(
    database_url, conn, tmp_path: Path
):
    folder = tmp_path / "reports"
    write_report(folder, "streamy", STREAMY)
    env = pgdyno_env(database_url, PGDYNO_REPORTS_DIR=str(folder))
    with (
        worker(database_url, "reports", concurrency=2, PGDYNO_REPORTS_DIR=str(folder)),
        PgdynoProcess(
            ["report", "run", "streamy", "--wait"], database_url, PGDYNO_REPORTS_DIR=str(folder)
        ) as piped,  # at the same time, into a file
    ):
        output, status = in_terminal(["report", "run", "streamy", "--wait"], env)
        assert status == 0, output
        # tqdm redraws one line in place: carriage returns, a rate and the elapsed time.
        bar_lines = [line for line in output.split("\r") if "rows/s" in line]
        assert any(
            " running (attempt 1/5): " in line and " rows [00:0" in line for line in bar_lines
        ), output
        assert "of CSV" in output
        assert "done: 100,000 rows" in output

        assert piped.wait(60) == 0
        text = piped.output()
        assert "\r" not in text and "rows/s" not in text
        assert "running (attempt 1/5): " in text and "done: 100,000 rows" in text


def test_status_watch_refreshes_until_ctrl_c(database_url, conn):
    env = pgdyno_env(database_url)
    with PgdynoProcess(["status", "--watch", "--interval", "200ms"], database_url) as piped:
        wait_until(lambda: piped.output().count("pgdyno status at") >= 2, message="two refreshes")
        pgdyno.enqueue(conn, "t", queue="watched")
        wait_until(lambda: "watched" in piped.output(), message="the new job in a refresh")
        piped.signal(signal.SIGINT)
        assert piped.wait(10) == 0
        assert "Traceback" not in piped.output()

    output, status = in_terminal(
        ["status", "--watch", "--interval", "200ms"],
        env,
        ctrl_c_when=lambda text: text.count("pgdyno status at") >= 2,
    )
    assert status == 0, output
    assert "\x1b[2J" in output  # the screen is cleared before each refresh
    assert "watched" in output and "Traceback" not in output
