"""Topology pushes (issue 11 §6) tell a cluster-aware client how to connect, nothing more.

Every authenticated principal that asks for ``message/x.rsbroker.topology.v0`` gets the node
list; it must not learn admin addresses, gossip addresses or other internals.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from broker import metadata as md
from broker.auth import encode_bearer
from broker.frames import FrameType
from cluster.crypto import new_key
from tests.e2e_security.pki import Pki
from tests.support.brokerproc import BrokerFactory
from tests.support.rawclient import RawClient, provider_setup

#: what a client needs to connect: which node, how to reach it, whether it is up
CLIENT_FIELDS = {"node_id", "state", "tcp", "ws"}


async def test_a_topology_push_carries_only_connection_details(
    broker_factory: BrokerFactory, pki: Pki, tmp_path: Path
) -> None:
    key = tmp_path / "cluster.key"
    key.write_text(new_key() + "\n")  # an authenticating node runs only a keyed cluster
    node = await asyncio.to_thread(
        broker_factory.start, *pki.jwt_args(), "--cluster", "127.0.0.1:0", "--cluster-key", str(key)
    )
    auth = md.composite_entry(md.AUTH_MIME, encode_bearer(pki.token("plain-client")))
    wants_topology = md.composite_entry(md.TOPOLOGY_MIME, b"{}")
    async with await RawClient.connect(str(node.tcp)) as raw:
        await raw.send(provider_setup((), "topology-reader", extra_metadata=auth + wants_topology))
        frame = await raw.expect(FrameType.METADATA_PUSH)
    body = json.loads(md.find_entry(frame.metadata, md.TOPOLOGY_MIME) or b"null")
    assert [n["node_id"] for n in body["nodes"]] == [node.node_id]
    pushed = body["nodes"][0]
    assert set(pushed) <= CLIENT_FIELDS, f"the push reveals {sorted(set(pushed) - CLIENT_FIELDS)}"
    assert pushed["tcp"] == node.tcp and pushed["state"] == "alive"
    text = json.dumps(body)
    assert str(node.admin) not in text and str(node.cluster) not in text, text
