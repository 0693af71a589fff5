"""Routing-table dissemination rules: versions, tombstones, restarts, deaths, push-pull."""

from __future__ import annotations

from cluster.routing_table import RemoteEntry, RoutesChanged, RoutingTable, ServiceEntry
from cluster.swim.config import profile
from cluster.swim.core import MemberChanged, MemberView
from cluster.swim.messages import MemberState, Route

CFG = profile("lan")
GREETER = ServiceEntry("com.acme.greeter", "g-1", 2, {"zone": "a"}, 3)


def gossip(src: RoutingTable, dst: RoutingTable, now: float = 1.0) -> list[object]:
    """Deliver everything ``src`` has queued to ``dst``."""
    events: list[object] = []
    for route in src.take_broadcasts(10_000, 3):
        events.extend(dst.on_route(route, now))
    return events


def member(node: str, state: MemberState, previous: MemberState) -> MemberChanged:
    return MemberChanged(MemberView(node, "10.0.0.1", 7946, state, 1, {}), previous)


def test_entries_spread_and_changes_are_reported() -> None:
    a, b = RoutingTable("a", 100, CFG), RoutingTable("b", 200, CFG)
    a.set_local([GREETER], 0.0)
    assert gossip(a, b) == [RoutesChanged("a", frozenset({"com.acme.greeter"}))]
    assert b.lookup("com.acme.greeter") == [RemoteEntry("a", GREETER)]
    assert b.services_of("a") == [GREETER] and a.services_of("a") == [GREETER]
    assert a.lookup("com.acme.greeter") == []  # lookup is for remote entries
    a.set_local([ServiceEntry("com.acme.greeter", "g-1", 2, {"zone": "a"}, 9)], 1.0)
    gossip(a, b)
    assert b.lookup("com.acme.greeter")[0].entry.load == 9


def test_unchanged_entries_are_not_regossiped() -> None:
    a = RoutingTable("a", 100, CFG)
    a.set_local([GREETER], 0.0)
    while a.take_broadcasts(10_000, 3):
        pass
    a.set_local([GREETER], 1.0)
    assert a.take_broadcasts(10_000, 3) == []


def test_removal_is_a_tombstone_that_beats_late_copies() -> None:
    a, b = RoutingTable("a", 100, CFG), RoutingTable("b", 200, CFG)
    a.set_local([GREETER], 0.0)
    first = a.take_broadcasts(10_000, 3)
    a.set_local([], 1.0)
    gossip(a, b)
    for late in first:  # the old announcement arrives after the removal
        b.on_route(late, 2.0)
    assert b.lookup("com.acme.greeter") == []


def test_tombstones_are_forgotten_after_their_time() -> None:
    a, b = RoutingTable("a", 100, CFG), RoutingTable("b", 200, CFG)
    a.set_local([GREETER], 0.0)
    gossip(a, b)
    a.set_local([], 1.0)
    gossip(a, b, 1.0)
    held = [r for r in b.full_state() if r.owner == "a"]
    assert [(r.service, r.removed) for r in held if r.service] == [("com.acme.greeter", True)]  # tombstone
    b.merge_state("c", (), 1.0 + CFG.route_tombstone_s + 1)
    assert [r for r in b.full_state() if r.owner == "a"] == []


def test_a_restart_with_no_entries_still_clears_the_old_life() -> None:
    a, b = RoutingTable("a", 100, CFG), RoutingTable("b", 200, CFG)
    a.set_local([GREETER], 0.0)
    gossip(a, b)
    gossip(RoutingTable("a", 500, CFG), b, 5.0)  # its boot marker alone
    assert b.lookup("com.acme.greeter") == [] and b.services_of("a") == []


def test_restart_with_new_epoch_replaces_the_old_life() -> None:
    a, b = RoutingTable("a", 100, CFG), RoutingTable("b", 200, CFG)
    a.set_local([GREETER, ServiceEntry("com.acme.old", "o-1")], 0.0)
    gossip(a, b)
    a2 = RoutingTable("a", 500, CFG)
    a2.set_local([GREETER], 10.0)
    gossip(a2, b, 10.0)
    assert b.lookup("com.acme.old") == [] and len(b.lookup("com.acme.greeter")) == 1
    old = Route("a", 100, 99, "com.acme.old", "o-1", 1, {}, 0, False)
    assert b.on_route(old, 11.0) == [] and b.lookup("com.acme.old") == []


def test_dead_member_takes_its_entries_and_stragglers_stay_out() -> None:
    a, b = RoutingTable("a", 100, CFG), RoutingTable("b", 200, CFG)
    a.set_local([GREETER], 0.0)
    straggler = a.take_broadcasts(10_000, 3)
    for r in straggler:
        b.on_route(r, 1.0)
    events = b.on_member(member("a", MemberState.DEAD, MemberState.SUSPECT), 5.0)
    assert events == [RoutesChanged("a", frozenset({"com.acme.greeter"}))]
    assert b.lookup("com.acme.greeter") == []
    for r in straggler:
        b.on_route(r, 6.0)
    assert b.lookup("com.acme.greeter") == []
    # A refuted verdict: the member is alive again and re-announces its entries.
    b.on_member(member("a", MemberState.ALIVE, MemberState.DEAD), 7.0)
    a.on_refute(7.0)
    gossip(a, b, 7.1)
    assert b.lookup("com.acme.greeter") == [RemoteEntry("a", GREETER)]


def test_push_pull_from_the_owner_is_authoritative() -> None:
    a, b, c = (RoutingTable(n, e, CFG) for n, e in (("a", 100), ("b", 200), ("c", 300)))
    a.set_local([GREETER, ServiceEntry("com.acme.x", "x-1")], 0.0)
    gossip(a, c)
    # c missed the removal of x (and the tombstone is long gone), b never heard of a at all.
    a.set_local([GREETER], 1.0)
    a.take_broadcasts(10_000, 3)
    later = 2.0 + CFG.route_tombstone_s
    a.set_local([GREETER], later)  # collects a's tombstone of x
    assert all(r.service != "com.acme.x" for r in a.full_state())
    c.merge_state("a", a.full_state(), later)
    assert c.lookup("com.acme.x") == [] and len(c.lookup("com.acme.greeter")) == 1
    # Third-party full state is merged entry by entry, never deleting.
    b.merge_state("c", c.full_state(), later)
    assert b.lookup("com.acme.greeter") == [RemoteEntry("a", GREETER)]
