"""The dashboard beside a local program (`pgdyno dev`, `make run`): on 127.0.0.1, no
credential, started only when the `web` extra is installed."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any


def start_local(
    database_url: str, say: Callable[[str], object], *, port: int = 0, **options: Any
) -> Any:
    """Serve the dashboard on a thread; returns a handle with `.url` and `.stop()`, or None
    (having said why) when Flask or waitress is not installed."""
    try:
        from pgdyno.web.app import create_app
        from pgdyno.web.server import start_background
    except ImportError as exc:
        say(f"no dashboard: pip install 'pgdyno[web]' to get it ({exc.name} is missing)")
        return None
    dashboard = start_background(create_app(database_url, **options), "127.0.0.1", port)
    say(f"dashboard at {dashboard.url}")
    return dashboard


def browse_until_interrupted(dashboard: Any, say: Callable[[str], object]) -> None:
    """When a person runs this (stdin is a terminal), keep the dashboard up until Ctrl-C; a
    script (no terminal) goes on at once. Stops the dashboard either way."""
    if dashboard is None:
        return
    try:
        if sys.stdin is not None and sys.stdin.isatty():
            say(f"the dashboard stays up at {dashboard.url} : browse it, Ctrl-C to end")
            threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        dashboard.stop()
