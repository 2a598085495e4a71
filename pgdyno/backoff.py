"""Capped exponential backoff with jitter, shared by job retries, reconnects and API calls;
and the retry decision for a failed job."""

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
    return float(min(cap, raw * factor))


def retry_in(
    attempt: int, max_attempts: int, retryable: bool, base: float, cap: float
) -> float | None:
    """Seconds until a failed job's next attempt, or None when it is not retried: the failure
    is permanent, or `attempt` (counting from 1) was its last."""
    if not retryable or attempt >= max_attempts:
        return None
    return delay(attempt, base, cap)
