"""Configured limits: each one triggers its named error and the node keeps serving others."""

from __future__ import annotations

import pytest

from broker import frames as fr
from broker.frames import ErrorCode, FrameType, payload_frame
from tests.support.admin import connections, wait_for
from tests.support.brokerproc import BrokerFactory, BrokerProcess
from tests.support.peers import address_of, assert_serves, raw_provider, raw_requester
from tests.support.rawclient import RawClient

MAX_STREAMS = 3
SETUP_TIMEOUT_S = 2
MAX_PER_SOURCE = 4
LEASE_TTL_MS = 600


@pytest.fixture(scope="module")
def node(module_broker_factory: BrokerFactory) -> BrokerProcess:
    return module_broker_factory.start(
        "--max-streams", str(MAX_STREAMS), "--setup-timeout-s", str(SETUP_TIMEOUT_S), "--lease-ttl-ms", str(LEASE_TTL_MS)
    )


async def test_setup_timeout(node: BrokerProcess, transport: str) -> None:
    async with await RawClient.connect(address_of(node, transport), transport) as silent:
        await assert_serves(node, transport)  # others are served while one connection dawdles
        await silent.expect_error(ErrorCode.INVALID_SETUP, contains=f"no SETUP frame within {SETUP_TIMEOUT_S} s")
        await silent.wait_closed()
    await assert_serves(node, transport)


async def test_max_streams_per_connection(node: BrokerProcess, service: str, transport: str) -> None:
    provider = await raw_provider(node, [service], "holder")
    requester = await raw_requester(node, transport)
    try:
        sids = [await requester.request(FrameType.REQUEST_RESPONSE, f"{service}.m", b"%d" % i) for i in range(MAX_STREAMS)]
        held = [await provider.expect(FrameType.REQUEST_RESPONSE) for _ in sids]
        over = await requester.request(FrameType.REQUEST_RESPONSE, f"{service}.m", b"one too many")
        await requester.expect_error(
            ErrorCode.REJECTED, stream_id=over, contains=f"too many concurrent streams on this connection (limit {MAX_STREAMS})"
        )
        # another connection is not limited by this one's streams
        await assert_serves(node, transport)
        # finishing one stream frees a slot on the same connection
        await provider.send(payload_frame(held[0].stream_id, b"done", complete=True))
        assert (await requester.expect(FrameType.PAYLOAD, stream_id=sids[0])).data == b"done"
        again = await requester.request(FrameType.REQUEST_RESPONSE, f"{service}.m", b"fits now")
        assert (await provider.expect(FrameType.REQUEST_RESPONSE)).data == b"fits now"
        assert again not in sids
    finally:
        await requester.close()
        await provider.close()


async def test_max_connections_per_source(broker_factory: BrokerFactory, transport: str) -> None:
    node = broker_factory.start("--max-connections-per-source", str(MAX_PER_SOURCE))
    address = address_of(node, transport)
    # assert_serves below opens two connections of its own
    kept = [await raw_requester(node, transport) for _ in range(MAX_PER_SOURCE - 2)]
    try:
        await assert_serves(node, transport)
        await _wait_connections_closed(node, len(kept))
        extra = [await raw_requester(node, transport) for _ in range(2)]
        refused = await RawClient.connect(address, transport)
        await refused.expect_error(ErrorCode.REJECTED_SETUP, contains=f"too many connections from 127.0.0.1 (limit {MAX_PER_SOURCE})")
        await refused.wait_closed()
        await refused.close()
        # the connections already admitted are still served
        sid = await kept[0].request(FrameType.REQUEST_RESPONSE, "nobody.home.m")
        await kept[0].expect_error(ErrorCode.REJECTED, stream_id=sid, contains="no provider for service 'nobody.home'")
        # closing some makes room again
        for c in extra:
            await c.close()
        await _wait_connections_closed(node, len(kept))
        await assert_serves(node, transport)
    finally:
        for c in kept:
            await c.close()


async def _wait_connections_closed(node: BrokerProcess, left: int) -> None:
    """The broker notices closed connections asynchronously; wait until only ``left`` remain."""

    async def few_enough() -> bool:
        return len(await connections(node.admin)) <= left

    await wait_for(few_enough, message=f"at most {left} connections left")


async def test_lease_granted_by_the_broker_is_renewed(node: BrokerProcess) -> None:
    """A client that negotiated leases gets one at once and a fresh one before each expires."""
    async with await RawClient.tcp(node.tcp) as c:
        await c.setup(lease=True)
        for _ in range(3):
            lease = await c.expect(FrameType.LEASE, skip=())
            ttl_ms, count = fr.parse_lease(lease.raw, 0, len(lease.raw))
            assert ttl_ms == LEASE_TTL_MS and count > 0
