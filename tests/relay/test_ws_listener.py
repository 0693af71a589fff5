"""The WebSocket listener after the upgrade (``broker.transports.WsSession``), on a real node.

The attack test: before SETUP a connection may send at most ``max_setup_frame_size``
bytes; a WebSocket message declaring more is refused when its header arrives, so an
anonymous peer cannot make the node buffer megabytes per connection (aiohttp's reader
waited for the whole message, up to the 16 MiB frame limit, before anyone looked at it).
"""

from __future__ import annotations

import pytest

from broker import frames as fr
from broker import metadata as md
from broker.frames import ErrorCode, FrameType
from broker.websocket import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT
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
