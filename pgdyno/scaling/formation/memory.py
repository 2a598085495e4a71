"""An in-memory formation backend: what the Scaler's and the dispatcher's tests and the
conformance suite scale, in place of a platform."""

from __future__ import annotations

import threading
from collections import deque

from pgdyno.errors import FormationError, FormationRejected
from pgdyno.scaling.formation.base import Formation


class MemoryFormation:
    """Process types held in a dict; every call is recorded in `calls`; `fail_next` scripts
    failures of the next calls."""

    def __init__(self, quantities: dict[str, int] | None = None) -> None:
        self._types: dict[str, Formation] = {
            name: Formation(name, quantity) for name, quantity in (quantities or {}).items()
        }
        self.calls: list[tuple[str, str, int | None, str | None]] = []
        self._lock = threading.Lock()
        self._failures: deque[tuple[FormationError, bool]] = deque()

    def fail_next(self, error: FormationError, *, applied: bool = False) -> None:
        """Raise `error` from the next call; `applied`: a scale takes effect first (the
        platform applied it, its answer was lost)."""
        self._failures.append((error, applied))

    def _scripted(self) -> tuple[FormationError, bool] | None:
        return self._failures.popleft() if self._failures else None

    def get(self, process_type: str) -> Formation:
        with self._lock:
            self.calls.append(("get", process_type, None, None))
            scripted = self._scripted()
            if scripted is not None:
                raise scripted[0]
            return self._find(process_type)

    def scale(self, process_type: str, quantity: int, size: str | None = None) -> Formation:
        with self._lock:
            self.calls.append(("scale", process_type, quantity, size))
            scripted = self._scripted()
            current = self._find(process_type)
            if quantity < 0:
                raise FormationRejected(422, "invalid_params", "quantity must not be negative")
            updated = Formation(process_type, quantity, size or current.size)
            if scripted is None or scripted[1]:
                self._types[process_type] = updated
            if scripted is not None:
                raise scripted[0]
            return updated

    def _find(self, process_type: str) -> Formation:
        try:
            return self._types[process_type]
        except KeyError:
            raise FormationRejected(404, "not_found", "Couldn't find that formation.") from None
