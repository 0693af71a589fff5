"""The requester's metadata MIME type against the provider's, on one node (issue 11 §2).

Requesters may declare composite or bare routing metadata in SETUP. Providers always
read composite metadata: registering needs a composite SETUP (or METADATA_PUSH) entry, so
a connection that declares bare routing can only ever be a requester. The matrix is
therefore requester {composite, routing} × request shape {whole, fragmented} × interaction
model, against a composite provider; in every cell the provider's composite reading of
what it got names exactly the route the broker resolved. Metadata that reads as two
routes is refused (composite with two routing entries) or re-encoded (bare routing).
The cross-node half of the matrix is ``tests/cluster/test_relay_across_links.py``.
"""

from __future__ import annotations

import contextlib

import pytest

from broker import frames as fr
from broker import metadata as md
from broker.frames import ErrorCode, FrameType
from tests.support.admin import service_instances
from tests.support.brokerproc import BrokerProcess
from tests.support.peers import raw_provider
from tests.support.rawclient import ConnectionClosed, Frame, RawClient
from tests.support.route_confusion import confused_metadata

MIMES = pytest.mark.parametrize("mime", [md.COMPOSITE_MIME, md.ROUTING_MIME], ids=["composite", "routing"])


def own_metadata(mime: str, route: str) -> bytes:
    """How a requester speaking ``mime`` names ``route``."""
    return md.route_metadata(route) if mime == md.COMPOSITE_MIME else md.routing(route)


async def requester_speaking(node: BrokerProcess, mime: str) -> RawClient:
    client = await RawClient.tcp(node.tcp)
    await client.send(fr.setup_frame(metadata_mime=mime))
    return client


def fragments(ftype: int, sid: int, metadata: bytes, data: bytes) -> list[bytes]:
    """The request cut in three: metadata over two fragments, then the data."""
    cut = len(metadata) // 2
    return [
        fr.request_frame(ftype, sid, metadata[:cut], b"", follows=True, initial_n=5),
        fr.payload_frame(sid, b"", metadata[cut:], next_=False, follows=True),
        fr.payload_frame(sid, data, None, next_=True, follows=False),
    ]


async def read_request(provider: RawClient) -> tuple[Frame, bytes, bytes]:
    """The next request on ``provider``, reassembled: ``(first frame, metadata, data)``."""
    first = await provider.recv()
    assert first.type in fr.REQUEST_TYPES, first
    metadata, data, frame = first.metadata, first.data, first
    while frame.flags & fr.FLAG_FOLLOWS:
        frame = await provider.expect(FrameType.PAYLOAD, stream_id=first.stream_id)
        metadata += frame.metadata if frame.flags & fr.FLAG_METADATA else b""
        data += frame.data
    return first, metadata, data


@MIMES
@pytest.mark.parametrize("fragmented", [False, True], ids=["whole", "fragmented"])
@pytest.mark.parametrize("ftype", [FrameType.REQUEST_RESPONSE, FrameType.REQUEST_STREAM], ids=["rr", "stream"])
async def test_the_provider_reads_the_route_the_broker_resolved(
    node: BrokerProcess, service: str, mime: str, fragmented: bool, ftype: int
) -> None:
    route = f"{service}.m"
    provider = await raw_provider(node, [service], "p")
    requester = await requester_speaking(node, mime)
    try:
        sid = requester.next_stream_id()
        metadata = own_metadata(mime, route)
        frames = fragments(ftype, sid, metadata, b"data") if fragmented else [
            fr.request_frame(ftype, sid, metadata, b"data", initial_n=5)
        ]
        await requester.send(*frames)
        first, got_metadata, data = await read_request(provider)
        assert first.type == ftype and data == b"data"
        assert md.route_of(got_metadata, md.COMPOSITE_MIME) == route
        if ftype == FrameType.REQUEST_STREAM:
            assert first.request_n == 5
        await provider.send(fr.payload_frame(first.stream_id, b"ok", complete=True))
        assert (await requester.expect(FrameType.PAYLOAD, stream_id=sid)).data == b"ok"
    finally:
        await requester.close()
        await provider.close()


async def test_bytes_that_read_as_two_routes_reach_the_route_checked(node: BrokerProcess, service: str) -> None:
    """Bare routing bytes whose composite reading names another route arrive as the routing reading."""
    allowed, other = f"{service}.allowed", f"{service}.other"
    provider = await raw_provider(node, [service], "p")
    requester = await requester_speaking(node, md.ROUTING_MIME)
    try:
        sid = requester.next_stream_id()
        await requester.send(fr.request_frame(FrameType.REQUEST_RESPONSE, sid, confused_metadata(allowed, other), b""))
        first, got_metadata, _ = await read_request(provider)
        assert md.route_of(got_metadata, md.COMPOSITE_MIME) == allowed
    finally:
        await requester.close()
        await provider.close()


async def test_composite_metadata_with_two_routing_entries_is_refused(node: BrokerProcess, service: str) -> None:
    provider = await raw_provider(node, [service], "p")
    requester = await requester_speaking(node, md.COMPOSITE_MIME)
    try:
        sid = requester.next_stream_id()
        two = md.route_metadata(f"{service}.a") + md.route_metadata(f"{service}.b")
        await requester.send(fr.request_frame(FrameType.REQUEST_RESPONSE, sid, two, b""))
        await requester.expect_error(ErrorCode.INVALID, stream_id=sid, contains="2 routing entries; exactly one is allowed")
    finally:
        await requester.close()
        await provider.close()


@MIMES
async def test_routed_metadata_push_reaches_the_provider_as_composite(node: BrokerProcess, service: str, mime: str) -> None:
    provider = await raw_provider(node, [service], "p")
    requester = await requester_speaking(node, mime)
    try:
        await requester.send(fr.metadata_push_frame(own_metadata(mime, f"{service}.notify")))
        pushed = await provider.expect(FrameType.METADATA_PUSH)
        assert pushed.metadata == md.route_metadata(f"{service}.notify")
        # the sender is still served afterwards
        sid = requester.next_stream_id()
        await requester.send(fr.request_frame(FrameType.REQUEST_RESPONSE, sid, own_metadata(mime, "nobody.x.m"), b""))
        await requester.expect_error(ErrorCode.REJECTED, stream_id=sid, contains="no provider for service 'nobody.x'")
    finally:
        await requester.close()
        await provider.close()


async def test_a_bare_routing_connection_cannot_register(node: BrokerProcess, service: str) -> None:
    """Its METADATA_PUSH is read as routing tags, never as a registration: it stays a requester."""
    async with await requester_speaking(node, md.ROUTING_MIME) as sneaky:
        reg = md.Registration(services=(service,), instance="sneaky")
        await sneaky.send(fr.metadata_push_frame(md.composite_entry(md.REGISTER_MIME, reg.to_json())))
        # Whatever the broker made of the push, it has by the time it answers a later frame.
        sid = sneaky.next_stream_id()
        with contextlib.suppress(ConnectionClosed):
            await sneaky.send(fr.request_frame(FrameType.REQUEST_RESPONSE, sid, md.routing("nobody.x.m"), b""))
            assert (await sneaky.recv()).type == FrameType.ERROR
    assert await service_instances(node.admin, service) == []
