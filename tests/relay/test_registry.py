"""The registry's pick policies as pure logic (no sockets): exact shares, leases, removal.

The providers are plain records with the fields ``broker.registry.Provider`` names.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from broker.registry import Registry, ServicePolicy

PROPS = settings(max_examples=100, deadline=None)


@dataclass(eq=False)
class P:
    instance: str
    weight: int = 1
    outstanding: int = 0
    lease_enabled: bool = False
    lease_remaining: int = 0
    lease_expires: float = 0.0
    is_remote: bool = False
    available: bool = True


def _registry(policy: str, providers: list[P], weights: dict[str, int] | None = None) -> Registry:
    registry = Registry()
    registry.set_policy("svc", ServicePolicy(policy=policy, weights=weights or {}))
    for p in providers:
        registry.add("svc", p)
    return registry


def _picks(registry: Registry, n: int, now: float = 0.0) -> list[str]:
    out = []
    for _ in range(n):
        chosen, why = registry.pick("svc", now)
        assert chosen is not None, why
        out.append(chosen.instance)  # type: ignore[attr-defined]
    return out


@PROPS
@given(st.lists(st.integers(1, 10), min_size=1, max_size=5), st.integers(1, 4))
def test_weighted_gives_exact_shares_in_every_cycle(weights: list[int], cycles: int) -> None:
    providers = [P(f"p{i}", weight=w) for i, w in enumerate(weights)]
    registry = _registry("weighted", providers)
    total = sum(weights)
    picks = _picks(registry, total * cycles)
    for c in range(cycles):  # smooth: every cycle of sum(weights) picks holds the exact shares
        counts = collections.Counter(picks[c * total : (c + 1) * total])
        assert counts == {f"p{i}": w for i, w in enumerate(weights)}


@PROPS
@given(st.lists(st.integers(0, 5), min_size=2, max_size=4))
def test_configured_weights_override_registered_ones(weights: list[int]) -> None:
    providers = [P(f"p{i}", weight=99) for i in range(len(weights))]
    registry = _registry("weighted", providers, {f"p{i}": w for i, w in enumerate(weights)})
    total = sum(weights)
    if total == 0:
        return
    counts = collections.Counter(_picks(registry, total * 2))
    assert counts == {f"p{i}": 2 * w for i, w in enumerate(weights) if w}


@PROPS
@given(st.integers(2, 6), st.integers(1, 5))
def test_round_robin_takes_turns(n: int, rounds: int) -> None:
    registry = _registry("round_robin", [P(f"p{i}", weight=i + 1) for i in range(n)])
    picks = _picks(registry, n * rounds)
    assert collections.Counter(picks) == {f"p{i}": rounds for i in range(n)}
    assert all(picks[i] != picks[i + 1] for i in range(len(picks) - 1))


@PROPS
@given(st.lists(st.integers(0, 5), min_size=2, max_size=5))
def test_least_outstanding_picks_a_least_loaded_provider_and_shares_ties(loads: list[int]) -> None:
    providers = [P(f"p{i}", outstanding=o) for i, o in enumerate(loads)]
    registry = _registry("least_outstanding", providers)
    low = min(loads)
    tied = {f"p{i}" for i, o in enumerate(loads) if o == low}
    picks = _picks(registry, 2 * len(tied))
    assert set(picks) == tied and collections.Counter(picks) == {name: 2 for name in tied}


def test_leases_bound_the_picks() -> None:
    leased = P("leased", lease_enabled=True, lease_remaining=2, lease_expires=10.0)
    registry = _registry("round_robin", [leased])
    assert _picks(registry, 2, now=1.0) == ["leased", "leased"]
    chosen, why = registry.pick("svc", 1.0)
    assert chosen is None and "holds a lease with requests left" in why
    leased.lease_remaining = 5
    chosen, why = registry.pick("svc", 10.0)  # expired
    assert chosen is None and why.startswith("no provider for service 'svc'")


def test_providers_without_a_lease_are_skipped_not_refused() -> None:
    empty = P("empty", lease_enabled=True, lease_remaining=0, lease_expires=10.0)
    plain = P("plain")
    registry = _registry("round_robin", [empty, plain])
    assert _picks(registry, 3, now=1.0) == ["plain"] * 3


def test_removed_providers_are_never_picked_and_the_last_removal_forgets_the_service() -> None:
    a, b = P("a", weight=3), P("b", weight=1)
    registry = _registry("weighted", [a, b])
    _picks(registry, 3)
    registry.remove("svc", a)
    assert _picks(registry, 4) == ["b"] * 4
    registry.remove("svc", b)
    chosen, why = registry.pick("svc", 0.0)
    assert chosen is None and why == "no provider for service 'svc'"
    assert registry.services() == {}


def test_remote_providers_only_when_no_local_one_under_prefer_local() -> None:
    local, remote = P("local"), P("remote", is_remote=True)
    registry = _registry("round_robin", [remote, local])
    assert _picks(registry, 3) == ["local"] * 3
    registry.remove("svc", local)
    assert _picks(registry, 2) == ["remote"] * 2
    chosen, why = registry.pick("svc", 0.0, local_only=True)
    assert chosen is None and "on this node" in why


def test_weight_zero_drains_an_instance_while_others_have_weight() -> None:
    providers = [P("a"), P("drained"), P("c")]
    registry = _registry("weighted", providers, weights={"a": 3, "drained": 0, "c": 1})
    counts = collections.Counter(_picks(registry, 40))
    assert counts == {"a": 30, "c": 10}


def test_all_weights_zero_share_equally_rather_than_refuse() -> None:
    providers = [P("a"), P("b")]
    registry = _registry("weighted", providers, weights={"a": 0, "b": 0})
    assert collections.Counter(_picks(registry, 10)) == {"a": 5, "b": 5}
