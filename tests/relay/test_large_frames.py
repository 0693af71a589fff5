"""Frames near the limit and payloads above 16 MiB.

A TCP frame cannot exceed 16 MiB - 1 (24-bit length prefix), so bigger payloads travel as
fragments (rsocket-py's ``fragment_size_bytes``); the broker passes fragments through
without reassembling them. The configured max frame size is enforced exactly: a frame of
that size passes, one byte more is refused with ERROR(CONNECTION_ERROR) naming the size.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from rsocket.awaitable.awaitable_rsocket import AwaitableRSocket
from rsocket.payload import Payload
from rsocket.streams.stream_from_generator import StreamFromGenerator

from broker import frames as fr
from broker import metadata as md
from broker.client.rsocketpy import connect, route
from broker.frames import ErrorCode, FrameType
from tests.relay.rsocket_provider import Recorder, router_for
from tests.support.admin import service_instances, wait_for
from tests.support.brokerproc import BrokerFactory, BrokerProcess
from tests.support.peers import assert_serves, raw_provider, raw_requester

MAX_FRAME = 65_536
BIG = 17 * 1024 * 1024 + 123
FRAGMENT = 1 << 20


@pytest.fixture(scope="module")
def limited(module_broker_factory: BrokerFactory) -> BrokerProcess:
    return module_broker_factory.start("--max-frame-size", str(MAX_FRAME))


def _sized(ftype: int, stream_id: int, route_: str | None, size: int) -> bytes:
    """A request (or PAYLOAD when ``route_`` is None) of exactly ``size`` bytes."""
    if route_ is None:
        empty = fr.payload_frame(stream_id, b"", complete=True)
        return fr.payload_frame(stream_id, b"p" * (size - len(empty)), complete=True)
    meta = md.route_metadata(route_)
    empty = fr.request_frame(ftype, stream_id, meta, b"")
    return fr.request_frame(ftype, stream_id, meta, b"r" * (size - len(empty)))


async def test_frames_at_the_max_size_pass_and_one_byte_more_is_refused(
    limited: BrokerProcess, service: str, transport: str
) -> None:
    provider = await raw_provider(limited, [service], "p", transport)
    requester = await raw_requester(limited, transport)
    try:
        request = _sized(FrameType.REQUEST_RESPONSE, 1, f"{service}.m", MAX_FRAME)
        assert len(request) == MAX_FRAME
        await requester.send(request)
        got = await provider.expect(FrameType.REQUEST_RESPONSE)
        assert len(got.raw) == MAX_FRAME and got.data == request[-len(got.data) :]
        answer = _sized(FrameType.PAYLOAD, got.stream_id, None, MAX_FRAME)
        await provider.send(answer)
        back = await requester.expect(FrameType.PAYLOAD, stream_id=1)
        assert back.raw[4:] == answer[4:]
        await requester.send(_sized(FrameType.REQUEST_RESPONSE, 3, f"{service}.m", MAX_FRAME + 1))
        await requester.expect_error(
            ErrorCode.CONNECTION_ERROR,
            contains=f"frame of {MAX_FRAME + 1} bytes exceeds the maximum frame size of {MAX_FRAME} bytes",
        )
        await requester.wait_closed()
    finally:
        await requester.close()
        await provider.close()
    await assert_serves(limited, transport)


async def test_payloads_over_16_mib_pass_both_ways_fragmented(node: BrokerProcess, service: str) -> None:
    host, port = node.tcp_address
    async with connect(
        host, port, services=[service], router=router_for(service), instance="big", fragment_size_bytes=FRAGMENT
    ):
        await wait_for(lambda: service_instances(node.admin, service), message="provider registered")
        async with connect(host, port, fragment_size_bytes=FRAGMENT) as raw:
            client = AwaitableRSocket(raw)
            data = hashlib.sha256(b"seed").digest() * (BIG // 32) + b"tail"
            reply = await client.request_response(Payload(data, route(f"{service}.echo")))
            assert len(reply.data) == len(data) and reply.data == data


async def test_fragmented_fire_and_forget_and_channel_over_16_mib(node: BrokerProcess, service: str) -> None:
    """Fire-and-forget ends with its last fragment; a channel carries big messages both ways."""
    recorder = Recorder()
    host, port = node.tcp_address
    async with connect(
        host, port, services=[service], router=router_for(service, recorder), instance="big2", fragment_size_bytes=FRAGMENT
    ):
        await wait_for(lambda: service_instances(node.admin, service), message="provider registered")
        async with connect(host, port, fragment_size_bytes=FRAGMENT) as raw:
            client = AwaitableRSocket(raw)
            big = b"f" * BIG
            await client.fire_and_forget(Payload(big, route(f"{service}.log")))
            await wait_for(lambda: recorder.fire_and_forget, message="fire-and-forget delivered")
            assert recorder.fire_and_forget == [big]

            def messages() -> Any:
                yield Payload(b"c" * BIG), True

            # big messages towards the provider (REQUEST_CHANNEL and PAYLOAD fragments); big
            # answers are covered by request-response: rsocket-py itself interleaves a
            # provider's next frame with the fragments of a big one it is still sending
            items = await client.request_channel(Payload(b"o" * BIG, route(f"{service}.sizes")), StreamFromGenerator(messages))
            assert [p.data for p in items] == [str(BIG).encode(), str(BIG).encode(), b"<end>"]
