"""Tests only: a worker started with `--import scale_down_pause` holds its scale-to-zero decision
(queues found empty, the type's row locked, the API call not made) until the test lets it go.

It sets the Scaler's test signal (pgdyno.scaling.scaler.SIGNALS) from the worker's own process:
on pausing it creates $TEST_PAUSE_BEFORE_SCALE_DOWN.paused, then waits for
$TEST_PAUSE_BEFORE_SCALE_DOWN.resume. Production code has no such setting.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from pgdyno.logfmt import log_event
from pgdyno.scaling import scaler

log = logging.getLogger("pgdyno.tests.scale_down_pause")
ENV = "TEST_PAUSE_BEFORE_SCALE_DOWN"


def pause(process_type: str) -> None:
    path = os.environ[ENV]
    Path(f"{path}.paused").touch()
    log_event(log, "scale_down_paused", type=process_type, path=path)
    while not Path(f"{path}.resume").exists():
        time.sleep(0.01)


if os.environ.get(ENV):
    scaler.SIGNALS.before_scale_down = pause
