"""The WebSocket listener after the upgrade (``broker.transports.WsSession``), on a real node.

The attack test: before SETUP a connection may send at most ``max_setup_frame_size``
bytes; a WebSocket message declaring more is refused when its header arrives, so an
anonymous peer cannot make the node buffer megabytes per connection (aiohttp's reader
waited for the whole message, up to the 16 MiB frame limit, before anyone looked at it).
"""

from __future__ import annotations

import asyncio
import base64
import os

import pytest

from broker import frames as fr
from broker import metadata as md
from broker.frames import ErrorCode, FrameType
from broker.websocket import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, accept_key, encode_frame
from tests.support.brokerproc import BrokerFactory
from tests.support.rawclient import RawClient
from tests.support.rawws import RawWebSocket

pytestmark = pytest.mark.asyncio


@pytest.fixture(scope="module")
def node(module_broker_factory: BrokerFactory):
    return module_broker_factory.start()


def _rsocket_error(frames: list[tuple[int, bytes]]) -> tuple[int, str]:
    for opcode, payload in frames:
        if opcode == OP_BINARY and fr.header(payload, 0)[1] == FrameType.ERROR:
            return fr.parse_error(payload, 0, len(payload))
    raise AssertionError(f"no RSocket ERROR among {frames}")


async def test_a_message_declared_over_the_setup_limit_is_refused_before_its_payload(node) -> None:
    status, ws = await RawWebSocket.upgrade(node.ws)
    assert status == 101
    ws.send_header_only(OP_BINARY, 8 << 20)  # 8 MiB announced, never sent
    code, message = _rsocket_error(await ws.recv_until_close())
    assert code == ErrorCode.CONNECTION_ERROR
    assert "8388608 bytes exceeds the maximum frame size of 65536 bytes before SETUP (max_setup_frame_size)" in message
    ws.close()
    async with await RawClient.ws(node.ws) as other:  # the node serves everyone else
        await other.setup()


async def test_ping_is_answered_and_a_fragmented_message_is_one_frame(node) -> None:
    status, ws = await RawWebSocket.upgrade(node.ws)
    assert status == 101
    ws.send(OP_PING, b"are you there")
    assert await ws.recv() == (OP_PONG, b"are you there")
    setup = fr.setup_frame(metadata=md.composite_entry(md.REGISTER_MIME, b'{"services": ["ws.frag"], "instance": "f1"}'))
    ws.send(OP_BINARY, setup[:7], fin=False)
    ws.send(OP_CONT, setup[7:20], fin=False)
    ws.send(OP_CONT, setup[20:])
    ws.send(OP_BINARY, fr.keepalive_frame(True, b"k"))  # answered only if the SETUP was taken whole
    opcode, payload = await ws.recv()
    assert opcode == OP_BINARY and fr.header(payload, 0)[1] == FrameType.KEEPALIVE
    ws.close()


async def test_a_text_message_gets_a_named_error(node) -> None:
    _, ws = await RawWebSocket.upgrade(node.ws)
    ws.send(OP_TEXT, b"hello")
    code, message = _rsocket_error(await ws.recv_until_close())
    assert code == ErrorCode.CONNECTION_ERROR and "text messages are not RSocket frames" in message


async def test_a_close_frame_is_answered_with_a_close(node) -> None:
    _, ws = await RawWebSocket.upgrade(node.ws)
    ws.send(OP_CLOSE, (1000).to_bytes(2, "big"))
    frames = await ws.recv_until_close()
    assert frames and frames[-1][0] == OP_CLOSE


@pytest.mark.parametrize(
    "headers, reason",
    [
        ({"Upgrade": ""}, "send an upgrade request"),
        ({"Sec-WebSocket-Version": "8"}, "Sec-WebSocket-Version must be 13"),
        ({"Sec-WebSocket-Key": "short"}, "Sec-WebSocket-Key must be 16 bytes in base64"),
    ],
)
async def test_a_bad_upgrade_request_gets_400_saying_why(node, headers: dict[str, str], reason: str) -> None:
    status, ws = await RawWebSocket.upgrade(node.ws, headers)
    body = await ws.reader.read(4096)
    assert status == 400 and reason in body.decode()
    ws.close()


async def _raw_upgrade(address: str, chunks: int, behind: bytes = b"") -> RawWebSocket:
    """Send the upgrade request in ``chunks`` separate writes with ``behind`` (WebSocket
    frames) right after it, before any answer; check the 101 and hand the socket back."""
    host, _, port = address.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    key = base64.b64encode(os.urandom(16)).decode()
    request = (f"GET /rsocket HTTP/1.1\r\nHost: {address}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
    step = -(-len(request) // chunks)
    for i in range(0, len(request), step):
        writer.write(request[i : i + step])
        await writer.drain()
        await asyncio.sleep(0.05)  # separate reads on the node's side
    writer.write(behind)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 101 ") and accept_key(key).encode() in head, head
    return RawWebSocket(reader, writer)


def _setup_and_ping() -> bytes:
    setup = fr.setup_frame(metadata=md.composite_entry(md.REGISTER_MIME, b'{"services": ["ws.eager"], "instance": "e1"}'))
    return encode_frame(OP_BINARY, setup, masked=True) + encode_frame(OP_BINARY, fr.keepalive_frame(True, b"k"), masked=True)


async def test_frames_sent_right_behind_the_upgrade_request_are_taken(node) -> None:
    ws = await _raw_upgrade(node.ws, 1, behind=_setup_and_ping())
    opcode, payload = await ws.recv()  # the KEEPALIVE is answered only if the SETUP was taken
    assert opcode == OP_BINARY and fr.header(payload, 0)[1] == FrameType.KEEPALIVE
    ws.close()


async def test_an_upgrade_request_arriving_in_pieces_is_answered(node) -> None:
    ws = await _raw_upgrade(node.ws, 4)
    ws.writer.write(_setup_and_ping())
    opcode, payload = await ws.recv()
    assert opcode == OP_BINARY and fr.header(payload, 0)[1] == FrameType.KEEPALIVE
    ws.close()


async def test_a_connection_that_never_sends_its_request_is_closed_at_the_setup_timeout(broker_factory) -> None:
    """Slow loris on the WebSocket port: a socket that sends no request (or never ends its
    head) must not hold a file descriptor forever; it gets the SETUP timeout, like a socket
    on the TCP port that sends no SETUP."""
    node = broker_factory.start("--setup-timeout-s", "1")
    host, _, port = node.ws.rpartition(":")
    silent = await asyncio.open_connection(host, int(port))
    partial = await asyncio.open_connection(host, int(port))
    partial[1].write(b"GET /rsocket HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
    for reader, writer in (silent, partial):
        answer = await asyncio.wait_for(reader.read(), 15)  # read() returns once the node closed
        assert answer.startswith(b"HTTP/1.1 408 ") and b"within 1 s (setup_timeout_s)" in answer, answer
        writer.close()
    async with await RawClient.ws(node.ws) as other:  # the node serves everyone else
        await other.setup()
