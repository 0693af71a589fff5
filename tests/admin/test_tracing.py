"""W3C trace context through a real two-node cluster: each node records its hop span with the
provider it chose and forwards the trace entry with its own span as the parent, so the spans
nest (requester → n1 → n2 → provider), and a malformed entry is ignored without failing the
request."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from types import ModuleType

import pytest

from broker import frames as fr
from broker import metadata as md
from broker import tracing
from broker.frames import ErrorCode, FrameType
from tests.support.admin import get_json, wait_for
from tests.support.cluster import Cluster, ClusterFactory
from tests.relay.test_parsers_fuzz import HOT_PATHS
from tests.support.rawclient import RawClient

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    factory = ClusterFactory()
    try:
        started = factory.start(2, "--trace-spans-kept", "3")
        asyncio.run(started.wait_converged())
        yield started
    finally:
        factory.close()


async def traced_call(requester: RawClient, provider: RawClient, route: str, trace_entry: bytes) -> bytes:
    """Send one request-response with ``trace_entry``; return the metadata the provider got."""
    sid = requester.next_stream_id()
    metadata = md.route_metadata(route) + trace_entry
    await requester.send(fr.request_frame(FrameType.REQUEST_RESPONSE, sid, metadata, b"x"))
    request = await provider.expect(FrameType.REQUEST_RESPONSE)
    await provider.send(fr.payload_frame(request.stream_id, b"y", next_=True, complete=True))
    await requester.expect(FrameType.PAYLOAD, stream_id=sid)
    return request.metadata


async def spans(admin: str | None, route: str) -> list[dict]:
    status, body = await get_json(admin, f"/api/v1/traces?route={route}")
    assert status == 200, body
    return list(body["spans"])


async def test_hop_spans_nest_from_the_requester_through_both_nodes_to_the_provider(cluster: Cluster) -> None:
    n1, n2 = cluster["n1"], cluster["n2"]
    traceparent = f"00-{TRACE_ID}-{CLIENT_SPAN}-01"
    entry = tracing.entry(traceparent, "vendor=abc")
    async with await RawClient.tcp(n2.tcp) as provider, await RawClient.tcp(n1.tcp) as requester:
        await provider.setup(["t.calc"], "calc-1")
        await cluster.wait_serves("t.calc", {"calc-1"})
        await requester.setup()
        received = await traced_call(requester, provider, "t.calc.add", entry)
    [first] = await wait_for(lambda: spans(n1.admin, "t.calc.add"), message="n1's span")
    [second] = await wait_for(lambda: spans(n2.admin, "t.calc.add"), message="n2's span")
    # the provider's parent is n2's hop span, whose parent is n1's, whose parent is the requester's
    got = md.find_entry(received, tracing.TRACE_MIME)
    assert got == f"00-{TRACE_ID}-{second['span_id']}-01\nvendor=abc".encode(), got
    assert received == md.route_metadata("t.calc.add") + entry.replace(CLIENT_SPAN.encode(), second["span_id"].encode())
    assert second["parent_span_id"] == first["span_id"] and first["parent_span_id"] == CLIENT_SPAN
    assert len({CLIENT_SPAN, first["span_id"], second["span_id"]}) == 3
    for span, node in ((first, "n1"), (second, "n2")):
        assert span["trace_id"] == TRACE_ID and span["trace_flags"] == "01" and len(span["span_id"]) == 16, span
        assert span["node"] == node and span["outcome"] == "ok" and span["tracestate"] == "vendor=abc"
        assert span["provider"] == "calc-1" and span["provider_node"] == "n2"
        assert 0 <= span["first_response_s"] <= span["duration_s"]


async def test_only_the_last_spans_are_kept_and_bad_entries_are_ignored(cluster: Cluster) -> None:
    n1 = cluster["n1"]
    async with await RawClient.tcp(n1.tcp) as provider, await RawClient.tcp(n1.tcp) as requester:
        await provider.setup(["t.echo"], "echo-1")
        await cluster.wait_serves("t.echo", {"echo-1"})
        await requester.setup()
        for i in range(5):
            await traced_call(requester, provider, "t.echo.say", tracing.entry(f"00-{TRACE_ID}-{i + 1:016x}-01"))
        malformed = [
            md.composite_entry(tracing.TRACE_MIME, b"not a traceparent"),
            md.composite_entry(tracing.TRACE_MIME, f"00-{'0' * 32}-{CLIENT_SPAN}-01".encode()),
            md.composite_entry(tracing.TRACE_MIME, f"00-{TRACE_ID}-{CLIENT_SPAN}-01x".encode()),
            md.composite_entry(tracing.TRACE_MIME, f"00-{TRACE_ID.upper()}-{CLIENT_SPAN}-01".encode()),
            md.composite_entry(tracing.TRACE_MIME, f"00-{TRACE_ID}-{CLIENT_SPAN}-01\n".encode() + b"\xff" * 4),
        ]
        for bad in malformed:  # the request is served; only its tracing is dropped
            await traced_call(requester, provider, "t.echo.say", bad)
        sid = await requester.request(FrameType.REQUEST_RESPONSE, "t.nobody.say")
        await requester.expect_error(ErrorCode.REJECTED, stream_id=sid)
    kept = await spans(n1.admin, "t.echo.say")
    assert [s["parent_span_id"] for s in kept] == [f"{i:016x}" for i in (3, 4, 5)]


@pytest.mark.parametrize("hot", HOT_PATHS, ids=lambda m: m.__name__)
def test_a_forked_child_mints_other_span_ids_than_its_parent(hot: ModuleType) -> None:
    """Span ids come from a PRNG seeded from os.urandom: a forked process must reseed it, or
    parent and child would mint the same ids from then on (on each implementation)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, then out without running anything of pytest's
        os.write(write, b" ".join(b"%d" % hot.span_id() for _ in range(4)))
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = [int(n) for n in os.read(read, 1000).split()]
    os.close(read)
    parent = [hot.span_id() for _ in range(4)]
    assert len(child) == 4 and child != parent


@pytest.mark.parametrize("hot", HOT_PATHS, ids=lambda m: m.__name__)
def test_span_ids_repeat_from_a_seed_and_are_never_zero(hot: ModuleType) -> None:
    """Seeded, each implementation mints the same ids again (the tests' way to compare runs);
    the compiled one's splitmix64 whose next output is 0 mints 1 instead (W3C: an all-zero
    parent id is invalid); the pure one's draw maps 0 to 1 the same way."""
    hot.seed_span_ids(7)
    first = [hot.span_id() for _ in range(100)]
    hot.seed_span_ids(7)
    assert [hot.span_id() for _ in range(100)] == first
    assert all(0 < span < 1 << 64 for span in first) and len(set(first)) == 100
    if hot.__name__ == "broker._hotpath_c":
        hot.seed_span_ids((1 << 64) - 0x9E3779B97F4A7C15)  # the next state is 0, whose mix is 0
        assert hot.span_id() == 1
