"""Provider loads into routing entries (cluster.load_gossip), on a real RoutingTable pair:
only meaningful moves become deltas, a spent lease or an ejection reads as no capacity, and
only services with a choice are looked at."""

from __future__ import annotations

from broker.registry import NO_CAPACITY, Registry, ServicePolicy
from cluster.load_gossip import load_figure, local_entries, meaningful, refreshed
from cluster.routing_table import RoutingTable
from cluster.swim.config import profile
from tests.support.provider_record import ProviderRecord as P
from tests.swim.test_routing_table import gossip

CFG = profile("lan")


def test_meaningful_moves() -> None:
    assert not meaningful(5, 5)
    assert not meaningful(0, 1)  # one stream either way is noise
    assert meaningful(0, 2)
    assert not meaningful(40, 47) and meaningful(40, 48)  # 20 %
    assert meaningful(3, NO_CAPACITY) and meaningful(NO_CAPACITY, 3)


def test_spent_lease_and_ejection_read_as_no_capacity() -> None:
    registry = Registry()
    leased = P("leased", outstanding=3, lease_enabled=True, lease_remaining=0, lease_expires=10.0)
    assert load_figure(registry, "svc", leased, 1.0) == NO_CAPACITY
    leased.lease_remaining = 4
    assert load_figure(registry, "svc", leased, 1.0) == 3
    assert load_figure(registry, "svc", leased, 11.0) == NO_CAPACITY  # expired

    bad, good = P("bad"), P("good")
    registry.set_policy("svc", ServicePolicy.from_obj({"outlier": {"consecutive_errors": 1, "max_ejection_percent": 50}}))
    registry.add("svc", bad)
    registry.add("svc", good)
    bad.failures = 1
    assert registry.provider_failed("svc", bad, 0.0)
    assert load_figure(registry, "svc", bad, 1.0) == NO_CAPACITY
    assert load_figure(registry, "svc", bad, 31.0) == 0  # its interval is over


def test_only_meaningful_changes_of_services_with_a_choice_are_resent() -> None:
    registry = Registry()
    a, b, lone = P("a"), P("b"), P("lone")
    registry.add("pair", a)
    registry.add("pair", b)
    registry.add("device.1", lone)  # one provider, no lease: nobody compares it
    assert registry.balanced == {"pair"}
    mine, peer = RoutingTable("n1", 1, CFG), RoutingTable("n2", 2, CFG)
    for service in ("pair", "device.1"):
        mine.set_local_service(service, local_entries(registry, service, 0.0), 0.0)
    gossip(mine, peer)
    assert refreshed(registry, mine, "n1", 0.0) == []

    a.outstanding, lone.outstanding = 1, 50
    assert refreshed(registry, mine, "n1", 1.0) == []  # a: +1 is noise; lone is never looked at
    a.outstanding = 6
    [(service, entries)] = refreshed(registry, mine, "n1", 2.0)
    assert service == "pair" and {e.instance: e.load for e in entries} == {"a": 6, "b": 0}
    mine.set_local_service(service, entries, 2.0)
    gossip(mine, peer)
    assert {e.instance: e.load for e in peer.entries("n1", "pair")} == {"a": 6, "b": 0}
    assert mine.stats["entries_serialized"] == 3 + 1  # the first announcement, then one delta
