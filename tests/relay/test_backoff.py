"""The one backoff helper: full jitter under a doubling ceiling, capped, reset on success."""

from __future__ import annotations

import random

import pytest

from broker.backoff import Backoff


def test_each_delay_is_the_seeded_uniform_draw_under_a_doubling_capped_ceiling() -> None:
    backoff = Backoff(0.05, 2.0, random.Random(7))
    replay = random.Random(7)  # the same seed draws the same numbers: the delays are replayable
    ceilings = [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0]
    for ceiling in ceilings:
        assert backoff.ceiling() == pytest.approx(ceiling)
        assert backoff.next_delay() == replay.uniform(0, ceiling)
    assert backoff.failures == len(ceilings)


def test_delays_are_jittered_within_zero_and_the_ceiling() -> None:
    backoff = Backoff(0.25, 5.0, random.Random(1))
    delays = []
    for _ in range(200):
        ceiling = backoff.ceiling()
        delay = backoff.next_delay()
        assert 0 <= delay <= ceiling <= 5.0
        delays.append(delay)
    capped = delays[10:]  # all drawn under the 5 s cap
    assert min(capped) < 1.0 and max(capped) > 4.0  # full jitter spreads over the whole range


def test_reset_starts_again_from_the_base() -> None:
    backoff = Backoff(0.02, 1.0, random.Random(3))
    for _ in range(10):
        backoff.next_delay()
    assert backoff.ceiling() == 1.0
    backoff.reset()
    assert backoff.failures == 0 and backoff.ceiling() == 0.02


def test_a_very_long_outage_stays_at_the_cap() -> None:
    backoff = Backoff(0.05, 2.0, random.Random(5))
    for _ in range(10_000):
        assert backoff.next_delay() <= 2.0
    assert backoff.ceiling() == 2.0


@pytest.mark.parametrize(("base_s", "cap_s"), [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.0)])
def test_bounds_that_cannot_back_off_are_refused(base_s: float, cap_s: float) -> None:
    with pytest.raises(ValueError, match="0 < base_s <= cap_s"):
        Backoff(base_s, cap_s)


async def test_wait_sleeps_the_next_delay() -> None:
    backoff = Backoff(0.001, 0.002, random.Random(9))
    await backoff.wait()
    await backoff.wait()
    assert backoff.failures == 2
