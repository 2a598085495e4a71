"""Capped exponential backoff with jitter, shared by job retries, reconnects and API calls."""

from __future__ import annotations

import random


def delay(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Seconds to wait before try number `attempt` + 1 (attempt counts from 1).

    base * 2**(attempt-1), capped, then scaled by a random factor in [0.5, 1.5) so that many
    clients failing together do not retry together; never above `cap`.
    """
    exponent = min(max(attempt - 1, 0), 60)
    raw = min(cap, base * (2**exponent))
    factor = 0.5 + (rng or random).random()
    return min(cap, raw * factor)
