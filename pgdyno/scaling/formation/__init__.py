"""Formation backends: read and set how many dynos of a process type run.

- `base.py`: the `FormationBackend` protocol and the `Formation` it returns;
- `heroku.py`: the Heroku Platform API client (also what talks to `pgdyno dev` locally);
- `memory.py`: `MemoryFormation`, in memory, for tests of the scaler and the conformance suite.

`backend_from_settings` is the factory the commands call.
"""

from __future__ import annotations

from pgdyno.config import Settings
from pgdyno.errors import ConfigError
from pgdyno.scaling.formation.base import Formation, FormationBackend
from pgdyno.scaling.formation.heroku import HerokuFormation

__all__ = ["Formation", "FormationBackend", "backend_from_settings"]


def backend_from_settings(settings: Settings) -> FormationBackend:
    """The Heroku client, configured from HEROKU_API_KEY, HEROKU_APP_NAME, HEROKU_API_URL."""
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
