"""Tasks the security tests' workers import (--import attack_tasks, tests/security on the path)."""

from __future__ import annotations

import pgdyno


@pgdyno.task("print_context")
def print_context() -> None:
    """A task that prints its job's context and fails with it, as a careless task might."""
    context = pgdyno.current_job()
    print(f"running with {context!r}", flush=True)
    raise RuntimeError(f"failed in {context!r}")
