"""The Heroku Platform API formation client (also what talks to `pgdyno dev` locally).

GET/PATCH /apps/{app}/formation/{type}. Every call has a timeout. 429, 5xx and connection
errors are retried with capped exponential backoff and jitter, honouring Retry-After; 401, 403,
404 and 422 are not retried and raise FormationRejected with what to do. The token goes only
into the Authorization header: it is never logged nor put into an error message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import requests

from pgdyno import backoff
from pgdyno.errors import FormationRejected, FormationUnavailable
from pgdyno.logfmt import log_event, redact
from pgdyno.scaling.formation.base import Formation

log = logging.getLogger(__name__)

ACCEPT = "application/vnd.heroku+json; version=3"
_HINTS = {
    401: "the API token was refused: check HEROKU_API_KEY (create a long-lived one with "
    "`heroku authorizations:create`)",
    403: "the token's account may not scale this app: give it the operate permission",
    404: "check HEROKU_APP_NAME and that the process type is in the app's Procfile",
    422: "check the --scale rule (dyno size name, quantity limits of the app's tier)",
}


class HerokuFormation:
    """FormationBackend over the Heroku Platform API, with one requests.Session."""

    def __init__(
        self,
        app: str,
        token: str,
        base_url: str = "https://api.heroku.com",
        *,
        timeout: tuple[float, float] = (5.0, 15.0),
        max_attempts: int = 5,
        backoff_base: float = 0.5,
        backoff_cap: float = 8.0,
        max_wait: float = 10.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.app = app
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        #: Longest single wait; a longer Retry-After ends the call (the next reconcile retries)
        #: rather than hold the type's scaling lock for minutes.
        self.max_wait = max_wait
        self._sleep = sleep
        self._session = requests.Session()
        self._session.headers.update(
            {
                "Accept": ACCEPT,
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/json",
                "User-Agent": "pgdyno",
            }
        )

    def __repr__(self) -> str:  # the session holds the token: keep it out of reprs
        return f"HerokuFormation(app={self.app!r}, base_url={redact(self.base_url)!r})"

    def get(self, process_type: str) -> Formation:
        return self._formation(self._call("GET", process_type, None))

    def scale(self, process_type: str, quantity: int, size: str | None = None) -> Formation:
        body: dict[str, Any] = {"quantity": quantity}
        if size:
            body["dyno_size"] = {"name": size}
        return self._formation(self._call("PATCH", process_type, body))

    def close(self) -> None:
        self._session.close()

    # --- internals -----------------------------------------------------------------------------

    def _path(self, process_type: str) -> str:
        return f"/apps/{quote(self.app, safe='')}/formation/{quote(process_type, safe='')}"

    def _call(
        self, method: str, process_type: str, body: dict[str, Any] | None
    ) -> requests.Response:
        url = self.base_url + self._path(process_type)
        for attempt in range(1, self.max_attempts + 1):
            started = time.monotonic()
            try:
                response = self._session.request(method, url, json=body, timeout=self.timeout)
            except requests.RequestException as exc:
                # redact: HEROKU_API_URL may carry credentials (https://user:pass@host).
                failure = f"{type(exc).__name__}: cannot reach {redact(self.base_url)}"
                wait = backoff.delay(attempt, self.backoff_base, self.backoff_cap)
                self._log(method, process_type, attempt, None, started, error=failure)
            else:
                self._log(method, process_type, attempt, response, started)
                if response.ok:
                    return response
                if response.status_code != 429 and response.status_code < 500:
                    raise self._rejected(response)
                failure = f"{response.status_code} {_error_id(response)}"
                wait = _retry_after(response) or backoff.delay(
                    attempt, self.backoff_base, self.backoff_cap
                )
            if attempt == self.max_attempts or wait > self.max_wait:
                failure += f", retry after {wait:.1f}s" if wait > self.max_wait else ""
                break
            self._sleep(wait)
        raise FormationUnavailable(
            f"{method} formation {process_type!r} of app {self.app!r} failed after "
            f"{attempt} attempt(s) ({failure}); the next reconcile tries again"
        )

    def _rejected(self, response: requests.Response) -> FormationRejected:
        payload = _json(response)
        return FormationRejected(
            response.status_code,
            str(payload.get("id") or "error"),
            str(payload.get("message") or response.reason or "request refused"),
            _HINTS.get(response.status_code, ""),
        )

    def _formation(self, response: requests.Response) -> Formation:
        payload = _json(response)
        size = (payload.get("dyno_size") or {}).get("name") or payload.get("size")
        return Formation(
            str(payload.get("type")),
            int(payload.get("quantity", 0)),
            size,
            response.headers.get("Request-Id"),
        )

    def _log(
        self,
        method: str,
        process_type: str,
        attempt: int,
        response: requests.Response | None,
        started: float,
        error: str = "",
    ) -> None:
        status = response.status_code if response is not None else None
        failed = response is None or not response.ok
        log_event(
            log,
            "formation_api",
            logging.WARNING if failed else logging.INFO,
            method=method,
            app=self.app,
            type=process_type,
            status=status,
            attempt=attempt,
            request_id=response.headers.get("Request-Id") if response is not None else None,
            ratelimit_remaining=(
                response.headers.get("RateLimit-Remaining") if response is not None else None
            ),
            duration_ms=round((time.monotonic() - started) * 1000, 1),
            error=error or None,
        )


def _json(response: requests.Response) -> dict[str, Any]:
    try:
        payload = response.json()
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}


def _error_id(response: requests.Response) -> str:
    return str(_json(response).get("id") or response.reason or "error")


def _retry_after(response: requests.Response) -> float | None:
    """Seconds from a Retry-After header (delta-seconds form), if any."""
    value = response.headers.get("Retry-After")
    try:
        return max(float(value), 0.0) if value is not None else None
    except ValueError:
        return None
