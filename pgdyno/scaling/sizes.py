"""Heroku dyno sizes: which names the Platform API accepts, in their canonical spelling.

Checked when the dispatcher starts (a `--scale ...,size=` rule) and by the local platform,
which answers an unknown size as Heroku does (422 invalid_params). Names are compared
case-insensitively, as Heroku does. Sources: the Dev Center's dyno-types page and the sizes the
Heroku CLI knows (`heroku ps:type`), Cedar and Fir generations.
"""

from __future__ import annotations

import re

from pgdyno.errors import ConfigError

#: Cedar-generation sizes (Common Runtime, Private and Shield Spaces).
CEDAR = (
    "Eco",
    "Basic",
    "Standard-1X",
    "Standard-2X",
    "Performance-M",
    "Performance-L",
    "Performance-L-RAM",
    "Performance-XL",
    "Performance-2XL",
    "Private-S",
    "Private-M",
    "Private-L",
    "Private-L-RAM",
    "Private-XL",
    "Private-2XL",
    "Shield-S",
    "Shield-M",
    "Shield-L",
    "Shield-L-RAM",
    "Shield-XL",
    "Shield-2XL",
)
#: Fir-generation sizes are named by vCPUs and memory: dyno-1c-0.5gb, dyno-2c-8gb, ...
FIR = re.compile(r"^dyno-(\d+)c-(\d+(?:\.\d+)?)gb$", re.IGNORECASE)
#: Sizes that run at most one dyno per process type.
SINGLE = ("Eco", "Basic")
#: Names Heroku retired or renamed: what to write instead.
RENAMED = {
    "1x": "Standard-1X",
    "2x": "Standard-2X",
    "px": "Performance-M or Performance-L",
    "performance": "Performance-M or Performance-L",
    "free": "Eco",
    "hobby": "Basic",
}
_CANONICAL = {name.lower(): name for name in CEDAR}


def canonical(name: str) -> str | None:
    """The size's canonical name (`performance-l` -> `Performance-L`, `DYNO-2C-8GB` ->
    `dyno-2c-8gb`), or None when Heroku has no such size."""
    key = name.strip().lower()
    if key in _CANONICAL:
        return _CANONICAL[key]
    return key if FIR.match(key) else None


def known_sizes() -> str:
    """The accepted names, for messages."""
    return ", ".join(CEDAR) + " (Cedar) or dyno-<N>c-<M>gb such as dyno-2c-8gb (Fir)"


def validate(name: str, max_quantity: int = 1) -> str:
    """The canonical name of a rule's size; ConfigError saying what to write otherwise."""
    found = canonical(name)
    if found is None:
        renamed = RENAMED.get(name.strip().lower())
        hint = f" (Heroku renamed it: write {renamed})" if renamed else ""
        raise ConfigError(f"size={name!r} is not a Heroku dyno size{hint}; use {known_sizes()}")
    if found in SINGLE and max_quantity > 1:
        raise ConfigError(
            f"size={found} runs at most one dyno per process type on Heroku, but the rule "
            f"asks for max={max_quantity}: use Standard-1X or larger, or max=1"
        )
    return found
