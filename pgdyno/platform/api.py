"""A Heroku-compatible Platform API on 127.0.0.1, backed by the local dyno manager.

Enough of api.heroku.com that the real clients work against it (the Heroku CLI's `ps`,
`ps:scale`, `ps:type`, `ps:restart`, `ps:stop`; heroku3; heroku-client; pgdyno's own client):

    GET    /account                                    GET /account/rate-limits
    GET    /apps                                       GET /apps/{app}
    GET    /apps/{app}/formation                       PATCH /apps/{app}/formation  (batch)
    GET    /apps/{app}/formation/{type or id}          PATCH /apps/{app}/formation/{type or id}
    GET    /apps/{app}/dynos                           DELETE /apps/{app}/dynos     (restart all)
    GET    /apps/{app}/dynos/{dyno or id}              DELETE /apps/{app}/dynos/{dyno or id}
    POST   /apps/{app}/dynos/{dyno or id}/actions/stop
    DELETE /apps/{app}/formations/{type}               (restart the type)
    POST   /apps/{app}/formations/{type}/actions/stop

{app} is the app's name or id. Same headers as Heroku (Accept version 3, Bearer or Basic
`:token` auth; Request-Id and RateLimit-Remaining in answers), the reference's JSON shapes
(platform/resources.py) and error bodies ({"id": "not_found", "message": "..."}). A token
bucket, off by default (`set_rate_limit`), answers 429 with Retry-After when it is empty.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import threading
import time
import uuid
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pgdyno.platform.dynos import DynoManager
from pgdyno.platform.resources import ApiError, Resources

#: Heroku's token pool: 4,500 requests, refilled at 4,500 an hour.
RATE_LIMIT = 4500

Route = Callable[["FormationServer", "re.Match[str]", dict[str, Any] | None], tuple[int, Any]]
_ROUTES: list[tuple[str, re.Pattern[str], Route]] = []


def _route(method: str, pattern: str) -> Callable[[Route], Route]:
    def register(handler: Route) -> Route:
        _ROUTES.append((method, re.compile(f"^{pattern}/?$"), handler))
        return handler

    return register


class TokenBucket:
    """`capacity` tokens, refilled at `per_second`; each request takes one."""

    def __init__(self, capacity: int, per_second: float) -> None:
        self.capacity = capacity
        self.per_second = per_second
        self._tokens = float(capacity)
        self._at = time.monotonic()

    def take(self) -> tuple[bool, int, float]:
        """(allowed, tokens left, seconds until the next token)."""
        now = time.monotonic()
        self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.per_second)
        self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True, int(self._tokens), 0.0
        return False, 0, (1 - self._tokens) / self.per_second if self.per_second > 0 else 3600.0


class FormationServer(ThreadingHTTPServer):
    """The HTTP server; `requests` records (wall-clock arrival, method, type, body, status)."""

    daemon_threads = True

    def __init__(self, port: int, app: str, token: str, dynos: DynoManager) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.app = app
        self.token = token
        self.dynos = dynos
        self.resources = Resources(app, dynos, time.time())
        self.requests: list[tuple[float, str, str | None, dict[str, Any] | None, int]] = []
        self._bucket: TokenBucket | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def set_rate_limit(self, capacity: int | None, per_hour: float | None = None) -> None:
        """Answer 429 once `capacity` requests are spent, refilled at `per_hour` (default:
        `capacity`) an hour, as Heroku's pool is; None turns the limit off (the default)."""
        with self._lock:
            self._bucket = (
                None
                if capacity is None
                else TokenBucket(capacity, (capacity if per_hour is None else per_hour) / 3600)
            )

    def take_budget(self) -> tuple[bool, int, float]:
        with self._lock:
            if self._bucket is None:
                return True, RATE_LIMIT, 0.0
            return self._bucket.take()

    def authorized(self, header: str | None) -> bool:
        """Bearer TOKEN, or Basic auth whose password is the token (heroku-client, heroku3)."""
        if not header:
            return False
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer":
            return value.strip() == self.token
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(value.strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return False
            return decoded.partition(":")[2] == self.token
        return False


class _Handler(BaseHTTPRequestHandler):
    server: FormationServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr access log: the platform logs API calls itself."""

    def do_GET(self) -> None:
        self._handle("GET")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def _handle(self, method: str) -> None:
        arrived = time.time()
        body: dict[str, Any] | None = None
        process_type: str | None = None
        extra: dict[str, str] = {}
        allowed, remaining, wait = self.server.take_budget()
        path = self.path.split("?", 1)[0]
        try:
            body = self._read_body()
            if not allowed:
                extra["Retry-After"] = str(max(1, math.ceil(wait)))
                raise ApiError(
                    429,
                    "rate_limit",
                    "Your account reached the API rate limit\n"
                    "Please wait a few minutes before making new requests",
                )
            self._authorize()
            status, payload, process_type = self._dispatch(method, path, body)
        except ApiError as exc:
            status, payload = exc.status, {"id": exc.error_id, "message": exc.message}
        self.server.requests.append((arrived, method, process_type, body, status))
        self._send(HTTPStatus(status), payload, remaining, extra)
        self.server.dynos.event(
            "api",
            method=method,
            path=self.path,
            status=status,
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

    def _authorize(self) -> None:
        if "version=3" not in (self.headers.get("Accept") or ""):
            raise ApiError(
                400,
                "bad_request",
                "Please specify a version: Accept: application/vnd.heroku+json; version=3",
            )
        if not self.server.authorized(self.headers.get("Authorization")):
            raise ApiError(401, "unauthorized", "Invalid credentials provided.")

    def _dispatch(
        self, method: str, path: str, body: dict[str, Any] | None
    ) -> tuple[int, Any, str | None]:
        known_path = False
        for route_method, pattern, handler in _ROUTES:
            match = pattern.match(path)
            if match is None:
                continue
            known_path = True
            if route_method == method:
                if "app" in match.groupdict():
                    self.server.resources.check_app(match["app"])
                status, payload = handler(self.server, match, body)
                return status, payload, match.groupdict().get("type")
        if known_path:
            raise ApiError(405, "method_not_allowed", f"{method} is not allowed on {path}.")
        raise ApiError(404, "not_found", "The requested API endpoint was not found.")

    def _send(
        self, status: HTTPStatus, payload: Any, remaining: int, extra: dict[str, str]
    ) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Request-Id", str(uuid.uuid4()))
        self.send_header("RateLimit-Remaining", str(remaining))
        for key, value in extra.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)


# --- routes --------------------------------------------------------------------------------------

_APP = r"/apps/(?P<app>[^/]+)"


@_route("GET", "/account")
def _account(server: FormationServer, _m: re.Match[str], _b: Any) -> tuple[int, Any]:
    return 200, server.resources.account()


@_route("GET", "/account/rate-limits")
def _rate_limits(server: FormationServer, _m: re.Match[str], _b: Any) -> tuple[int, Any]:
    return 200, {"remaining": server.take_budget()[1]}


@_route("GET", "/apps")
def _apps(server: FormationServer, _m: re.Match[str], _b: Any) -> tuple[int, Any]:
    return 200, [server.resources.app_info()]


@_route("GET", _APP)
def _app(server: FormationServer, _m: re.Match[str], _b: Any) -> tuple[int, Any]:
    return 200, server.resources.app_info()


@_route("GET", _APP + "/formation")
def _formation_list(server: FormationServer, _m: re.Match[str], _b: Any) -> tuple[int, Any]:
    return 200, server.resources.formations()


@_route("PATCH", _APP + "/formation")
def _formation_batch(server: FormationServer, _m: re.Match[str], body: Any) -> tuple[int, Any]:
    changes = server.resources.batch(body or {})
    for process_type, quantity, size in changes:
        _apply(server, process_type, quantity, size)
    return 200, [server.resources.formation(process_type) for process_type, _, _ in changes]


@_route("GET", _APP + "/formation/(?P<type>[^/]+)")
def _formation_info(server: FormationServer, m: re.Match[str], _b: Any) -> tuple[int, Any]:
    return 200, server.resources.formation(server.resources.process_type(m["type"]))


@_route("PATCH", _APP + "/formation/(?P<type>[^/]+)")
def _formation_update(server: FormationServer, m: re.Match[str], body: Any) -> tuple[int, Any]:
    process_type = server.resources.process_type(m["type"])
    quantity, size = server.resources.update(process_type, body or {})
    _apply(server, process_type, quantity, size)
    return 200, server.resources.formation(process_type)


@_route("GET", _APP + "/dynos")
def _dyno_list(server: FormationServer, _m: re.Match[str], _b: Any) -> tuple[int, Any]:
    return 200, [server.resources.dyno_info(dyno) for dyno in server.dynos.dynos()]


@_route("DELETE", _APP + "/dynos")
def _restart_all(server: FormationServer, _m: re.Match[str], _b: Any) -> tuple[int, Any]:
    server.dynos.restart()
    return 202, {}


@_route("GET", _APP + "/dynos/(?P<dyno>[^/]+)")
def _dyno_info(server: FormationServer, m: re.Match[str], _b: Any) -> tuple[int, Any]:
    return 200, server.resources.dyno_info(server.resources.dyno(m["dyno"]))


@_route("DELETE", _APP + "/dynos/(?P<dyno>[^/]+)")
@_route("POST", _APP + "/dynos/(?P<dyno>[^/]+)/actions/stop")
def _restart_dyno(server: FormationServer, m: re.Match[str], _b: Any) -> tuple[int, Any]:
    # A stopped dyno of the formation is started again, as on Heroku: stop = restart here.
    server.dynos.restart(name=server.resources.dyno(m["dyno"]).name)
    return 202, {}


@_route("DELETE", _APP + "/formations/(?P<type>[^/]+)")
@_route("POST", _APP + "/formations/(?P<type>[^/]+)/actions/stop")
def _restart_type(server: FormationServer, m: re.Match[str], _b: Any) -> tuple[int, Any]:
    server.dynos.restart(process_type=server.resources.process_type(m["type"]))
    return 202, {}


def _apply(
    server: FormationServer, process_type: str, quantity: int | None, size: str | None
) -> None:
    current = server.dynos.quantities[process_type]
    server.dynos.scale(process_type, current if quantity is None else quantity, size)
