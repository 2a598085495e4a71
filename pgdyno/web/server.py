"""Serving the dashboard with waitress, a production WSGI server in pure Python.

`serve` blocks (for `pgdyno web`); `start_background` runs it on a thread beside another
program (`pgdyno dev`, `make run`, the tests) and returns a handle to stop it.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Flask
from waitress import wasyncore
from waitress.server import create_server

from pgdyno.web import auth

#: Requests served at once; SSE is not used (pages poll), so a few threads are plenty.
THREADS = 8


@dataclass
class RunningDashboard:
    url: str
    app: Flask
    _server: Any  # waitress's server: run(), close()
    _thread: threading.Thread

    def stop(self) -> None:
        """Stop serving, then close the dashboard's database pool. The server's own thread
        closes its sockets (asked through waitress's trigger): closed from here, a socket could
        vanish under that thread's select() (EBADF, an error in the serving thread)."""
        if self._thread.is_alive():
            self._server.trigger.pull_trigger(functools.partial(_close, self._server))
            self._thread.join(5)
        if self._thread.is_alive():  # the loop did not answer: close from here
            _close(self._server)
            self._thread.join(5)
        self.app.extensions["pgdyno_db"].close()


def _close(server: Any) -> None:
    """Stop waitress's request threads and close every socket of its loop (the loop ends
    when none is left)."""
    server.task_dispatcher.shutdown()
    wasyncore.close_all(server._map)


def _server(app: Flask, host: str, port: int) -> tuple[Any, str]:
    credentials: auth.Credentials = app.extensions["pgdyno_credentials"]
    auth.check_bind(host, credentials)
    server = create_server(app, host=host, port=port, threads=THREADS, ident="pgdyno")
    bound_port = server.effective_port
    shown = f"[{host}]" if ":" in host else host
    return server, f"http://{shown}:{bound_port}/"


def serve(app: Flask, host: str, port: int, announce: Callable[[str], object] = print) -> None:
    """Serve until interrupted; ConfigError for a non-loopback host without a credential."""
    server, url = _server(app, host, port)
    announce(url)
    try:
        server.run()
    finally:
        server.close()
        app.extensions["pgdyno_db"].close()


def start_background(app: Flask, host: str = "127.0.0.1", port: int = 0) -> RunningDashboard:
    """Serve on a daemon thread (port 0: any free port); `.url` says where."""
    server, url = _server(app, host, port)
    thread = threading.Thread(target=server.run, name="pgdyno-web", daemon=True)
    thread.start()
    return RunningDashboard(url, app, server, thread)
