"""The peak-EWMA round-trip estimate and ``p2c``'s cost (``broker.latency``), sans-IO: the
clock is passed in, providers are plain records."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from broker.latency import DECAY_S, MIN_RTT_S, estimate, observe, p2c
from broker.registry import Registry, ServicePolicy
from tests.support.provider_record import ProviderRecord


def _draw(value: float) -> Callable[[], float]:
    """A stand-in for ``random.random`` that always draws ``value``."""
    return lambda: value


def test_a_slow_answer_raises_the_estimate_at_once() -> None:
    p = ProviderRecord("p")
    observe(p, 0.010, now=1.0)
    observe(p, 0.050, now=1.001)
    assert p.rtt == 0.050 and p.rtt_at == 1.001


def test_a_faster_answer_moves_the_estimate_by_the_time_since_the_last() -> None:
    p = ProviderRecord("p")
    observe(p, 0.050, now=0.0)
    observe(p, 0.010, now=DECAY_S)  # weight dt / (DECAY_S + dt) = 1/2
    assert p.rtt == pytest.approx(0.030)
    observe(p, 0.010, now=DECAY_S)  # no time passed: no weight
    assert p.rtt == pytest.approx(0.030)


def test_the_estimate_decays_on_read_halving_after_the_time_constant() -> None:
    p = ProviderRecord("p")
    observe(p, 0.040, now=5.0)
    assert estimate(p, 5.0) == 0.040
    assert estimate(p, 5.0 + DECAY_S) == pytest.approx(0.020)
    assert p.rtt == 0.040  # reading changes nothing
    assert estimate(ProviderRecord("new"), 5.0) == 0.0


def test_an_answer_within_one_clock_tick_still_counts_as_measured() -> None:
    p = ProviderRecord("p")
    observe(p, 0.0, now=1.0)
    assert p.rtt == MIN_RTT_S


def test_p2c_cost_is_round_trip_times_open_streams_plus_one() -> None:
    fast = ProviderRecord("fast", outstanding=8, rtt=0.002, rtt_at=1.0)
    slow = ProviderRecord("slow", outstanding=0, rtt=0.020, rtt_at=1.0)
    # draw 0.0 gives the pair (fast, slow): 0.002 x 9 < 0.020 x 1
    assert p2c([fast, slow], _draw(0.0), 1.0) is fast
    fast.outstanding = 10  # 0.002 x 11 > 0.020: now the slow one is the shorter wait
    assert p2c([fast, slow], _draw(0.0), 1.0) is slow


def test_p2c_weighs_an_unmeasured_provider_as_the_other_so_loads_decide() -> None:
    new = ProviderRecord("new", outstanding=1)
    slow = ProviderRecord("slow", outstanding=0, rtt=0.5, rtt_at=1.0)
    assert p2c([new, slow], _draw(0.0), 1.0) is slow  # fewer open streams wins, as before latency
    new.outstanding = 0
    assert p2c([new, slow], _draw(0.0), 1.0) is new


def test_p2c_draws_two_distinct_providers() -> None:
    providers = [ProviderRecord(str(i), outstanding=i) for i in range(4)]
    picked = {p2c(providers, _draw(k / 12), 0.0).instance for k in range(12)}
    # each of the 12 ordered pairs once: the busier never wins, so "3" is never chosen
    assert picked == {"0", "1", "2"}


def test_only_providers_of_a_p2c_service_are_sampled() -> None:
    """The relay samples a provider's round trips while its ``measure_rtt`` is set: the
    registry sets it for providers of a ``p2c`` service, whether the policy came first or the
    provider did, and leaves every other provider alone (no cost for them)."""
    registry = Registry()
    registry.set_policy("fast.lane", ServicePolicy(policy="p2c"))
    early, plain = ProviderRecord("early"), ProviderRecord("plain")
    registry.add("fast.lane", early)
    registry.add("plain", plain)
    assert early.measure_rtt and not plain.measure_rtt
    registry.set_policy("plain", ServicePolicy(policy="p2c"))
    assert plain.measure_rtt
