"""A drain keeps its promise across nodes (issue 12 §8, real processes).

A request crosses a broker link: requester on one node, provider on another. While the
provider holds it, one of the two nodes is SIGTERMed with a generous ``--drain-timeout-s``.
The request must still end with its response — peers must not cut the link to a leaving
node while streams on it are open — and the drained node must exit cleanly once its
streams ended. Either way no stream hangs: every wait here has a deadline.
"""

from __future__ import annotations

import asyncio
import signal

import pytest

from broker.frames import FrameType, payload_frame
from tests.support.admin import wait_for
from tests.support.cluster import ClusterFactory
from tests.support.peers import Responder, raw_provider, raw_requester

DRAIN_S = 30.0


@pytest.mark.parametrize("drained", ["provider", "requester"])
async def test_a_cross_node_stream_in_flight_finishes_when_a_node_drains(
    cluster_factory: ClusterFactory, service: str, drained: str
) -> None:
    cluster = await asyncio.to_thread(cluster_factory.start, 3, "--drain-timeout-s", str(DRAIN_S))
    await cluster.wait_converged()
    provider_node, requester_node = cluster["n1"], cluster["n2"]
    provider = await raw_provider(provider_node, [service], "slow", keepalive_every_s=1.0)
    await cluster.wait_serves(service, {"slow"})
    requester = await raw_requester(requester_node)
    requester.start_keepalive(1.0)
    try:
        async with Responder(provider, reply=lambda frame: None) as responder:  # hold every request
            sid = await requester.request(FrameType.REQUEST_RESPONSE, f"{service}.slow", b"take your time")
            await wait_for(lambda: responder.received, message="the request to reach the provider")
            held = responder.received[0]

            node = provider_node if drained == "provider" else requester_node
            node.signal(signal.SIGTERM)
            await cluster.wait_member_state(node.node_id, "left")  # the moment peers used to cut links
            await asyncio.sleep(1.0)  # a link close would reach the streams by now
            await provider.send(payload_frame(held.stream_id, b"done", complete=True))

            frame = await requester.recv(timeout=DRAIN_S)
            assert frame.stream_id == sid, frame
            assert frame.type == FrameType.PAYLOAD and frame.data == b"done", frame
        assert await asyncio.to_thread(node.wait, DRAIN_S) == 0
    finally:
        await requester.close()
        await provider.close()
