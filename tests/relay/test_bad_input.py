"""Bad input gets the protocol's error, closes only that connection, and the node keeps serving.

Each case is followed by :func:`assert_serves`: a fresh provider and requester still
complete a request through the same node.
"""

from __future__ import annotations

import struct

import pytest

from broker import frames as fr
from broker import metadata as md
from broker.frames import FLAG_IGNORE, FLAG_METADATA, ErrorCode, FrameType
from tests.support.admin import connections, service_instances, wait_for
from tests.support.brokerproc import BrokerFactory, BrokerProcess
from tests.support.peers import address_of, assert_serves, raw_provider, raw_requester
from tests.support.rawclient import RawClient

MAX_FRAME = 65_536


@pytest.fixture(scope="module")
def node(module_broker_factory: BrokerFactory) -> BrokerProcess:
    return module_broker_factory.start("--max-frame-size", str(MAX_FRAME))


def _head(stream_id: int, ftype: int, flags: int) -> bytes:
    return struct.pack(">IH", stream_id, (ftype << 10) | flags)


async def _refused(client: RawClient, code: int, contains: str) -> str:
    """The connection gets ERROR(code) on stream 0 and is closed by the broker."""
    message = await client.expect_error(code, contains=contains)
    await client.wait_closed()
    return message


async def test_http_request_on_the_tcp_port_is_refused_as_an_oversized_frame(node: BrokerProcess) -> None:
    async with await RawClient.tcp(node.tcp) as c:
        await c.send_raw(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        # "GET" read as a 24-bit length is 4,670,804 bytes: above the limit, refused at once
        await _refused(c, ErrorCode.CONNECTION_ERROR, f"frame of 4670804 bytes exceeds the maximum frame size of {MAX_FRAME}")
    await assert_serves(node)


async def test_garbage_frame_before_setup(node: BrokerProcess, transport: str) -> None:
    async with await RawClient.connect(address_of(node, transport), transport) as c:
        await c.send(b"\xff" * 9)
        await _refused(c, ErrorCode.INVALID_SETUP, "the first frame must be SETUP")
    await assert_serves(node, transport)


async def test_frame_shorter_than_a_header(node: BrokerProcess, transport: str) -> None:
    async with await raw_requester(node, transport) as c:
        await c.send(b"\x00\x00\x00")
        await _refused(c, ErrorCode.CONNECTION_ERROR, "frame of 3 bytes is shorter than the 6-byte")
    await assert_serves(node, transport)


async def test_websocket_text_message_is_refused(node: BrokerProcess) -> None:
    async with await RawClient.ws(node.ws) as c:
        await c.send_text("hello")
        await _refused(c, ErrorCode.CONNECTION_ERROR, "text messages are not RSocket frames")
    await assert_serves(node, "ws")


async def test_truncated_frame_then_close(node: BrokerProcess, service: str) -> None:
    """A provider whose last frame is cut short: its connection and its services go away."""
    provider = await raw_provider(node, [service], "truncated")
    before = {c["id"] for c in await connections(node.admin)}
    frame = fr.with_length_prefix(fr.payload_frame(1, b"x" * 100))
    await provider.send_raw(frame[:40])
    await provider.close()
    await wait_for(
        lambda: _gone(node.admin, service),
        message=f"'{service}' unregistered after the provider closed mid-frame",
    )
    after = {c["id"] for c in await connections(node.admin)}
    assert len(after & before) == len(before) - 1
    await assert_serves(node)


async def _gone(admin: str | None, service: str) -> bool:
    return not await service_instances(admin, service)


async def test_request_before_setup(node: BrokerProcess, transport: str) -> None:
    async with await RawClient.connect(address_of(node, transport), transport) as c:
        await c.send(fr.request_frame(FrameType.REQUEST_RESPONSE, 1, md.route_metadata("a.b"), b""))
        await _refused(c, ErrorCode.INVALID_SETUP, "the first frame must be SETUP, got REQUEST_RESPONSE")
    await assert_serves(node, transport)


async def test_resume_is_rejected(node: BrokerProcess, transport: str) -> None:
    async with await RawClient.connect(address_of(node, transport), transport) as c:
        await c.send(_head(0, FrameType.RESUME, 0) + struct.pack(">HH", 1, 0) + b"\x00\x01t" + b"\x00" * 16)
        await _refused(c, ErrorCode.REJECTED_RESUME, "resumption is not supported")
    await assert_serves(node, transport)


async def test_short_keepalive(node: BrokerProcess) -> None:
    async with await raw_requester(node) as c:
        await c.send(_head(0, FrameType.KEEPALIVE, fr.FLAG_RESPOND) + b"\x00\x01")
        await _refused(c, ErrorCode.CONNECTION_ERROR, "KEEPALIVE frame is shorter than its 8-byte position field")
    await assert_serves(node)


async def test_request_with_server_parity_stream_id(node: BrokerProcess, transport: str) -> None:
    async with await raw_requester(node, transport) as c:
        await c.send(fr.request_frame(FrameType.REQUEST_RESPONSE, 2, md.route_metadata("a.b"), b""))
        await _refused(c, ErrorCode.CONNECTION_ERROR, "stream id 2 has server parity")
    await assert_serves(node, transport)


@pytest.mark.parametrize("ftype", [0x30, FrameType.EXT])
async def test_unknown_frame_type_with_ignore_flag_is_ignored(node: BrokerProcess, transport: str, ftype: int) -> None:
    async with await raw_requester(node, transport) as c:
        await c.send(_head(0, ftype, FLAG_IGNORE) + b"whatever")
        # the connection still works: a KEEPALIVE asking for an answer gets one, nothing before it
        await c.send(fr.keepalive_frame(True, b"still-there"))
        answer = await c.expect(FrameType.KEEPALIVE, skip=())
        assert answer.raw[6 + 8 :] == b"still-there"


async def test_unknown_frame_type_without_ignore_flag(node: BrokerProcess, transport: str) -> None:
    async with await raw_requester(node, transport) as c:
        await c.send(_head(0, 0x30, 0) + b"whatever")
        await _refused(c, ErrorCode.CONNECTION_ERROR, "unknown frame type 0x30 without the ignore flag")
    await assert_serves(node, transport)


async def test_length_prefix_above_max_frame_size(node: BrokerProcess) -> None:
    async with await raw_requester(node) as c:
        await c.send_raw((MAX_FRAME + 1).to_bytes(3, "big") + b"\x00" * 16)
        await _refused(
            c, ErrorCode.CONNECTION_ERROR, f"frame of {MAX_FRAME + 1} bytes exceeds the maximum frame size of {MAX_FRAME} bytes"
        )
    await assert_serves(node)


def _setup_fixed(flags: int) -> bytes:
    return _head(0, FrameType.SETUP, flags) + struct.pack(">HHII", 1, 0, 20_000, 90_000)


@pytest.mark.parametrize(
    ("body", "contains"),
    [
        (_setup_fixed(0) + bytes((200,)) + b"short", "metadata MIME type of 200 bytes runs past the end of the frame"),
        (
            _setup_fixed(0) + bytes((len(md.COMPOSITE_MIME),)) + md.COMPOSITE_MIME.encode() + bytes((60,)) + b"x",
            "data MIME type of 60 bytes runs past the end of the frame",
        ),
        (
            _setup_fixed(FLAG_METADATA)
            + bytes((len(md.COMPOSITE_MIME),))
            + md.COMPOSITE_MIME.encode()
            + b"\x01x"
            + (1000).to_bytes(3, "big")
            + b"abc",
            "SETUP metadata length 1000 runs past the end of the frame",
        ),
        (_setup_fixed(0)[:12], "SETUP is shorter than its fixed fields"),
        (
            fr.setup_frame(metadata=md.composite_entry(md.REGISTER_MIME, b"{}")[:-5] + (500).to_bytes(3, "big") + b"{}"),
            "runs past the metadata",
        ),
    ],
    ids=["metadata-mime", "data-mime", "metadata-length", "fixed-fields", "composite-entry"],
)
async def test_setup_whose_lengths_run_past_the_frame(node: BrokerProcess, transport: str, body: bytes, contains: str) -> None:
    async with await RawClient.connect(address_of(node, transport), transport) as c:
        await c.send(body)
        await _refused(c, ErrorCode.INVALID_SETUP, contains)
    await assert_serves(node, transport)


async def test_setup_with_resume_token_is_unsupported(node: BrokerProcess, transport: str) -> None:
    token = b"resume-me"
    setup = (
        _setup_fixed(fr.FLAG_RESUME)
        + len(token).to_bytes(2, "big")
        + token
        + bytes((len(md.COMPOSITE_MIME),))
        + md.COMPOSITE_MIME.encode()
        + b"\x01x"
    )
    async with await RawClient.connect(address_of(node, transport), transport) as c:
        await c.send(setup)
        await _refused(c, ErrorCode.UNSUPPORTED_SETUP, "resumption")
    await assert_serves(node, transport)


async def test_setup_with_unsupported_metadata_mime(node: BrokerProcess, transport: str) -> None:
    async with await RawClient.connect(address_of(node, transport), transport) as c:
        await c.send(fr.setup_frame(metadata_mime="application/json"))
        await _refused(c, ErrorCode.UNSUPPORTED_SETUP, "metadata MIME type 'application/json' is not supported")
    await assert_serves(node, transport)


async def test_setup_with_unsupported_version(node: BrokerProcess) -> None:
    async with await RawClient.tcp(node.tcp) as c:
        await c.send(fr.setup_frame(version=(2, 0)))
        await _refused(c, ErrorCode.UNSUPPORTED_SETUP, "protocol version 2.0 is not supported")
    await assert_serves(node)


async def test_setup_with_bad_registration(node: BrokerProcess) -> None:
    async with await RawClient.tcp(node.tcp) as c:
        await c.send(fr.setup_frame(metadata=md.composite_entry(md.REGISTER_MIME, b'{"services": [1]}')))
        await _refused(c, ErrorCode.INVALID_SETUP, "registration 'services' must be a list of non-empty strings")
    await assert_serves(node)


async def test_request_without_route_is_invalid_and_the_connection_stays(node: BrokerProcess, transport: str) -> None:
    async with await raw_requester(node, transport) as c:
        sid = c.next_stream_id()
        await c.send(fr.request_frame(FrameType.REQUEST_RESPONSE, sid, None, b"no metadata"))
        await c.expect_error(ErrorCode.INVALID, stream_id=sid, contains="request has no route")
        sid = c.next_stream_id()
        unknown_only = md.composite_entry("text/plain", b"not a route")
        await c.send(fr.request_frame(FrameType.REQUEST_STREAM, sid, unknown_only, b""))
        await c.expect_error(ErrorCode.INVALID, stream_id=sid, contains="request has no route")
        # same connection, a routed request: answered (REJECTED, nobody provides it)
        sid = await c.request(FrameType.REQUEST_RESPONSE, "nobody.here.m")
        await c.expect_error(ErrorCode.REJECTED, stream_id=sid, contains="no provider for service 'nobody.here'")


async def test_request_with_unreadable_metadata_is_invalid(node: BrokerProcess) -> None:
    async with await raw_requester(node) as c:
        sid = c.next_stream_id()
        broken = md.composite_entry(md.ROUTING_MIME, md.routing("a.b"))[:-2]
        await c.send(fr.request_frame(FrameType.REQUEST_RESPONSE, sid, broken, b""))
        await c.expect_error(ErrorCode.INVALID, stream_id=sid, contains="unreadable request metadata")


async def test_second_setup_is_a_connection_error(node: BrokerProcess) -> None:
    async with await raw_requester(node) as c:
        await c.setup()
        await _refused(c, ErrorCode.CONNECTION_ERROR, "SETUP received twice")
    await assert_serves(node)


async def test_deeply_nested_registration_json(node: BrokerProcess, transport: str) -> None:
    """JSON nested deeper than Python's recursion limit is refused like any bad registration."""
    deep = b"[" * 20_000 + b"]" * 20_000
    async with await RawClient.connect(address_of(node, transport), transport) as c:
        await c.send(fr.setup_frame(metadata=md.composite_entry(md.REGISTER_MIME, deep)))
        await _refused(c, ErrorCode.INVALID_SETUP, "registration entry is not UTF-8 JSON")
    async with await raw_requester(node, transport) as c:
        await c.send(fr.metadata_push_frame(md.composite_entry(md.REGISTER_MIME, deep)))
        await _refused(c, ErrorCode.CONNECTION_ERROR, "bad METADATA_PUSH: registration entry is not UTF-8 JSON")
    await assert_serves(node, transport)
