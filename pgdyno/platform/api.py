"""A Heroku-compatible formation API on 127.0.0.1, backed by the local dyno manager.

Same endpoints (GET /apps/{app}/formation, GET and PATCH /apps/{app}/formation/{type}), same
headers (Accept version 3, Bearer token; Request-Id and RateLimit-Remaining in answers), same
JSON shapes and error bodies ({"id": "not_found", "message": "..."}), so the Heroku client
that runs in production is what runs here.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pgdyno.platform.dynos import DynoManager

_PATH = re.compile(r"^/apps/([^/]+)/formation(?:/([^/]+))?/?$")
RATE_LIMIT = 4500


class ApiError(Exception):
    def __init__(self, status: int, error_id: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_id = error_id
        self.message = message


class FormationServer(ThreadingHTTPServer):
    """The HTTP server; `requests` records (wall-clock arrival, method, type, body, status)."""

    daemon_threads = True

    def __init__(self, port: int, app: str, token: str, dynos: DynoManager) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.app = app
        self.token = token
        self.dynos = dynos
        self.ids = {name: str(uuid.uuid4()) for name in dynos.commands}
        self.created_at = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        self.requests: list[tuple[float, str, str | None, dict[str, Any] | None, int]] = []
        self._remaining = RATE_LIMIT
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def take_budget(self) -> int:
        with self._lock:
            self._remaining = max(self._remaining - 1, 0)
            return self._remaining

    def formation(self, process_type: str) -> dict[str, Any]:
        size = self.dynos.sizes[process_type]
        return {
            "app": {"id": self.ids.get("__app__", self.app), "name": self.app},
            "command": self.dynos.commands[process_type],
            "created_at": self.created_at,
            "dyno_size": {"id": self.ids[process_type], "name": size},
            "id": self.ids[process_type],
            "quantity": self.dynos.quantities[process_type],
            "size": size,
            "type": process_type,
            "updated_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        }


class _Handler(BaseHTTPRequestHandler):
    server: FormationServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr access log: the platform logs API calls itself."""

    def do_GET(self) -> None:
        self._handle("GET")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def _handle(self, method: str) -> None:
        arrived = time.time()
        process_type: str | None = None
        body: dict[str, Any] | None = None
        try:
            body = self._read_body()
            process_type = self._authorize_and_route()
            payload = self._dispatch(method, process_type, body)
            status = HTTPStatus.OK
        except ApiError as exc:
            status, payload = HTTPStatus(exc.status), {"id": exc.error_id, "message": exc.message}
        self.server.requests.append((arrived, method, process_type, body, int(status)))
        self._send(status, payload)
        self.server.dynos.event(
            "api",
            method=method,
            path=self.path,
            status=int(status),
            body=json.dumps(body) if body else None,
        )

    def _read_body(self) -> dict[str, Any] | None:
        length = int(self.headers.get("Content-Length") or 0)
        if not length:
            return None
        try:
            body = json.loads(self.rfile.read(length))
        except ValueError:
            raise ApiError(400, "bad_request", "Request body is not valid JSON.") from None
        if not isinstance(body, dict):
            raise ApiError(422, "invalid_params", "Request body must be a JSON object.")
        return body

    def _authorize_and_route(self) -> str | None:
        if "version=3" not in (self.headers.get("Accept") or ""):
            raise ApiError(
                400,
                "bad_request",
                "Please specify a version: Accept: application/vnd.heroku+json; version=3",
            )
        if self.headers.get("Authorization") != f"Bearer {self.server.token}":
            raise ApiError(401, "unauthorized", "Invalid credentials provided.")
        match = _PATH.match(self.path)
        if not match:
            raise ApiError(404, "not_found", "The requested API endpoint was not found.")
        app, process_type = match.groups()
        if app != self.server.app:
            raise ApiError(404, "not_found", "Couldn't find that app.")
        if process_type is not None and process_type not in self.server.dynos.commands:
            raise ApiError(404, "not_found", "Couldn't find that formation.")
        return process_type

    def _dispatch(self, method: str, process_type: str | None, body: dict[str, Any] | None) -> Any:
        if process_type is None:
            if method != "GET":
                raise ApiError(405, "method_not_allowed", "Use PATCH on a single process type.")
            return [self.server.formation(name) for name in self.server.dynos.commands]
        if method == "PATCH":
            quantity, size = _parse_update(body or {})
            self.server.dynos.scale(
                process_type,
                self.server.dynos.quantities[process_type] if quantity is None else quantity,
                size,
            )
        return self.server.formation(process_type)

    def _send(self, status: HTTPStatus, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Request-Id", str(uuid.uuid4()))
        self.send_header("RateLimit-Remaining", str(self.server.take_budget()))
        self.end_headers()
        self.wfile.write(data)


def _parse_update(body: dict[str, Any]) -> tuple[int | None, str | None]:
    unknown = set(body) - {"quantity", "size", "dyno_size"}
    if unknown:
        raise ApiError(422, "invalid_params", f"Unknown attributes: {', '.join(sorted(unknown))}.")
    quantity = body.get("quantity")
    if quantity is not None and (
        not isinstance(quantity, int)
        or isinstance(quantity, bool)
        or quantity < 0
        or quantity > 100
    ):
        raise ApiError(422, "invalid_params", "Quantity must be an integer between 0 and 100.")
    size = body.get("size")
    dyno_size = body.get("dyno_size")
    if dyno_size is not None:
        if not isinstance(dyno_size, dict) or not isinstance(dyno_size.get("name"), str):
            raise ApiError(422, "invalid_params", 'dyno_size must be {"name": "<size>"}.')
        size = dyno_size["name"]
    if size is not None and not isinstance(size, str):
        raise ApiError(422, "invalid_params", "Size must be a string.")
    return quantity, size
