"""Stream life across the relay: colliding ids, request-n, cancel both ways, crashes.

Raw peers on both sides, so each test sees exactly the frames the broker forwards.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from broker import frames as fr
from broker import metadata as md
from broker.frames import FLAG_COMPLETE, FLAG_NEXT, ErrorCode, FrameType, payload_frame
from tests.support.admin import service_instances, services, wait_for
from tests.support.brokerproc import BrokerProcess
from tests.support.peers import raw_provider, raw_requester

PROVIDER_SCRIPT = Path(__file__).with_name("rsocket_provider.py")


async def test_colliding_stream_ids(node: BrokerProcess, service: str, transport: str) -> None:
    """A provider that is also a requester uses stream id 1 for its own request while a
    requester's stream 1 is relayed to it: the broker keeps the two apart."""
    a, b = f"{service}.a", f"{service}.b"
    provider = await raw_provider(node, [a], "pa", transport)  # serves a, calls b and itself
    other = await raw_provider(node, [b], "pb")
    requester = await raw_requester(node, transport)
    try:
        assert await requester.request(FrameType.REQUEST_RESPONSE, f"{a}.m", b"from requester") == 1
        inbound = await provider.expect(FrameType.REQUEST_RESPONSE)
        assert inbound.stream_id % 2 == 0 and inbound.data == b"from requester"
        assert await provider.request(FrameType.REQUEST_RESPONSE, f"{b}.m", b"from provider") == 1
        at_other = await other.expect(FrameType.REQUEST_RESPONSE)
        assert at_other.data == b"from provider"
        # the provider calls its own service: the same connection sees both ends of one stream
        assert await provider.request(FrameType.REQUEST_RESPONSE, f"{a}.m", b"to myself") == 3
        to_self = await provider.expect(FrameType.REQUEST_RESPONSE)
        assert to_self.data == b"to myself" and to_self.stream_id not in (1, 3, inbound.stream_id)
        # answers go back in an order unlike the requests'
        await provider.send(payload_frame(to_self.stream_id, b"self answer", complete=True))
        await other.send(payload_frame(at_other.stream_id, b"b answer", complete=True))
        await provider.send(payload_frame(inbound.stream_id, b"a answer", complete=True))
        got = {}
        for _ in range(2):
            frame = await provider.expect(FrameType.PAYLOAD)
            got[frame.stream_id] = frame.data
        assert got == {1: b"b answer", 3: b"self answer"}
        assert (await requester.expect(FrameType.PAYLOAD, stream_id=1)).data == b"a answer"
    finally:
        for c in (requester, other, provider):
            await c.close()


async def test_request_n_passes_end_to_end(node: BrokerProcess, service: str, transport: str) -> None:
    provider = await raw_provider(node, [service], "p", transport)
    requester = await raw_requester(node, transport)
    try:
        sid = await requester.request(FrameType.REQUEST_STREAM, f"{service}.s", b"go", initial_n=3)
        request = await provider.expect(FrameType.REQUEST_STREAM)
        assert request.request_n == 3 and request.data == b"go"
        await requester.send(fr.request_n_frame(sid, 5))
        more = await provider.expect(FrameType.REQUEST_N, stream_id=request.stream_id)
        assert more.request_n == 5
        await requester.send(fr.request_n_frame(sid, fr.MAX_REQUEST_N))
        assert (await provider.expect(FrameType.REQUEST_N)).request_n == fr.MAX_REQUEST_N
        await provider.send(payload_frame(request.stream_id, b"1"), payload_frame(request.stream_id, b"", next_=False, complete=True))
        assert (await requester.expect(FrameType.PAYLOAD, stream_id=sid)).data == b"1"
        done = await requester.expect(FrameType.PAYLOAD, stream_id=sid)
        assert done.flags & FLAG_COMPLETE and not done.flags & FLAG_NEXT
        # the stream is over: a late REQUEST_N is dropped, not forwarded
        await requester.send(fr.request_n_frame(sid, 1), fr.keepalive_frame(True))
        await requester.expect(FrameType.KEEPALIVE, skip=())
        await provider.send(fr.keepalive_frame(True))
        assert (await provider.expect(FrameType.KEEPALIVE, skip=())).type == FrameType.KEEPALIVE
    finally:
        await requester.close()
        await provider.close()


async def test_requester_cancel_reaches_the_provider(node: BrokerProcess, service: str, transport: str) -> None:
    provider = await raw_provider(node, [service], "p", transport)
    requester = await raw_requester(node, transport)
    try:
        sid = await requester.request(FrameType.REQUEST_STREAM, f"{service}.s", initial_n=10)
        request = await provider.expect(FrameType.REQUEST_STREAM)
        await provider.send(payload_frame(request.stream_id, b"1"))
        await requester.expect(FrameType.PAYLOAD, stream_id=sid)
        await requester.send(fr.cancel_frame(sid))
        await provider.expect(FrameType.CANCEL, stream_id=request.stream_id)
        # frames the provider sent before it saw the CANCEL are dropped by the broker
        await provider.send(payload_frame(request.stream_id, b"late"), fr.keepalive_frame(True))
        await provider.expect(FrameType.KEEPALIVE, skip=())
        await requester.send(fr.keepalive_frame(True))
        assert (await requester.recv()).type == FrameType.KEEPALIVE
    finally:
        await requester.close()
        await provider.close()


async def test_provider_cancel_on_a_channel_reaches_the_requester(node: BrokerProcess, service: str, transport: str) -> None:
    provider = await raw_provider(node, [service], "p", transport)
    requester = await raw_requester(node, transport)
    try:
        sid = await requester.request(FrameType.REQUEST_CHANNEL, f"{service}.c", b"first", initial_n=4)
        request = await provider.expect(FrameType.REQUEST_CHANNEL)
        assert request.data == b"first" and request.request_n == 4
        await provider.send(fr.request_n_frame(request.stream_id, 2))
        assert (await requester.expect(FrameType.REQUEST_N, stream_id=sid)).request_n == 2
        await requester.send(payload_frame(sid, b"second"))
        assert (await provider.expect(FrameType.PAYLOAD, stream_id=request.stream_id)).data == b"second"
        # the provider wants no more input, but its own output goes on
        await provider.send(fr.cancel_frame(request.stream_id))
        await requester.expect(FrameType.CANCEL, stream_id=sid)
        await provider.send(payload_frame(request.stream_id, b"out", complete=True))
        done = await requester.expect(FrameType.PAYLOAD, stream_id=sid)
        assert done.data == b"out" and done.flags & FLAG_COMPLETE
    finally:
        await requester.close()
        await provider.close()


async def test_requester_disconnect_cancels_its_streams(node: BrokerProcess, service: str, transport: str) -> None:
    provider = await raw_provider(node, [service], "p")
    requester = await raw_requester(node, transport)
    try:
        for _ in range(2):
            await requester.request(FrameType.REQUEST_STREAM, f"{service}.s", initial_n=1)
        opened = {(await provider.expect(FrameType.REQUEST_STREAM)).stream_id for _ in range(2)}
        await requester.close()
        cancelled = {(await provider.expect(FrameType.CANCEL)).stream_id for _ in range(2)}
        assert cancelled == opened
    finally:
        await provider.close()


async def test_provider_connection_lost_mid_stream(node: BrokerProcess, service: str, transport: str) -> None:
    provider = await raw_provider(node, [service], "doomed", transport)
    requester = await raw_requester(node, transport)
    try:
        sid = await requester.request(FrameType.REQUEST_STREAM, f"{service}.s", initial_n=10)
        request = await provider.expect(FrameType.REQUEST_STREAM)
        await provider.send(payload_frame(request.stream_id, b"1"))
        await requester.expect(FrameType.PAYLOAD, stream_id=sid)
        await provider.close()
        await requester.expect_error(ErrorCode.APPLICATION_ERROR, stream_id=sid, contains="provider 'doomed' went away")
        assert await service_instances(node.admin, service) == []
        again = await requester.request(FrameType.REQUEST_RESPONSE, f"{service}.m")
        await requester.expect_error(ErrorCode.REJECTED, stream_id=again, contains=f"no provider for service '{service}'")
    finally:
        await requester.close()


async def test_provider_process_killed_mid_stream(node: BrokerProcess, service: str) -> None:
    """An rsocket-py provider in its own process, SIGKILLed while it streams to a requester."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(PROVIDER_SCRIPT), str(node.tcp), service,
        stdin=asyncio.subprocess.DEVNULL,
    )
    requester = await raw_requester(node)
    try:
        await wait_for(lambda: service_instances(node.admin, service), message="provider process registered")
        sid = await requester.request(FrameType.REQUEST_STREAM, f"{service}.ticks", initial_n=2)
        assert (await requester.expect(FrameType.PAYLOAD, stream_id=sid)).data == b"0"
        process.kill()
        await process.wait()
        # a tick already on its way may still arrive; then the stream must end in an ERROR
        frame = await requester.recv()
        while frame.type == FrameType.PAYLOAD and frame.stream_id == sid:
            frame = await requester.recv()
        assert frame.type == FrameType.ERROR and frame.stream_id == sid, frame
        code, message = frame.error
        assert code == ErrorCode.APPLICATION_ERROR and "went away" in message, frame
        assert await service_instances(node.admin, service) == []
        again = await requester.request(FrameType.REQUEST_RESPONSE, f"{service}.m")
        await requester.expect_error(ErrorCode.REJECTED, stream_id=again, contains=f"no provider for service '{service}'")
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await requester.close()


def _fragment(ftype: int, sid: int, metadata: bytes | None, data: bytes, *, follows: bool, initial_n: int = 0) -> bytes:
    if ftype == FrameType.PAYLOAD:
        return fr.payload_frame(sid, data, metadata, follows=follows, complete=False)
    return fr.request_frame(ftype, sid, metadata, data, follows=follows, initial_n=initial_n)


async def test_request_with_metadata_split_across_fragments(node: BrokerProcess, service: str, transport: str) -> None:
    """The route is only known once the metadata is complete: the broker holds the first
    fragments, then forwards all of them in order, unchanged but for the stream id."""
    provider = await raw_provider(node, [service], "p", transport)
    requester = await raw_requester(node, transport)
    try:
        meta = md.route_metadata(f"{service}.m") + md.composite_entry("text/plain", b"x" * 300)
        parts = [
            _fragment(FrameType.REQUEST_STREAM, 1, meta[:5], b"", follows=True, initial_n=9),
            _fragment(FrameType.PAYLOAD, 1, meta[5:100], b"", follows=True),
            _fragment(FrameType.PAYLOAD, 1, meta[100:], b"data-1", follows=True),
            _fragment(FrameType.PAYLOAD, 1, None, b"data-2", follows=False),
        ]
        await requester.send(*parts)
        got = [await provider.recv() for _ in parts]
        assert [f.type for f in got] == [FrameType.REQUEST_STREAM] + [FrameType.PAYLOAD] * 3
        assert len({f.stream_id for f in got}) == 1 and got[0].stream_id % 2 == 0
        assert [f.raw[4:] for f in got] == [p[4:] for p in parts]
        assert got[0].request_n == 9
        await provider.send(payload_frame(got[0].stream_id, b"ok", complete=True))
        assert (await requester.expect(FrameType.PAYLOAD, stream_id=1)).data == b"ok"
    finally:
        await requester.close()
        await provider.close()


async def test_fragmented_request_metadata_over_1_mib_is_refused(node: BrokerProcess) -> None:
    """The default max_request_metadata holds a fragmented request's frames up to 1 MiB."""
    async with await raw_requester(node) as requester:
        chunk = b"m" * (256 * 1024)
        frames_ = [_fragment(FrameType.REQUEST_RESPONSE, 1, chunk, b"", follows=True)]
        frames_ += [_fragment(FrameType.PAYLOAD, 1, chunk, b"", follows=True) for _ in range(4)]
        await requester.send(*frames_)
        await requester.expect_error(
            ErrorCode.REJECTED, stream_id=1, contains="fragmented request metadata exceeds max_request_metadata (1048576 bytes)"
        )
        # the rest of that request is dropped; the connection goes on
        await requester.send(_fragment(FrameType.PAYLOAD, 1, None, b"end", follows=False))
        sid = await requester.request(FrameType.REQUEST_RESPONSE, "nobody.big.m")
        await requester.expect_error(ErrorCode.REJECTED, stream_id=sid, contains="no provider for service 'nobody.big'")


async def test_error_passes_through_unchanged(node: BrokerProcess, service: str, transport: str) -> None:
    provider = await raw_provider(node, [service], "p", transport)
    requester = await raw_requester(node, transport)
    try:
        sid = await requester.request(FrameType.REQUEST_RESPONSE, f"{service}.m")
        request = await provider.expect(FrameType.REQUEST_RESPONSE)
        await provider.send(fr.error_frame(request.stream_id, 0x00000301, "custom application code, ünïcode"))
        frame = await requester.expect(FrameType.ERROR, stream_id=sid)
        assert frame.error == (0x00000301, "custom application code, ünïcode")
        # the stream is over on both sides: nothing outstanding at the provider
        [entry] = (await services(node.admin))[service]["providers"]
        assert entry["outstanding"] == 0
    finally:
        await requester.close()
        await provider.close()


async def test_no_provider_is_rejected_at_once_for_every_model(node: BrokerProcess, transport: str) -> None:
    async with await raw_requester(node, transport) as requester:
        for kind in (FrameType.REQUEST_RESPONSE, FrameType.REQUEST_STREAM, FrameType.REQUEST_CHANNEL):
            sid = await requester.request(kind, "com.acme.absent.call", b"x", initial_n=1)
            await requester.expect_error(ErrorCode.REJECTED, stream_id=sid, contains="no provider for service 'com.acme.absent'")
        # fire-and-forget has nobody to tell: dropped without a frame, the connection goes on
        await requester.request(FrameType.REQUEST_FNF, "com.acme.absent.call")
        await requester.send(fr.keepalive_frame(True, b"after-fnf"))
        answer = await requester.recv()
        assert answer.type == FrameType.KEEPALIVE and answer.raw[14:] == b"after-fnf"
