"""A local HTTP server that follows the Heroku formation API contract, scriptable for failures.

Not a mock of `requests`: the client under test makes real HTTP calls to it. It answers like
api.heroku.com (JSON error bodies {"id", "message"}, Request-Id and RateLimit-Remaining
headers), keeps a formation per process type, records every request, and can be told to
answer the next requests with given statuses (429 with Retry-After, 503, 401, ...).
"""

from __future__ import annotations

import json
import threading
import uuid
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ERROR_IDS = {
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    422: "invalid_params",
    429: "rate_limit",
    500: "internal_server_error",
    503: "service_unavailable",
}


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Scripted:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    message: str = "scripted failure"
    #: A PATCH takes effect before the scripted answer (an answer lost after the change).
    applied: bool = False
    #: Only requests of this method get this answer (None: any).
    method: str | None = None


class FakeHeroku(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        app: str = "my-app",
        token: str = "secret-token-123",
        types: dict[str, int] | None = None,
    ) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.app = app
        self.token = token
        self.formations = {
            name: {"quantity": q, "size": "standard-1X"}
            for name, q in (types or {"winston": 0}).items()
        }
        self.requests: list[Recorded] = []
        self.script: deque[Scripted] = deque()
        #: The Date header of the answers (default: the real time, as http.server sends it).
        self.date: str | None = None
        #: Answer every request (after the script) with this, until set back to None.
        self.always: Scripted | None = None
        self.remaining = 4500
        self.lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def fail_next(self, *responses: Scripted) -> None:
        self.script.extend(responses)

    def calls(self, method: str | None = None, type_: str | None = None) -> list[Recorded]:
        """Requests received (of `method`, for process type `type_`), in order."""
        with self.lock:
            return [
                r
                for r in self.requests
                if (method is None or r.method == method)
                and (type_ is None or r.path.rstrip("/").endswith(f"/formation/{type_}"))
            ]

    def __enter__(self) -> FakeHeroku:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: FakeHeroku
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._handle("GET")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def _handle(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        server = self.server
        with server.lock:
            server.requests.append(Recorded(method, self.path, dict(self.headers), body))
            server.remaining -= 1
            scripted = next(
                (one for one in server.script if one.method in (None, method)), server.always
            )
            if scripted is not None and scripted is not server.always:
                server.script.remove(scripted)
        if scripted is not None and not scripted.applied:
            return self._error(scripted.status, scripted.message, scripted.headers)
        if self.headers.get("Authorization") != f"Bearer {server.token}":
            return self._error(401, "Invalid credentials provided.")
        parts = self.path.strip("/").split("/")
        if len(parts) != 4 or parts[0] != "apps" or parts[2] != "formation":
            return self._error(404, "The requested API endpoint was not found.")
        if parts[1] != server.app:
            return self._error(404, "Couldn't find that app.")
        formation = server.formations.get(parts[3])
        if formation is None:
            return self._error(404, "Couldn't find that formation.")
        if method == "PATCH":
            quantity = (body or {}).get("quantity")
            if not isinstance(quantity, int) or quantity < 0:
                return self._error(422, "Quantity must be a non-negative integer.")
            formation["quantity"] = quantity
            if body and "dyno_size" in body:
                formation["size"] = body["dyno_size"]["name"]
        if scripted is not None:  # applied, and then the answer fails
            return self._error(scripted.status, scripted.message, scripted.headers)
        self._send(
            200,
            {
                "type": parts[3],
                "quantity": formation["quantity"],
                "size": formation["size"],
                "dyno_size": {"id": str(uuid.uuid4()), "name": formation["size"]},
                "app": {"name": server.app, "id": str(uuid.uuid4())},
                "command": "pgdyno worker",
                "id": str(uuid.uuid4()),
            },
        )

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        self._send(status, {"id": ERROR_IDS.get(status, "error"), "message": message}, headers)

    def date_time_string(self, timestamp: float | None = None) -> str:
        return self.server.date or super().date_time_string(timestamp)

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Request-Id", str(uuid.uuid4()))
        self.send_header("RateLimit-Remaining", str(self.server.remaining))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)
