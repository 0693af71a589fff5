"""p2c, outlier ejection and canary routing in the registry, as pure logic (no sockets).

The providers are plain records with the fields ``broker.registry.Provider`` names; the
clock is passed in, so ejection intervals are exact.
"""

from __future__ import annotations

import collections
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker import metadata as md
from broker.canary import request_tags
from broker.outlier import OutlierPolicy
from broker.registry import Registry, ServicePolicy
from tests.support.provider_record import ProviderRecord


P = ProviderRecord


def _registry(providers: list[P], **policy: object) -> Registry:
    registry = Registry(seed=7)
    registry.set_policy("svc", ServicePolicy.from_obj(policy))
    for p in providers:
        registry.add("svc", p)
    return registry


def _pick(registry: Registry, now: float = 0.0, metadata: bytes = b"", mime: str = md.COMPOSITE_MIME) -> P:
    chosen, why = registry.pick("svc", now, False, metadata, mime)
    assert chosen is not None, why
    return chosen  # type: ignore[return-value]


# -- p2c ------------------------------------------------------------------------------------


def test_p2c_never_picks_the_busiest_of_three() -> None:
    """Of any two distinct providers the less loaded wins, so the busiest is never chosen."""
    busy, mid, idle = P("busy", 50), P("mid", 5), P("idle", 0)
    registry = _registry([busy, mid, idle], policy="p2c")
    counts = collections.Counter(_pick(registry).instance for _ in range(300))
    assert counts["busy"] == 0
    assert counts["idle"] > counts["mid"] > 0  # idle wins both pairs it is in, mid one


def test_p2c_shares_equal_providers() -> None:
    providers = [P(f"p{i}") for i in range(4)]
    registry = _registry(providers, policy="p2c")
    counts = collections.Counter(_pick(registry).instance for _ in range(400))
    assert set(counts) == {"p0", "p1", "p2", "p3"}
    assert min(counts.values()) > 40  # 100 each on average


def test_p2c_is_a_known_policy_and_unknown_ones_are_named() -> None:
    assert ServicePolicy.from_obj({"policy": "p2c"}).policy == "p2c"
    with pytest.raises(ValueError, match="p2c"):
        ServicePolicy.from_obj({"policy": "random"})


# -- outlier ejection ---------------------------------------------------------------------------

OUTLIER = {"consecutive_errors": 3, "base_ejection_ms": 1000, "max_ejection_ms": 2500, "max_ejection_percent": 50}


def _fail(registry: Registry, p: P, now: float, times: int = 1) -> bool:
    ejected = False
    for _ in range(times):
        p.failures += 1
        ejected = registry.provider_failed("svc", p, now)
    return ejected


def test_consecutive_errors_eject_for_a_growing_capped_interval() -> None:
    bad, good = P("bad"), P("good")
    registry = _registry([bad, good], policy="round_robin", outlier=OUTLIER)
    assert not _fail(registry, bad, 0.0, 2)
    assert _fail(registry, bad, 0.0)  # the third in a row
    assert registry.ejections["svc"] == 1
    assert {_pick(registry, 0.5).instance for _ in range(6)} == {"good"}
    # after 1 s it is half-open: one probe while it has no open stream
    assert "bad" in {_pick(registry, 1.0).instance for _ in range(2)}
    assert _fail(registry, bad, 1.0)  # the probe failed: out again, for 2 x 1 s
    assert registry.ejected("svc", bad, 2.99)
    assert not registry.ejected("svc", bad, 3.01)
    assert "bad" in {_pick(registry, 3.01).instance for _ in range(2)}
    assert _fail(registry, bad, 3.01)  # third ejection: 3 s, capped at 2.5 s
    assert registry.ejected("svc", bad, 3.01 + 2.4)
    assert not registry.ejected("svc", bad, 3.01 + 2.51)
    assert registry.ejections["svc"] == 3


def test_a_successful_probe_closes_the_circuit() -> None:
    bad, good = P("bad"), P("good")
    registry = _registry([bad, good], policy="round_robin", outlier=OUTLIER)
    _fail(registry, bad, 0.0, 3)
    assert "bad" in {_pick(registry, 1.5).instance for _ in range(2)}
    registry.provider_ok(bad, ["svc"])
    assert bad.failures == 0
    assert not _fail(registry, bad, 1.6)  # one error after healing is not enough any more
    assert collections.Counter(_pick(registry, 1.6).instance for _ in range(4)) == {"bad": 2, "good": 2}


def test_half_open_allows_one_probe_at_a_time() -> None:
    bad, good = P("bad"), P("good")
    registry = _registry([bad, good], policy="round_robin", outlier=OUTLIER)
    _fail(registry, bad, 0.0, 3)
    bad.outstanding = 1  # the probe is under way
    assert {_pick(registry, 1.5).instance for _ in range(6)} == {"good"}


def test_max_ejection_percent_keeps_providers_in() -> None:
    providers = [P(f"p{i}") for i in range(4)]
    registry = _registry(providers, outlier=OUTLIER)  # 50 % of 4: two at most
    assert [_fail(registry, p, 0.0, 3) for p in providers] == [True, True, False, False]
    lone = _registry([P("a"), P("b")], outlier={**OUTLIER, "max_ejection_percent": 100})
    a, b = lone.providers("svc")
    assert _fail(lone, a, 0.0, 3) and not _fail(lone, b, 0.0, 3)  # never all of them


def test_no_outlier_policy_means_no_ejection() -> None:
    bad, good = P("bad"), P("good")
    registry = _registry([bad, good])
    assert not _fail(registry, bad, 0.0, 100)
    assert registry.ejections["svc"] == 0


@pytest.mark.parametrize(
    "outlier, message",
    [
        ({"consecutive_errors": 0}, "'outlier.consecutive_errors' must be an integer >= 1"),
        ({"max_ejection_percent": 101}, "'outlier.max_ejection_percent' must be an integer from 0 to 100"),
        ({"base_ejection_ms": True}, "'outlier.base_ejection_ms' must be an integer >= 1"),
        ({"base_ejection_ms": 10, "max_ejection_ms": 5}, "must not be less than"),
        ({"interval": 1}, "unknown 'outlier' field"),
        ([], "'outlier' must be an object"),
    ],
)
def test_outlier_policy_errors_name_the_field(outlier: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ServicePolicy.from_obj({"outlier": outlier})


def test_outlier_defaults() -> None:
    assert ServicePolicy.from_obj({"outlier": {}}).outlier == OutlierPolicy(5, 30_000, 300_000, 10)


# -- canary -------------------------------------------------------------------------------------

CANARY = {"tags": {"version": "2"}, "header": {"canary": "1"}}


def _tags_entry(tags: dict[str, str]) -> bytes:
    return md.composite_entry(md.ROUTING_MIME, bytes([5]) + b"svc.m") + md.composite_entry(
        "message/x.rsbroker.tags.v0", json.dumps(tags).encode()
    )


def test_tagged_requests_go_to_the_canary_and_the_rest_never() -> None:
    v1a, v1b, v2 = P("v1a"), P("v1b"), P("v2", tags={"version": "2"})
    registry = _registry([v1a, v1b, v2], canary=CANARY)
    tagged = _tags_entry({"canary": "1"})
    plain = _tags_entry({"canary": "0"})
    assert {_pick(registry, metadata=tagged).instance for _ in range(10)} == {"v2"}
    assert {_pick(registry, metadata=plain).instance for _ in range(10)} == {"v1a", "v1b"}
    assert registry.canary_requests["svc"] == 10


def test_a_routing_tag_selects_the_canary_too() -> None:
    v1, v2 = P("v1"), P("v2", tags={"version": "2"})
    registry = _registry([v1, v2], canary=CANARY)
    routing = bytes([5]) + b"svc.m" + bytes([8]) + b"canary=1"
    assert _pick(registry, metadata=routing, mime=md.ROUTING_MIME).instance == "v2"
    assert request_tags(md.composite_entry(md.ROUTING_MIME, routing), md.COMPOSITE_MIME) == {"canary": "1"}


def test_a_canary_on_another_node_wins_over_prefer_local() -> None:
    local_v1, remote_v2 = P("v1"), P("v2", tags={"version": "2"}, is_remote=True)
    registry = _registry([local_v1, remote_v2], canary=CANARY)  # prefer_local is on by default
    assert {_pick(registry, metadata=_tags_entry({"canary": "1"})).instance for _ in range(5)} == {"v2"}
    assert {_pick(registry).instance for _ in range(5)} == {"v1"}
    # a request that came over a link stays on this node, canary or not
    chosen, _ = registry.pick("svc", 0.0, True, _tags_entry({"canary": "1"}), md.COMPOSITE_MIME)
    assert chosen is local_v1


def test_percent_sends_about_that_share() -> None:
    v1, v2 = P("v1"), P("v2", tags={"version": "2"})
    registry = _registry([v1, v2], canary={"tags": {"version": "2"}, "percent": 10})
    counts = collections.Counter(_pick(registry).instance for _ in range(2000))
    assert 120 <= counts["v2"] <= 280  # mean 200, sd 13.4: ±6 sd


def test_no_canary_provider_means_no_split() -> None:
    registry = _registry([P("a"), P("b")], canary=CANARY)
    assert {_pick(registry, metadata=_tags_entry({"canary": "1"})).instance for _ in range(4)} == {"a", "b"}


def test_unreadable_tags_are_no_tags() -> None:
    broken = md.composite_entry("message/x.rsbroker.tags.v0", b"{not json")
    assert request_tags(broken, md.COMPOSITE_MIME) == {}


@pytest.mark.parametrize(
    "canary, message",
    [
        ({"tags": {}}, "at least one registration tag"),
        ({"tags": {"v": 2}, "percent": 5}, "'canary.tags' must be an object of string values"),
        ({"tags": {"v": "2"}, "percent": 101}, "'canary.percent' must be a number from 0 to 100"),
        ({"tags": {"v": "2"}}, "needs a 'percent' above 0 or a 'header'"),
        ({"tags": {"v": "2"}, "percent": 5, "weight": 1}, "unknown 'canary' field"),
    ],
)
def test_canary_policy_errors_name_the_field(canary: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ServicePolicy.from_obj({"canary": canary})


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.sampled_from([md.COMPOSITE_MIME, md.ROUTING_MIME]))
def test_request_tags_take_any_bytes(metadata: bytes, mime: str) -> None:
    """Request metadata comes from the network: whatever it holds, reading its tags gives a
    map of strings and raises nothing (a canary check can never refuse a request)."""
    tags = request_tags(metadata, mime)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items())
    policy = ServicePolicy.from_obj({"canary": {"tags": {"v": "2"}, "header": {"canary": "1"}}}).canary
    assert policy is not None
    assert policy.wants_canary(metadata, mime, lambda: 1.0) in (True, False)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=100), st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
).map(lambda obj: json.dumps(obj).encode())))
def test_a_tags_entry_of_any_content_is_read_or_ignored(content: bytes) -> None:
    tags = request_tags(md.composite_entry("message/x.rsbroker.tags.v0", content), md.COMPOSITE_MIME)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items())


def test_a_link_request_is_served_by_an_ejected_local_rather_than_refused() -> None:
    """Ejections count every provider of the service, remote ones too; a request that came
    over a link may only go to local ones, and if those are all ejected one of them serves."""
    local_a, local_b = P("a"), P("b")
    remote_c, remote_d = P("c", is_remote=True), P("d", is_remote=True)
    registry = _registry([local_a, local_b, remote_c, remote_d], outlier=OUTLIER)  # 50 %: two may go
    assert _fail(registry, local_a, 0.0, 3) and _fail(registry, local_b, 0.0, 3)
    chosen, why = registry.pick("svc", 0.5, True)
    assert chosen in (local_a, local_b), why
    # entering here: prefer_local, but both locals are out, so the other node's providers serve
    assert {registry.pick("svc", 0.5, False)[0].instance for _ in range(4)} == {"c", "d"}  # type: ignore[union-attr]


def test_turning_outlier_ejection_off_lets_ejected_providers_back() -> None:
    bad, good = P("bad"), P("good")
    registry = _registry([bad, good], outlier=OUTLIER)
    assert _fail(registry, bad, 0.0, 3)
    registry.set_policy("svc", ServicePolicy.from_obj({}))
    assert not registry.ejected("svc", bad, 0.1)
    assert {_pick(registry, 0.1).instance for _ in range(2)} == {"bad", "good"}
