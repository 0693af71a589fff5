"""Bounds that hold before and after authentication (issue 11 §5), attacked on a real broker.

Each attack gets the named error (its message names the setting), the hit is counted in
``rsbroker_limit_hits_total{limit=...}``, and the node keeps serving everyone else.
The node runs with small limits so that each attack is cheap to mount here; the defaults
are exercised by ``benchmarks/attack_bench.py``.
"""

from __future__ import annotations

import re

import aiohttp
import pytest

from broker import frames as fr
from broker import metadata as md
from broker.frames import ErrorCode, FrameType
from tests.support.brokerproc import BrokerFactory, BrokerProcess
from tests.support.peers import assert_serves, raw_requester
from tests.support.rawclient import RawClient, provider_setup

SETUP_FRAME = 4096
ENTRIES = 16
FRAGMENTS = 8
REASSEMBLY = 64 * 1024
REASSEMBLY_TIMEOUT_S = 1


@pytest.fixture(scope="module")
def node(module_broker_factory: BrokerFactory) -> BrokerProcess:
    return module_broker_factory.start(
        "--max-setup-frame-size", str(SETUP_FRAME),
        "--max-metadata-entries", str(ENTRIES),
        "--max-fragments", str(FRAGMENTS),
        "--max-reassembly-bytes", str(REASSEMBLY),
        "--reassembly-timeout-s", str(REASSEMBLY_TIMEOUT_S),
    )  # fmt: skip


async def limit_hits(node: BrokerProcess, limit: str) -> float:
    """The node's ``rsbroker_limit_hits_total`` for ``limit`` (0 when never hit)."""
    async with aiohttp.ClientSession() as http, http.get(f"http://{node.admin}/metrics") as response:
        text = await response.text()
    found = re.search(rf'^rsbroker_limit_hits_total\{{limit="{limit}"\}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


async def test_a_partial_frame_before_setup_is_refused_from_its_length(node: BrokerProcess, transport: str) -> None:
    """A peer that has not authenticated cannot make the broker wait for (and buffer) a big frame."""
    before = await limit_hits(node, "max_setup_frame_size")
    async with await RawClient.connect(node.ws if transport == "ws" else node.tcp, transport) as client:
        big = fr.setup_frame(data=b"x" * (SETUP_FRAME + 1))
        if transport == "tcp":
            await client.send_raw(fr.with_length_prefix(big)[: SETUP_FRAME // 2])  # never finished
        else:
            await client.send(big)
        await client.expect_error(
            ErrorCode.CONNECTION_ERROR, contains=f"maximum frame size of {SETUP_FRAME} bytes before SETUP (max_setup_frame_size)"
        )
        await client.wait_closed()
    assert await limit_hits(node, "max_setup_frame_size") > before
    await assert_serves(node, transport)


async def test_setup_with_too_many_metadata_entries_is_refused(node: BrokerProcess, transport: str) -> None:
    before = await limit_hits(node, "max_metadata_entries")
    async with await RawClient.connect(node.ws if transport == "ws" else node.tcp, transport) as client:
        await client.send(fr.setup_frame(metadata=md.composite_entry("text/plain", b"") * (ENTRIES + 1)))
        await client.expect_error(ErrorCode.INVALID_SETUP, contains=f"max_metadata_entries ({ENTRIES})")
        await client.wait_closed()
    assert await limit_hits(node, "max_metadata_entries") > before
    await assert_serves(node, transport)


async def test_request_metadata_with_too_many_entries_is_refused(node: BrokerProcess, service: str) -> None:
    requester = await raw_requester(node)
    try:
        metadata = md.composite_entry("text/plain", b"") * ENTRIES + md.route_metadata(f"{service}.m")
        sid = requester.next_stream_id()
        await requester.send(fr.request_frame(FrameType.REQUEST_RESPONSE, sid, metadata, b""))
        await requester.expect_error(ErrorCode.INVALID, stream_id=sid, contains=f"max_metadata_entries ({ENTRIES})")
    finally:
        await requester.close()
    await assert_serves(node)


def _fragments(sid: int, metadata: bytes, pieces: int, *, finish: bool = True) -> list[bytes]:
    """A request whose metadata is cut into ``pieces`` fragments (the last one unfinished if not ``finish``)."""
    size = -(-len(metadata) // pieces)
    parts = [metadata[i : i + size] for i in range(0, len(metadata), size)]
    frames = [fr.request_frame(FrameType.REQUEST_RESPONSE, sid, parts[0], b"", follows=True)]
    for i, part in enumerate(parts[1:], 1):
        last = finish and i == len(parts) - 1
        frames.append(fr.payload_frame(sid, b"", part, next_=last, follows=not last))
    return frames


async def test_too_many_fragments_are_refused(node: BrokerProcess, service: str) -> None:
    before = await limit_hits(node, "max_fragments")
    requester = await raw_requester(node)
    try:
        sid = requester.next_stream_id()
        metadata = md.route_metadata(f"{service}.m") + md.composite_entry("text/plain", b"z" * 200)
        await requester.send(*_fragments(sid, metadata, FRAGMENTS * 4))
        await requester.expect_error(ErrorCode.REJECTED, stream_id=sid, contains=f"max_fragments ({FRAGMENTS})")
    finally:
        await requester.close()
    assert await limit_hits(node, "max_fragments") > before
    await assert_serves(node)


async def test_unfinished_fragments_are_bounded_per_connection(node: BrokerProcess, service: str) -> None:
    before = await limit_hits(node, "max_reassembly_bytes")
    requester = await raw_requester(node)
    try:
        # each first fragment holds a little over a quarter of the limit: the fourth goes past it
        chunk = md.route_metadata(f"{service}.m") + md.composite_entry("text/plain", b"z" * (REASSEMBLY // 4))
        sids = []
        for _ in range(4):
            sid = requester.next_stream_id()
            sids.append(sid)
            await requester.send(fr.request_frame(FrameType.REQUEST_RESPONSE, sid, chunk, b"", follows=True))
        await requester.expect_error(ErrorCode.REJECTED, contains=f"max_reassembly_bytes ({REASSEMBLY} bytes)", stream_id=sids[-1])
    finally:
        await requester.close()
    assert await limit_hits(node, "max_reassembly_bytes") > before
    await assert_serves(node)


async def test_an_unfinished_request_times_out(node: BrokerProcess, service: str) -> None:
    before = await limit_hits(node, "reassembly_timeout_s")
    requester = await raw_requester(node)
    try:
        sid = requester.next_stream_id()
        metadata = md.route_metadata(f"{service}.m")
        await requester.send(_fragments(sid, metadata, 2, finish=False)[0])
        await requester.expect_error(ErrorCode.REJECTED, stream_id=sid, contains=f"reassembly_timeout_s ({REASSEMBLY_TIMEOUT_S:g} s)")
    finally:
        await requester.close()
    assert await limit_hits(node, "reassembly_timeout_s") > before


@pytest.mark.parametrize(
    ("services", "instance", "tags", "limit"),
    [
        (["s" * 256], "i", {}, "max_service_name_bytes (255 bytes)"),
        (["ok"], "i" * 129, {}, "max_instance_name_bytes (128 bytes)"),
        (["ok"], "i", {f"k{i}": "v" for i in range(9)}, "max_tags (8)"),
        (["ok"], "i", {"k" * 33: "v"}, "max_tag_key_bytes (32 bytes)"),
        (["ok"], "i", {"k": "v" * 65}, "max_tag_value_bytes (64 bytes)"),
        ([f"s{i}" for i in range(257)], "i", {}, "max_services (256)"),
    ],
    ids=["service", "instance", "tag-count", "tag-key", "tag-value", "service-count"],
)
async def test_registration_names_gossip_cannot_carry_are_refused(
    node: BrokerProcess, services: list[str], instance: str, tags: dict[str, str], limit: str
) -> None:
    reg = md.Registration(services=tuple(services), instance=instance, tags=tags)
    async with await RawClient.tcp(node.tcp) as client:
        await client.send(fr.setup_frame(metadata=md.composite_entry(md.REGISTER_MIME, reg.to_json())))
        await client.expect_error(ErrorCode.INVALID_SETUP, contains=limit)
        await client.wait_closed()
    # a re-registration by METADATA_PUSH meets the same limit
    async with await RawClient.tcp(node.tcp) as client:
        await client.send(provider_setup(["ok"], "fine"))
        await client.send(fr.metadata_push_frame(md.composite_entry(md.REGISTER_MIME, reg.to_json())))
        await client.expect_error(ErrorCode.CONNECTION_ERROR, contains=limit)
        await client.wait_closed()
    await assert_serves(node)
