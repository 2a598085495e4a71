"""Who may see the dashboard and how actions are protected.

- A credential: PGDYNO_WEB_PASSWORD (HTTP Basic, any user name) and/or PGDYNO_WEB_TOKEN
  (`Authorization: Bearer TOKEN`, for Prometheus and scripts). When one is set every request
  needs it; a wrong or missing one gets 401.
- Bound to anything but loopback, the dashboard refuses to start without a credential
  (`check_bind`); the importable app for a web dyno always needs one (see app.py).
- Actions (retry and cancel a job, pause and resume a queue or a schedule) are POST only, and
  need the double-submit CSRF token (a random cookie, SameSite=Strict, repeated in the form)
  and a same-origin request (Sec-Fetch-Site / Origin), so another site can neither forge nor
  replay them.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from pgdyno.errors import ConfigError

CSRF_COOKIE = "pgdyno_csrf"
CSRF_FIELD = "csrf"


@dataclass(frozen=True)
class Credentials:
    """The dashboard's credential; both None means no authentication (loopback only)."""

    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Credentials:
        env = os.environ if environ is None else environ
        return cls(env.get("PGDYNO_WEB_PASSWORD") or None, env.get("PGDYNO_WEB_TOKEN") or None)

    @property
    def required(self) -> bool:
        return bool(self.password or self.token)

    def accepts(self, authorization: str | None) -> bool:
        """Whether an Authorization header value carries the credential (constant time)."""
        if not self.required:
            return True
        scheme, _, value = (authorization or "").partition(" ")
        scheme, value = scheme.lower(), value.strip()
        if scheme == "bearer" and self.token:
            return hmac.compare_digest(value.encode(), self.token.encode())
        if scheme == "basic" and self.password:
            try:
                decoded = base64.b64decode(value, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return False
            _user, sep, password = decoded.partition(":")
            return bool(sep) and hmac.compare_digest(password.encode(), self.password.encode())
        return False


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and localhost; anything else (0.0.0.0, a LAN address) is not."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, credentials: Credentials) -> None:
    """ConfigError unless `host` is loopback or a credential is set."""
    if not is_loopback(host) and not credentials.required:
        raise ConfigError(
            f"refusing to serve the dashboard on {host} without a credential: set "
            "PGDYNO_WEB_PASSWORD (HTTP Basic) or PGDYNO_WEB_TOKEN (bearer), or bind to "
            "127.0.0.1"
        )


def new_csrf_token() -> str:
    return secrets.token_urlsafe(24)


def csrf_ok(cookie: str | None, submitted: str | None) -> bool:
    return bool(cookie and submitted) and hmac.compare_digest(
        str(cookie).encode(), str(submitted).encode()
    )


def same_origin(headers: Mapping[str, str], host: str) -> bool:
    """False when the browser says the request comes from another site."""
    site = headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = headers.get("Origin")
    if origin is not None and origin != "null":
        return urlsplit(origin).netloc == host
    return origin != "null"
