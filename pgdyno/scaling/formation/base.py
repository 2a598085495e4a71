"""The FormationBackend protocol: the one interface scaling code uses to talk to a platform."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from pgdyno.errors import ConfigError

if TYPE_CHECKING:
    from pgdyno.config import Settings


@dataclass(frozen=True)
class Formation:
    """A process type's formation as the platform reports it."""

    process_type: str
    quantity: int
    size: str | None = None
    #: The platform's id for the request that produced this answer (Heroku's Request-Id).
    request_id: str | None = None


class FormationBackend(Protocol):
    """Read and set a process type's quantity (and optionally its dyno size).

    Implementations raise FormationRejected when retrying cannot help (bad token, unknown app
    or type, invalid size) and FormationUnavailable when the platform could not be reached or
    kept failing after retries; callers record the failure and try again on their next tick.
    """

    def get(self, process_type: str) -> Formation: ...

    def scale(self, process_type: str, quantity: int, size: str | None = None) -> Formation: ...


def backend_from_settings(settings: Settings) -> FormationBackend:
    """The Heroku client, configured from HEROKU_API_KEY, HEROKU_APP_NAME, HEROKU_API_URL."""
    from pgdyno.scaling.formation.heroku import HerokuFormation

    missing = [
        name
        for name, value in (
            ("HEROKU_API_KEY", settings.heroku_api_key),
            ("HEROKU_APP_NAME", settings.heroku_app_name),
        )
        if not value
    ]
    if missing:
        raise ConfigError(
            f"{' and '.join(missing)} not set: scaling needs a Heroku API token "
            "(`heroku authorizations:create`, exported as HEROKU_API_KEY) and the app's name "
            "(HEROKU_APP_NAME); `pgdyno dev` sets both for the local platform"
        )
    return HerokuFormation(
        settings.heroku_app_name or "", settings.heroku_api_key or "", settings.heroku_api_url
    )
