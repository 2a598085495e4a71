"""The FormationBackend protocol: the one interface scaling code uses to talk to a platform.

Implementations: formation/heroku.py (the Heroku Platform API, and `pgdyno dev`'s local one),
formation/memory.py (in memory, for tests)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


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
