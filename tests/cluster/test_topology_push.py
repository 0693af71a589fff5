"""The topology push every SETUP gets is built from the member list alone and reused while the
list is unchanged (issue 13: building it per SETUP from the whole topology view made each
SETUP cost O(fleet)). Reused must never mean stale: a member's death reaches the next SETUP's
push and the connected clients."""

from __future__ import annotations

import json

import pytest

from broker import metadata as md
from broker.frames import FrameType
from tests.support.admin import wait_for
from tests.support.cluster import ClusterFactory
from tests.support.rawclient import RawClient, provider_setup

pytestmark = pytest.mark.asyncio


async def _pushed_states(client: RawClient) -> dict[str, str]:
    frame = await client.expect(FrameType.METADATA_PUSH, timeout=30)
    body = json.loads(md.find_entry(frame.metadata, md.TOPOLOGY_MIME) or b"null")
    return {n["node_id"]: n["state"] for n in body["nodes"]}


async def _setup_push(address: str) -> dict[str, str]:
    """The states in the push a new client gets right after its SETUP."""
    async with await RawClient.connect(address) as client:
        await client.send(provider_setup((), "topology-reader", extra_metadata=md.composite_entry(md.TOPOLOGY_MIME, b"{}")))
        return await _pushed_states(client)


async def test_the_push_follows_membership_for_new_and_connected_clients() -> None:
    with ClusterFactory() as factory:
        cluster = factory.start(3)
        await cluster.wait_converged()
        n1, n3 = cluster["n1"], cluster["n3"]
        assert n1.tcp
        assert await _setup_push(n1.tcp) == {"n1": "alive", "n2": "alive", "n3": "alive"}
        assert await _setup_push(n1.tcp) == {"n1": "alive", "n2": "alive", "n3": "alive"}  # the reused frame
        async with await RawClient.connect(n1.tcp) as watcher:
            await watcher.send(provider_setup((), "watcher", extra_metadata=md.composite_entry(md.TOPOLOGY_MIME, b"{}")))
            assert (await _pushed_states(watcher))["n3"] == "alive"
            n3.kill()
            # the connected client is told: a push whose n3 is no longer alive
            while (await _pushed_states(watcher)).get("n3", "gone") == "alive":
                pass
            latest: dict[str, str] = {}

            async def new_clients_see_it() -> bool:
                latest.update(await _setup_push(str(n1.tcp)))
                return latest.get("n3", "gone") != "alive"

            await wait_for(new_clients_see_it, timeout=60, interval=0.5, message="a new client's push without n3 alive")
            assert latest["n1"] == latest["n2"] == "alive"
