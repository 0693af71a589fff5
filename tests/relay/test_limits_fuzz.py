"""Hypothesis on the client-port bounds (issue 11 §5) and the metadata re-encoding (§2).

Parsers get arbitrary bytes and may raise FrameError (LimitExceeded is one) and nothing
else; what they accept stays within the bounds they were given. The relay session, real
but with a list for a transport (:class:`tests.support.memory_session.MemorySession`),
gets arbitrary interleavings of request fragments, cancels and clock ticks: the bytes it
holds for unfinished requests never exceed the per-stream and per-connection limits, no
stream waits past the reassembly timeout, and every refusal names its limit.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker import frames as fr
from broker import limits as limits_mod
from broker import metadata as md
from broker import tracing
from broker.frames import ErrorCode, FrameError, FrameType
from broker.limits import LimitExceeded, NameLimits
from broker.relay import Broker
from broker.settings import Settings
from tests.support.memory_session import MemorySession

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@FUZZ
@given(st.binary(max_size=400), st.integers(1, 20))
def test_iter_composite_never_yields_more_entries_than_allowed(metadata: bytes, max_entries: int) -> None:
    seen = 0
    try:
        for _ in md.iter_composite(metadata, ErrorCode.INVALID, max_entries):
            seen += 1
    except LimitExceeded as exc:
        assert exc.limit == "max_metadata_entries" and seen == max_entries
    except FrameError:
        pass
    assert seen <= max_entries


@FUZZ
@given(st.binary(max_size=400), st.sampled_from([md.COMPOSITE_MIME, md.ROUTING_MIME]), st.integers(1, 20))
def test_route_of_raises_only_frame_errors(metadata: bytes, mime: str, max_entries: int) -> None:
    try:
        md.route_of(metadata, mime, max_entries)
    except FrameError:
        pass


@FUZZ
@given(st.binary(max_size=300))
def test_bare_routing_re_encoded_reads_as_the_same_route(metadata: bytes) -> None:
    """Whatever bytes a bare-routing requester sends, a composite reader of the re-encoded
    metadata finds the route the broker resolved (or the broker refused them)."""
    try:
        route = md.route_of(metadata, md.ROUTING_MIME)
    except FrameError:
        return
    assert md.route_of(md.for_composite_peer(metadata, md.ROUTING_MIME), md.COMPOSITE_MIME) == route


_names = st.text(min_size=1, max_size=300)


@FUZZ
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "services": st.lists(_names, max_size=12),
            "instance": _names,
            "tags": st.dictionaries(st.text(max_size=40), st.text(max_size=80), max_size=12),
            "weight": st.integers(-1, 10),
        },
    ),
    st.builds(
        NameLimits,
        max_services=st.integers(1, 10),
        max_service_name_bytes=st.integers(1, 255),
        max_instance_name_bytes=st.integers(1, 128),
        max_tags=st.integers(1, 8),
        max_tag_key_bytes=st.integers(1, 32),
        max_tag_value_bytes=st.integers(1, 64),
    ),
)
def test_accepted_registrations_are_within_the_name_limits(obj: dict, limits: NameLimits) -> None:
    try:
        reg = md.Registration.from_json(json.dumps(obj).encode(), "default", ErrorCode.INVALID, limits)
    except LimitExceeded as exc:
        assert exc.limit in {f for f in NameLimits.__dataclass_fields__} and exc.limit in str(exc)
        return
    except FrameError:
        return
    assert len(reg.services) <= limits.max_services
    assert all(len(s.encode()) <= limits.max_service_name_bytes for s in reg.services)
    assert len(reg.instance.encode()) <= limits.max_instance_name_bytes
    assert len(reg.tags) <= limits.max_tags
    assert all(len(k.encode()) <= limits.max_tag_key_bytes and len(v.encode()) <= limits.max_tag_value_bytes for k, v in reg.tags.items())


_requests = st.sampled_from([FrameType.REQUEST_RESPONSE, FrameType.REQUEST_STREAM, FrameType.REQUEST_CHANNEL, FrameType.REQUEST_FNF])


@FUZZ
@given(_requests, st.integers(1, 2**31 - 1), st.binary(max_size=64), st.binary(max_size=64), st.binary(max_size=64), st.booleans())
def test_replace_metadata_keeps_everything_but_the_metadata(
    ftype: int, sid: int, old: bytes, new: bytes, data: bytes, follows: bool
) -> None:
    frame = fr.request_frame(ftype, sid, old, data, initial_n=7, follows=follows)
    out = fr.replace_metadata(frame, 0, len(frame), new)
    assert fr.header(out) == fr.header(frame)
    assert fr.request_metadata(out, 0, len(out))[0] == new
    assert fr.request_data(out, 0, len(out)) == data
    if ftype in (FrameType.REQUEST_STREAM, FrameType.REQUEST_CHANNEL):
        assert fr.parse_request_n(out, 0, len(out)) == 7


@FUZZ
@given(st.binary(min_size=6, max_size=200), st.binary(max_size=16))
def test_replace_metadata_on_arbitrary_bytes_raises_only_frame_errors(frame: bytes, new: bytes) -> None:
    try:
        fr.replace_metadata(frame, 0, len(frame), new)
    except FrameError:
        pass


# -- the relay session under fragment floods ---------------------------------------------------

LIMITS = Settings(max_fragments=4, max_request_metadata=600, max_reassembly_bytes=1500, reassembly_timeout_s=1.0)


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    created = asyncio.new_event_loop()
    yield created
    created.close()


_steps = st.lists(
    st.one_of(
        st.tuples(st.just("first"), st.integers(0, 5), st.integers(0, 400)),
        st.tuples(st.just("more"), st.integers(0, 5), st.integers(0, 400)),
        st.tuples(st.just("last"), st.integers(0, 5), st.integers(0, 400)),
        st.tuples(st.just("cancel"), st.integers(0, 5), st.just(0)),
        st.tuples(st.just("tick"), st.just(0), st.integers(0, 1500)),
    ),
    max_size=60,
)


@FUZZ
@given(_steps)
def test_reassembly_stays_within_its_limits(loop: asyncio.AbstractEventLoop, steps: list[tuple[str, int, int]]) -> None:
    broker = Broker(LIMITS, loop)
    now = [0.0]
    broker.clock = lambda: now[0]
    provider, requester = MemorySession(broker, 42000), MemorySession(broker, 42001)
    reg = md.Registration(services=("svc",), instance="p")
    provider.feed(fr.setup_frame(metadata=md.composite_entry(md.REGISTER_MIME, reg.to_json())))
    requester.feed(fr.setup_frame())
    route = md.route_metadata("svc.m")
    for action, slot, size in steps:
        sid = 2 * slot + 1
        if action == "first":
            requester.feed(fr.request_frame(FrameType.REQUEST_RESPONSE, sid, route[:2] + b"\0" * size, b"", follows=True))
        elif action == "more":
            requester.feed(fr.payload_frame(sid, b"", b"\0" * size, next_=False, follows=True))
        elif action == "last":
            requester.feed(fr.payload_frame(sid, b"x", b"\0" * size, follows=False))
        elif action == "cancel":
            requester.feed(fr.cancel_frame(sid))
        else:
            now[0] += size / 1000
            broker.housekeeping(now[0])
        held = list(requester.reassembling.values())
        assert requester.reassembly_bytes == sum(s.pending_bytes for s in held) <= LIMITS.max_reassembly_bytes
        for s in held:
            assert s.pending is not None and len(s.pending) <= LIMITS.max_fragments
            assert s.pending_bytes <= LIMITS.max_request_metadata
            if action == "tick":
                assert now[0] - s.started <= LIMITS.reassembly_timeout_s
        for frame in requester.take():
            if frame.type == FrameType.ERROR and frame.stream_id:
                code, message = frame.error
                if code == ErrorCode.REJECTED:
                    assert any(name in message for name in broker.meter.limit_hits), message
        provider.take()


def test_a_registration_at_every_ceiling_fits_one_sealed_gossip_packet() -> None:
    """The name ceilings of broker/limits.py are chosen so that gossip can always carry a
    routing entry: the largest one (multi-byte characters, a 64-character node id) fits the
    default packet once the envelope and the seal are paid for."""
    from cluster.swim.config import Config
    from cluster.swim.messages import Route, wire_size
    from cluster.swim.wire import ENVELOPE_OVERHEAD, SEAL_OVERHEAD

    def widest(size: int, tag: str) -> str:
        return (tag + "é" * size).encode()[:size].decode("utf-8", "ignore")

    tags = {widest(limits_mod.GOSSIP_MAX_TAG_KEY_BYTES, f"{i}"): widest(limits_mod.GOSSIP_MAX_TAG_VALUE_BYTES, "v") for i in range(limits_mod.GOSSIP_MAX_TAGS)}
    route = Route(
        owner="n" * 64,
        epoch=2**63 - 1,
        seq=2**63 - 1,
        service=widest(limits_mod.GOSSIP_MAX_SERVICE_BYTES, "s"),
        instance=widest(limits_mod.GOSSIP_MAX_INSTANCE_BYTES, "i"),
        weight=1_000_000,
        tags=tags,
        load=2**63 - 1,
        removed=False,
    )
    assert len(tags) == limits_mod.GOSSIP_MAX_TAGS
    assert wire_size(route) <= Config().packet_size - ENVELOPE_OVERHEAD - SEAL_OVERHEAD


_TRACE_HEADER = bytes([len(tracing.MARKER) - 1]) + tracing.MARKER
_entries = st.one_of(
    st.lists(st.sampled_from(["a.b", "a.c", "x.y.z", tracing.TRACE_MIME]), min_size=0, max_size=2).map(
        lambda tags: md.routing(*tags)
    ).map(lambda tags: md.composite_entry(md.ROUTING_MIME, tags)),
    st.sampled_from([b"", b"00-" + b"ab" * 16 + b"-" + b"cd" * 8 + b"-01", b"junk", md.composite_entry(md.ROUTING_MIME, md.routing("x.y.z"))]).map(
        lambda content: md.composite_entry(tracing.TRACE_MIME, content)
    ),
    st.just(md.composite_entry("text/plain", b"hi")),
    st.binary(max_size=6),  # bytes that are no entry, or that change how the next ones read
    st.integers(0, 60).map(lambda n: _TRACE_HEADER + n.to_bytes(3, "big")),  # a trace header whose length swallows what follows
)


def _route_or_error(read: object) -> str | None | type[BaseException]:
    try:
        return read()  # type: ignore[operator]
    except FrameError as exc:
        return type(exc)


def _container(entry: bytes) -> bytes:
    """The header of a text/plain entry whose content is exactly ``entry``."""
    return md.composite_entry("text/plain", entry)[: -len(entry) or None]


@st.composite
def _traced_variants(draw: st.DrawFn) -> list[bytes]:
    """Metadata that share everything but a trace entry's content: some with the trace entry
    hidden inside another entry sized for the first variant, so the others read differently."""
    prefix = b"".join(draw(st.lists(_entries, max_size=2)))
    suffix = b"".join(draw(st.lists(_entries, max_size=3)))
    contents = draw(st.lists(st.sampled_from([b"", b"00-" + b"ab" * 16 + b"-" + b"cd" * 8 + b"-01", b"x" * 4, b"x" * 9]), min_size=1, max_size=3))
    hidden = draw(st.booleans())
    first = md.composite_entry(tracing.TRACE_MIME, contents[0])
    head = prefix + (_container(first) if hidden else b"")
    return [head + md.composite_entry(tracing.TRACE_MIME, content) + suffix for content in contents]


@FUZZ
@given(st.lists(st.one_of(_traced_variants(), st.lists(_entries, min_size=1, max_size=5).map(lambda e: [b"".join(e)])), min_size=1, max_size=6).map(lambda groups: [m for group in groups for m in group]))
def test_traced_route_cache_answers_as_a_full_read(metadatas: list[bytes]) -> None:
    """``Broker.resolve`` caches the routes of traced metadata by all but the trace entry's
    content (``hotpath.trace_entry``'s key): over any sequence of metadata (so hits follow misses
    of related bytes) it must answer exactly what a full read (``route_of``) answers, refuse
    what it refuses, and point at the first trace entry's content only when it is well formed."""
    broker = Broker(Settings(tcp="127.0.0.1:0"), asyncio.new_event_loop())
    try:
        for metadata in metadatas * 2:  # the second time round, every cacheable key is warm
            expected = _route_or_error(lambda: md.route_of(metadata, md.COMPOSITE_MIME))
            resolved = _route_or_error(lambda: broker.resolve(metadata, md.COMPOSITE_MIME))
            route = resolved[0] if isinstance(resolved, tuple) else resolved
            assert route == expected, (metadata, resolved, expected)
            if isinstance(resolved, tuple):  # the first trace entry's content, when well formed
                content = md.find_entry(metadata, tracing.TRACE_MIME)
                if content is None or tracing.ENTRY.fullmatch(content) is None:
                    assert resolved[2] is None
                else:
                    assert metadata[resolved[2] : resolved[2] + len(content)] == content
    finally:
        broker.loop.close()
