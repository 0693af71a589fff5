"""The piggyback queue: retransmit limit, replacement by key, fresh news first, budget."""

from __future__ import annotations

from cluster.swim.broadcast import BroadcastQueue
from cluster.swim.messages import Alive, Suspect, wire_size


def alive(node: str, inc: int = 0) -> Alive:
    return Alive(inc, node, "10.0.0.1", 7946, {})


def test_each_broadcast_is_sent_limit_times_then_dropped() -> None:
    q = BroadcastQueue(lambda n: 3)
    q.queue("a", alive("a"))
    sent = [q.take(10_000, 0, 5)[0] for _ in range(5)]
    assert [len(s) for s in sent] == [1, 1, 1, 0, 0]
    assert len(q) == 0


def test_newer_broadcast_about_the_same_key_replaces_the_old() -> None:
    q = BroadcastQueue(lambda n: 3)
    q.queue(("member", "a"), alive("a", 1))
    q.queue(("member", "a"), Suspect(1, "a", "b"))
    assert q.take(10_000, 0, 5)[0] == [Suspect(1, "a", "b")]


def test_least_sent_first_and_newest_first_among_equals() -> None:
    q = BroadcastQueue(lambda n: 10)
    q.queue("old", alive("old"))
    q.take(10_000, 0, 5)
    q.queue("x", alive("x"))
    q.queue("y", alive("y"))
    size = wire_size(alive("x"))
    assert q.take(size, 0, 5)[0] == [alive("y")]
    assert q.take(size, 0, 5)[0] == [alive("x")]
    assert q.take(10_000, 0, 5)[0] == [alive("y"), alive("x"), alive("old")]  # all sent once


def test_budget_is_respected_and_overhead_counted() -> None:
    q = BroadcastQueue(lambda n: 10)
    for i in range(20):
        q.queue(i, alive(f"n{i}"))
    msgs, used = q.take(200, 2, 5)
    assert used <= 200 and used == sum(wire_size(m) + 2 for m in msgs) and msgs


def test_limit_follows_cluster_size() -> None:
    from cluster.swim.config import profile

    q = BroadcastQueue(profile("lan").retransmit_limit)
    q.queue("a", alive("a"))
    sends = 0
    while q.take(10_000, 0, 100)[0]:
        sends += 1
    assert sends == 4 * 3  # retransmit_mult * ceil(log10(101))


def test_too_big_for_a_datagram_waits_for_a_gossip_round_then_spills() -> None:
    q = BroadcastQueue(lambda n: 2)
    big = Alive(0, "big", "10.0.0.1", 7946, {f"k{i}": "v" * 50 for i in range(10)})
    q.queue("big", big)
    q.queue("a", alive("a"))
    assert q.take(200, 0, 5)[0] == [alive("a")]  # a ping or ack cannot carry it
    msgs, used = q.take(200, 0, 5, spill=True)  # a gossip round sends it (over TCP)
    assert msgs == [big, alive("a")] and used == wire_size(alive("a"))
    assert q.take(200, 0, 5, spill=True)[0] == [big]  # its second and last transmit
    assert len(q) == 0
