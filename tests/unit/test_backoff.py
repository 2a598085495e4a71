"""Capped exponential backoff with jitter."""

from __future__ import annotations

import random

import pytest

from pgdyno.backoff import delay


class FixedRandom(random.Random):
    """A random source that always draws the same number (the jitter's extremes)."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def random(self) -> float:
        return self.value


def test_delay_doubles_per_attempt_within_the_jitter_band():
    rng = random.Random(7)
    for attempt in range(1, 12):
        nominal = 0.5 * 2 ** (attempt - 1)
        for _ in range(50):
            assert 0.5 * nominal <= delay(attempt, 0.5, 10_000, rng) < 1.5 * nominal


@pytest.mark.parametrize(("draw", "factor"), [(0.0, 0.5), (0.5, 1.0), (0.999, 1.499)])
def test_jitter_scales_the_delay_by_half_to_one_and_a_half(draw, factor):
    assert delay(3, 1.0, 100, FixedRandom(draw)) == pytest.approx(4 * factor)


def test_delay_never_exceeds_the_cap():
    rng = random.Random(1)
    assert all(delay(attempt, 2.0, 60, rng) <= 60 for attempt in range(1, 200))
    assert delay(10, 2.0, 60, FixedRandom(0.999)) == 60


def test_huge_attempt_numbers_do_not_overflow():
    assert delay(10**9, 1.0, 3600, FixedRandom(0.5)) == 3600


def test_attempt_zero_or_less_waits_like_the_first():
    assert delay(0, 2.0, 60, FixedRandom(0.5)) == delay(1, 2.0, 60, FixedRandom(0.5)) == 2.0


def test_two_clients_failing_together_do_not_retry_together():
    assert len({round(delay(4, 1.0, 100), 6) for _ in range(20)}) > 1
