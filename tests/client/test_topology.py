"""The node list a cluster client fails over across, as topology pushes change it (pure)."""

from __future__ import annotations

import json

import pytest

from broker.client import Topology


def push(*nodes: dict[str, str]) -> bytes:
    return json.dumps({"self": "n1", "nodes": list(nodes)}).encode()


N1 = {"node_id": "n1", "state": "alive", "tcp": "10.0.0.1:7000", "ws": "10.0.0.1:7001"}
N2 = {"node_id": "n2", "state": "alive", "tcp": "10.0.0.2:7000", "ws": "10.0.0.2:7001"}
N3_DEAD = {"node_id": "n3", "state": "dead", "tcp": "10.0.0.3:7000", "ws": "10.0.0.3:7001"}


def test_a_push_replaces_the_list_keeping_the_current_node_first() -> None:
    topology = Topology(["10.0.0.9:7000", "10.0.0.2:7000"])
    assert topology.next_address() == "10.0.0.9:7000"
    assert topology.next_address() == "10.0.0.2:7000"
    topology.update(push(N1, N2, N3_DEAD))
    assert topology.addresses == ["10.0.0.2:7000", "10.0.0.1:7000"]  # dead n3 left out, n2 (current) first
    assert topology.next_address() == "10.0.0.1:7000"  # the next fail-over goes elsewhere
    assert topology.pushes == 1


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("ws://10.0.0.9:7001/rsocket", ["ws://10.0.0.1:7001/rsocket", "ws://10.0.0.2:7001/rsocket"]),
        ("wss://10.0.0.9:7001/rsocket", ["wss://10.0.0.1:7001/rsocket", "wss://10.0.0.2:7001/rsocket"]),
        ("tls://10.0.0.9:7000", ["tls://10.0.0.1:7000", "tls://10.0.0.2:7000"]),
    ],
)
def test_pushed_nodes_are_dialled_like_the_first_address(given: str, expected: list[str]) -> None:
    topology = Topology([given])
    topology.update(push(N1, N2))
    assert sorted(topology.addresses) == expected  # in random order (see below)


def test_the_clients_of_a_dead_node_spread_over_the_others() -> None:
    """All clients of one node get the same push; if they all failed over to the same next
    node, that node would take the whole herd."""
    firsts = set()
    for _ in range(50):
        topology = Topology(["10.0.0.9:7000"])
        topology.next_address()
        topology.update(push(N1, N2, {**N1, "node_id": "n4", "tcp": "10.0.0.4:7000"}))
        firsts.add(topology.next_address())
    assert firsts == {"10.0.0.1:7000", "10.0.0.2:7000", "10.0.0.4:7000"}


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"nodes": 3}', b'{"nodes": [7]}', push(N3_DEAD)])
def test_a_push_it_cannot_use_leaves_the_list_alone(body: bytes) -> None:
    topology = Topology(["10.0.0.9:7000"])
    topology.update(body)
    assert topology.addresses == ["10.0.0.9:7000"] and topology.pushes == 0


def test_a_mistyped_address_is_refused_at_once() -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        Topology(["localhost"])
    with pytest.raises(ValueError, match="at least one"):
        Topology([])
