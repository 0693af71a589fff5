"""The node as an operator sees it: admin endpoints and the SIGTERM drain."""

from __future__ import annotations

import asyncio
import signal

import aiohttp
import pytest

from broker.frames import FLAG_COMPLETE, ErrorCode, FrameType, cancel_frame, payload_frame
from tests.support.admin import connections, get_json, services, wait_for
from tests.support.brokerproc import BrokerFactory, BrokerProcess
from tests.support.peers import address_of, raw_provider, raw_requester
from tests.support.rawclient import RawClient


async def test_health_endpoints(node: BrokerProcess) -> None:
    assert await get_json(node.admin, "/health/live") == (200, {"status": "live"})
    assert await get_json(node.admin, "/health/ready") == (200, {"status": "ready"})


async def test_node_endpoint_matches_the_ready_line(node: BrokerProcess) -> None:
    status, body = await get_json(node.admin, "/api/v1/node")
    assert status == 200
    assert body["node_id"] == node.node_id
    assert {k: body["addresses"][k] for k in ("tcp", "ws", "admin", "cluster")} == {
        "tcp": node.tcp,
        "ws": node.ws,
        "admin": node.admin,
        "cluster": None,
    }
    assert body["draining"] is False
    assert body["limits"]["max_frame_size"] == 0xFFFFFF


async def test_connections_and_services_endpoints(node: BrokerProcess, service: str) -> None:
    provider = await raw_provider(node, [service, f"{service}.extra"], "shown-instance", weight=7)
    requester = await raw_requester(node, "ws")
    try:
        sid = await requester.request(FrameType.REQUEST_STREAM, f"{service}.s", initial_n=1)
        await provider.expect(FrameType.REQUEST_STREAM)
        view = await services(node.admin)
        assert view[service]["policy"] == "round_robin"
        [entry] = view[service]["providers"]
        assert entry["instance"] == "shown-instance"
        assert entry["weight"] == 7 and entry["outstanding"] == 1 and entry["node"] == node.node_id
        assert view[f"{service}.extra"]["providers"][0]["instance"] == "shown-instance"
        conns = {c["id"]: c for c in await connections(node.admin)}
        mine = conns[entry["connection"]]
        assert mine["transport"] == "tcp" and mine["state"] == "serving"
        assert mine["instance"] == "shown-instance"
        assert sorted(mine["services"]) == sorted([service, f"{service}.extra"])
        assert mine["outstanding_as_provider"] == 1 and mine["streams"] == 1
        ws_conns = [c for c in conns.values() if c["transport"] == "ws" and c["streams"] == 1]
        assert len(ws_conns) == 1 and ws_conns[0]["instance"] is None
        await requester.send(cancel_frame(sid))
    finally:
        await requester.close()
        await provider.close()


async def test_sigterm_drains_in_flight_streams_then_exits_0(broker_factory: BrokerFactory, service: str, transport: str) -> None:
    node = broker_factory.start("--drain-timeout-s", "60")
    provider = await raw_provider(node, [service], "p", transport)
    requester = await raw_requester(node, transport)
    idle = await raw_requester(node, transport)
    try:
        sid = await requester.request(FrameType.REQUEST_STREAM, f"{service}.s", initial_n=5)
        request = await provider.expect(FrameType.REQUEST_STREAM)
        await provider.send(payload_frame(request.stream_id, b"before"))
        assert (await requester.expect(FrameType.PAYLOAD, stream_id=sid)).data == b"before"

        node.signal(signal.SIGTERM)

        async def not_ready() -> bool:
            status, body = await get_json(node.admin, "/health/ready")
            return status == 503 and body["reason"] == "draining"

        await wait_for(not_ready, message="/health/ready turns 503")
        # a connection without streams is told to go elsewhere at once
        await idle.expect_error(ErrorCode.CONNECTION_CLOSE, contains="is draining")
        await idle.wait_closed()
        late = await requester.request(FrameType.REQUEST_RESPONSE, f"{service}.m")
        await requester.expect_error(ErrorCode.REJECTED, stream_id=late, contains="is draining")
        with pytest.raises((OSError, aiohttp.ClientError)):
            await RawClient.connect(address_of(node, transport), transport)
        assert node.running

        # the stream in flight finishes normally
        await provider.send(payload_frame(request.stream_id, b"after", complete=True))
        last = await requester.expect(FrameType.PAYLOAD, stream_id=sid)
        assert last.data == b"after" and last.flags & FLAG_COMPLETE
        # connections are closed once they have no open stream
        await requester.expect_error(ErrorCode.CONNECTION_CLOSE, contains="is draining")
        await requester.wait_closed()
        assert await asyncio.to_thread(node.wait, 60) == 0
    finally:
        for c in (idle, requester, provider):
            await c.close()


async def test_drain_timeout_cuts_off_streams_with_an_error_and_exits_0(broker_factory: BrokerFactory, service: str) -> None:
    node = broker_factory.start("--drain-timeout-s", "1")
    provider = await raw_provider(node, [service], "stuck")
    requester = await raw_requester(node)
    try:
        sid = await requester.request(FrameType.REQUEST_STREAM, f"{service}.s", initial_n=5)
        await provider.expect(FrameType.REQUEST_STREAM)
        node.signal(signal.SIGTERM)
        # the provider never finishes: after the drain timeout both sides hear why, then EOF
        for client in (requester, provider):
            frames = await client.wait_closed()
            errors = [f for f in frames if f.type == FrameType.ERROR]
            assert errors, f"connection closed without an ERROR: {frames}"
            assert any(f.stream_id == 0 and f.error[0] == ErrorCode.CONNECTION_CLOSE for f in errors), errors
        assert all(f.stream_id in (0, sid) for f in errors)
        assert await asyncio.to_thread(node.wait, 60) == 0
    finally:
        await requester.close()
        await provider.close()
