"""The routing table against a dumb reference (Hypothesis): whatever order, duplication
and interleaving the gossip delivers an owner's changes in - across a restart too - a
receiver ends with exactly the owner's last announced set."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.routing_table import RoutingTable, ServiceEntry
from cluster.swim.config import profile
from cluster.swim.messages import RouteBatch

CFG = profile("lan")
UNIVERSE = [("svc.a", "1"), ("svc.a", "2"), ("svc.b", "1"), ("svc.c", "9")]

entry_sets = st.lists(
    st.tuples(st.sampled_from(UNIVERSE), st.integers(0, 3)), max_size=4, unique_by=lambda t: t[0],
).map(lambda items: [ServiceEntry(s, i, 1, {}, load) for (s, i), load in items])


def drain(table: RoutingTable) -> list[RouteBatch]:
    """Everything the owner would ever send for its changes so far."""
    out: list[RouteBatch] = []
    while batch := table.take_direct(0.0):
        out.extend(batch)  # type: ignore[arg-type]
    return out


@settings(max_examples=200, deadline=None)
@given(st.lists(entry_sets, min_size=1, max_size=6), st.integers(0, 6), st.randoms(use_true_random=False),
       st.integers(0, 3))
def test_receiver_converges_to_the_owners_last_set(changes, restart_at, rnd, duplicates) -> None:
    owner = RoutingTable("a", 1000, CFG)
    produced: list[RouteBatch] = []
    for step, entries in enumerate(changes):
        if step == restart_at:  # the owner restarts: new boot epoch, starts empty
            owner = RoutingTable("a", 2000, CFG)
        owner.set_local(entries, float(step))
        produced.extend(drain(owner))
    deliveries = produced + [rnd.choice(produced) for _ in range(duplicates)] if produced else []
    rnd.shuffle(deliveries)
    receiver = RoutingTable("r", 5000, CFG)
    for batch in deliveries:
        receiver.on_batch(batch, 10.0)
    assert receiver.services_of("a") == owner.local_entries()
    expected_services = {e.service for e in owner.local_entries()}
    for service in ("svc.a", "svc.b", "svc.c"):
        assert bool(receiver.lookup(service)) == (service in expected_services)
    # A full push-pull from the owner gives the same answer from scratch.
    fresh = RoutingTable("q", 5000, CFG)
    for batch in owner.answer_digests("q", fresh.digests()):
        fresh.on_batch(batch, 10.0)
    assert fresh.services_of("a") == owner.local_entries()


def pull(receiver: RoutingTable, peer: RoutingTable, now: float) -> None:
    """One push-pull as the core runs it: each side answers the other's digests."""
    for batch in peer.answer_digests(receiver.node, receiver.digests()):
        receiver.on_batch(batch, now)
    for batch in receiver.answer_digests(peer.node, peer.digests()):
        peer.on_batch(batch, now)


@settings(max_examples=200, deadline=None)
@given(st.lists(entry_sets, min_size=1, max_size=6), st.randoms(use_true_random=False), st.booleans(),
       st.booleans())
def test_digest_push_pull_repairs_any_lost_batches(changes, rnd, forget, via_third_party) -> None:
    """Whatever batches were lost, at most two push-pulls (with the owner, or with a peer
    that holds the owner's set) leave the receiver with exactly the owner's set. Once the
    tombstones are forgotten, only the owner can say that an entry is gone (a third party's
    copy is never authoritative), so then the second push-pull is with the owner."""
    owner = RoutingTable("a", 1000, CFG)
    receiver = RoutingTable("r", 5000, CFG)
    relay = RoutingTable("p", 6000, CFG)
    now = 0.0
    for entries in changes:
        owner.set_local(entries, now)
        for batch in drain(owner):
            relay.on_batch(batch, now)
            if rnd.random() < 0.5:  # lost on the way to the receiver
                receiver.on_batch(batch, now)
        now += 1.0
    if forget:
        now += CFG.route_tombstone_s + 1
        owner.take_direct(now)
        relay.take_direct(now)
    first = relay if via_third_party else owner
    second = owner if forget else first
    pull(receiver, first, now)
    pull(receiver, second, now)
    assert receiver.services_of("a") == owner.local_entries()
    assert owner.answer_digests("r", receiver.digests()) == []  # digests now agree
