"""An in-memory formation backend: what the Scaler's and the dispatcher's tests and the
conformance suite scale, in place of a platform."""

from __future__ import annotations

import threading

from pgdyno.errors import FormationRejected
from pgdyno.scaling.formation.base import Formation


class MemoryFormation:
    """Process types held in a dict; every call is recorded in `calls`."""

    def __init__(self, quantities: dict[str, int] | None = None) -> None:
        self._types: dict[str, Formation] = {
            name: Formation(name, quantity) for name, quantity in (quantities or {}).items()
        }
        self.calls: list[tuple[str, str, int | None, str | None]] = []
        self._lock = threading.Lock()

    def get(self, process_type: str) -> Formation:
        with self._lock:
            self.calls.append(("get", process_type, None, None))
            return self._find(process_type)

    def scale(self, process_type: str, quantity: int, size: str | None = None) -> Formation:
        with self._lock:
            self.calls.append(("scale", process_type, quantity, size))
            current = self._find(process_type)
            if quantity < 0:
                raise FormationRejected(422, "invalid_params", "quantity must not be negative")
            updated = Formation(process_type, quantity, size or current.size)
            self._types[process_type] = updated
            return updated

    def _find(self, process_type: str) -> Formation:
        try:
            return self._types[process_type]
        except KeyError:
            raise FormationRejected(404, "not_found", "Couldn't find that formation.") from None
