"""The Heroku Platform API formation client (also what talks to `pgdyno dev` locally).

GET/PATCH /apps/{app}/formation/{type}, one HTTP request per call, with a timeout. It never
sleeps and never retries by itself: a caller holds the type's scaling lock during a call, and a
retry loop inside it would hold that lock for as long as the platform makes it wait. Failures
raise instead, and the Scaler records when to try again (pgdyno.formations.not_before):
FormationUnavailable for an unreachable or unanswered platform, a 429 or a 5xx (with the
Retry-After it sent, in seconds, from either of its forms), FormationRejected with what to do
for 401, 403, 404 and 422. The token goes only into the Authorization header: it is never
logged nor put into an error message.
"""

from __future__ import annotations

import contextlib
import logging
import time
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import requests

from pgdyno.errors import FormationRejected, FormationUnavailable
from pgdyno.logfmt import log_event, redact
from pgdyno.scaling.formation.base import Formation

log = logging.getLogger(__name__)

ACCEPT = "application/vnd.heroku+json; version=3"
#: The longest Retry-After honoured, in seconds: Heroku's token pool refills within an hour;
#: a larger figure is a misread header (an epoch time taken for a delay), not a plan.
MAX_RETRY_AFTER_S = 3600.0
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
    ) -> None:
        self.app = app
        self.base_url = base_url.rstrip("/")
        #: (connect, read) seconds: the longest a call (and the lock its caller holds) lasts.
        self.timeout = timeout
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
        """One request; FormationUnavailable or FormationRejected unless it succeeded."""
        url = self.base_url + self._path(process_type)
        what = f"{method} formation {process_type!r} of app {self.app!r}"
        started = time.monotonic()
        try:
            response = self._session.request(method, url, json=body, timeout=self.timeout)
        except requests.RequestException as exc:
            failure = f"{type(exc).__name__}: cannot reach {redact(self.base_url)} or no answer"
            self._log(method, process_type, None, started, error=failure)
            raise FormationUnavailable(f"{what} failed ({failure})") from None
        retry_after = retry_after_s(
            response.headers.get("Retry-After"), response.headers.get("Date")
        )
        self._log(method, process_type, response, started, retry_after=retry_after)
        if response.ok:
            return response
        if response.status_code != 429 and response.status_code < 500:
            raise self._rejected(response)
        failure = f"{response.status_code} {_error_id(response)}"
        if retry_after is not None:
            failure += f", Retry-After {retry_after:.0f}s"
        raise FormationUnavailable(f"{what} failed ({failure})", retry_after)

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
        response: requests.Response | None,
        started: float,
        error: str = "",
        retry_after: float | None = None,
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
            request_id=response.headers.get("Request-Id") if response is not None else None,
            ratelimit_remaining=(
                response.headers.get("RateLimit-Remaining") if response is not None else None
            ),
            retry_after_s=None if retry_after is None else round(retry_after, 1),
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


def retry_after_s(
    value: str | None, date: str | None = None, now: datetime | None = None
) -> float | None:
    """Seconds to wait from a Retry-After header, in either of its forms (RFC 9110): a number
    of seconds ("60") or an HTTP-date ("Mon, 30 Nov 2026 19:30:14 GMT"), counted from the
    answer's Date header when there is one (the server's clock, so a skewed local clock does
    not matter), else from `now`. None when absent or unreadable; at most MAX_RETRY_AFTER_S.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            until = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        reference = now or datetime.now(UTC)
        if date:
            with contextlib.suppress(TypeError, ValueError):
                reference = parsedate_to_datetime(date)
        if until.tzinfo is None:
            until = until.replace(tzinfo=UTC)
        if reference.tzinfo is None:
            reference = reference.replace(tzinfo=UTC)
        seconds = (until - reference).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)
