"""What crosses a broker link means at the far node what it meant where it came in.

Two nodes; requesters on n1, providers on n2, so everything crosses n1's link to n2.

* Routed METADATA_PUSH (issue 11 §6): a push for a service whose provider is on another
  node reaches that provider over the link, and the sender keeps its connection.
* Metadata MIME types (issue 11 §2): a requester that speaks bare routing metadata and one
  that speaks composite metadata both reach exactly the route they named; the provider on
  n2 reads composite metadata naming that route. Composite metadata naming two routes is
  refused at n1, before anything crosses the link.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from broker import frames as fr
from broker import metadata as md
from broker.frames import ErrorCode, FrameType
from tests.support.admin import wait_for
from tests.support.cluster import Cluster, ClusterFactory
from tests.support.peers import Responder, raw_provider, raw_requester
from tests.support.rawclient import RawClient


@pytest.fixture(scope="module")
def two_nodes() -> Iterator[Cluster]:
    with ClusterFactory() as factory:
        yield factory.start(2, "--gossip-profile", "local")


async def test_routed_metadata_push_reaches_a_provider_on_another_node(two_nodes: Cluster, service: str) -> None:
    await two_nodes.wait_converged()
    provider = await raw_provider(two_nodes["n2"], [service], "p1")
    try:
        async with Responder(provider) as responder:
            await two_nodes.wait_serves(service, {"p1"})
            requester = await raw_requester(two_nodes["n1"])
            try:
                push = md.route_metadata(f"{service}.notify") + md.composite_entry("text/plain", b"hello")
                await requester.send(fr.metadata_push_frame(push))

                def pushed() -> list[bytes]:
                    return [f.metadata for f in responder.other if f.type == FrameType.METADATA_PUSH]

                await wait_for(lambda: pushed(), message="the METADATA_PUSH on the provider on n2")
                assert pushed() == [push]
                # the sender keeps its connection and is served
                sid = await requester.request(FrameType.REQUEST_RESPONSE, f"{service}.echo", b"still here")
                assert (await requester.expect(FrameType.PAYLOAD, stream_id=sid)).data == b"still here"
            finally:
                await requester.close()
    finally:
        await provider.close()


@pytest.mark.parametrize("requester_mime", [md.COMPOSITE_MIME, md.ROUTING_MIME], ids=["composite", "routing"])
async def test_the_route_named_is_the_route_served_across_the_link(
    two_nodes: Cluster, service: str, requester_mime: str
) -> None:
    await two_nodes.wait_converged()
    route = f"{service}.echo"
    provider = await raw_provider(two_nodes["n2"], [service], "p1")
    try:
        async with Responder(provider) as responder:
            await two_nodes.wait_serves(service, {"p1"})
            async with await RawClient.tcp(two_nodes["n1"].tcp) as requester:
                await requester.send(fr.setup_frame(metadata_mime=requester_mime))
                own = md.route_metadata(route) if requester_mime == md.COMPOSITE_MIME else md.routing(route)
                sid = requester.next_stream_id()
                await requester.send(fr.request_frame(FrameType.REQUEST_RESPONSE, sid, own, b"hi"))
                assert (await requester.expect(FrameType.PAYLOAD, stream_id=sid)).data == b"hi"
                assert [md.route_of(f.metadata, md.COMPOSITE_MIME) for f in responder.received] == [route]
                if requester_mime == md.COMPOSITE_MIME:
                    two = md.route_metadata(route) + md.route_metadata(f"{service}.other")
                    sid = requester.next_stream_id()
                    await requester.send(fr.request_frame(FrameType.REQUEST_RESPONSE, sid, two, b"x"))
                    await requester.expect_error(ErrorCode.INVALID, stream_id=sid, contains="2 routing entries")
                    assert len(responder.received) == 1
    finally:
        await provider.close()
