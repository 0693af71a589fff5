"""The broker-link handshake in one process, over real sockets on 127.0.0.1.

Two relays (``broker.relay.Broker``) with their ``cluster.links.Links``: node ``a`` links
to node ``c``'s TCP listener. With the same cluster key both sides prove it on the
connection and the link comes up; with different keys neither side trusts the other.
Hypothesis feeds arbitrary link entries to the accepting side: only a refusal
(``FrameError``) may come out, and no entry without a proof yields a proven principal.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.frames import FrameError
from broker.relay import Broker
from broker.security import is_proven_link
from broker.settings import Settings
from broker.transports import TcpSession
from cluster.crypto import Keyring
from cluster.links import Links
from tests.support.admin import wait_for


@dataclass
class Node:
    broker: Broker
    links: Links
    address: tuple[str, int]


@pytest.fixture
async def nodes(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Node, Node]]:
    """Nodes ``a`` and ``c``; ``request.param`` says whether they share one cluster key."""
    shared = Keyring([os.urandom(32)])
    keys = (shared, shared) if request.param else (shared, Keyring([os.urandom(32)]))
    loop = asyncio.get_running_loop()
    made: list[tuple[Node, asyncio.Server]] = []
    for node_id, keyring in zip(("a", "c"), keys):
        broker = Broker(Settings(node_id=node_id), loop)
        links = Links(broker, node_id, keyring)
        links.start()
        server = await loop.create_server(lambda b=broker: TcpSession(b), "127.0.0.1", 0)
        made.append((Node(broker, links, server.sockets[0].getsockname()[:2]), server))
    try:
        yield made[0][0], made[1][0]
    finally:
        for node, server in made:
            await node.links.stop()
            server.close()
            for session in list(node.broker.sessions):
                session.close()


def _inbound_links(node: Node) -> list[TcpSession]:
    return [s for s in node.broker.sessions if s.is_link]  # type: ignore[misc]


@pytest.mark.parametrize("nodes", [True], indirect=True)
async def test_same_key_links_come_up_proven_on_both_sides(nodes: tuple[Node, Node]) -> None:
    a, c = nodes
    a.links.want("c", c.address)
    await wait_for(lambda: "c" in a.links.up, message="a's link to c")
    await wait_for(lambda: any(is_proven_link(s.principal) for s in _inbound_links(c)), message="c trusts the link")
    [inbound] = _inbound_links(c)
    assert inbound.principal.name == "node:a" and not inbound.principal.is_admin
    assert a.links.stats["link_auth_failures"] == c.links.stats["link_auth_failures"] == 0


@pytest.mark.parametrize("nodes", [False], indirect=True)
async def test_another_clusters_node_gets_no_link(nodes: tuple[Node, Node]) -> None:
    """c's challenge does not verify with a's key: a refuses to route anything to c (an
    impostor at c's address learns nothing), and c never trusts a."""
    a, c = nodes
    a.links.want("c", c.address)
    await wait_for(lambda: a.links.stats["link_auth_failures"] >= 2, message="two refused handshakes")
    assert "c" not in a.links.up
    assert not any(is_proven_link(s.principal) for s in _inbound_links(c))


class _Peer:
    """What ``Links.authenticate`` reads of a connection: its transport and peer address."""

    transport_name = "tcp"
    peer = ("127.0.0.1", 40000)
    peer_text = "127.0.0.1:40000"


def _accepting_links() -> Links:
    loop = asyncio.new_event_loop()  # the relay keeps it for its clock only; authenticate never runs it
    try:
        return Links(Broker(Settings(node_id="c"), loop), "c", Keyring([os.urandom(32)]))
    finally:
        loop.close()


_LINKS = _accepting_links()
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(["v", "node", "to", "nonce", "proof", "x"]), inner, max_size=5),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=200), _json.map(lambda v: json.dumps(v).encode())))
def test_link_entries_from_the_network_only_ever_refuse_or_wait_for_a_proof(entry: bytes) -> None:
    try:
        principal = _LINKS.authenticate(_Peer(), entry)
    except FrameError:
        return
    assert not is_proven_link(principal) and not principal.is_admin
