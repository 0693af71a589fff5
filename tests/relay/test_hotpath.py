"""Which hot path runs, and that the relay's stream maps and route metering hold on each of them.

CI must never pass on a silently failed build: with ``CI=true`` and no
``RSBROKER_NO_EXTENSIONS``, the compiled module has to be the one loaded. The stream-map
model (tests/relay/test_stream_map_model.py, which checks the route meters' bytes and
counts too) is run here once per implementation, so both relay the same way in one run; the
Hypothesis parser tests do the same for the readers. The times a stream's meter and trace span
get, read on the relay's fast path, are checked on each implementation with a clock the test sets.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from types import ModuleType

import pytest
from hypothesis import settings
from hypothesis.stateful import run_state_machine_as_test

from broker import frames as fr
from broker import hotpath, metering, relay, session, tracing
from broker import metadata as md
from broker.frames import ErrorCode, FrameType
from broker.registry import ServicePolicy
from broker.relay import Broker
from broker.settings import Settings
from broker.traffic import RateLimit
from tests.relay.test_parsers_fuzz import HOT_PATHS
from tests.relay.test_stream_map_model import StreamMaps
from tests.support.memory_session import MemorySession


def _loaded(extra_env: dict[str, str], drop: tuple[str, ...] = ()) -> str:
    """``COMPILED module`` as a fresh interpreter with this environment sees them."""
    env = {k: v for k, v in os.environ.items() if k not in drop} | extra_env
    code = "import broker.hotpath as h; print(h.COMPILED, h.relay_frame.__module__)"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.strip()


def test_extension_is_loaded_in_ci() -> None:
    if os.environ.get("CI", "").lower() != "true":
        pytest.skip("only CI (CI=true) requires the compiled hot path; a local install may lack a compiler")
    if hotpath.NO_EXTENSIONS:
        pytest.skip("RSBROKER_NO_EXTENSIONS is set: this pass tests the pure-Python hot path")
    assert hotpath.COMPILED, "CI runs without the compiled hot path: the build of broker/_hotpath_c.pyx failed (see pip's warning)"


def test_no_extensions_forces_pure_python() -> None:
    assert _loaded({"RSBROKER_NO_EXTENSIONS": "1"}) == "False broker._hotpath"


@pytest.mark.skipif(len(HOT_PATHS) < 2, reason="the compiled hot path is not built here")
def test_compiled_is_the_default_when_built() -> None:
    assert _loaded({}, drop=("RSBROKER_NO_EXTENSIONS",)) == "True broker._hotpath_c"
    assert _loaded({"RSBROKER_NO_EXTENSIONS": "0"}) == "True broker._hotpath_c"


@pytest.mark.parametrize("hot", HOT_PATHS, ids=lambda m: m.__name__)
def test_stream_maps_hold_on_each_hot_path(hot: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    """The dict-model state machine, with the sessions relaying through ``hot``."""
    _use(hot, monkeypatch)
    run_state_machine_as_test(StreamMaps, settings=settings(max_examples=30, stateful_step_count=40, deadline=None))


def _use(hot: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the sessions relay, read request metadata, stamp trace parents, forward, keep streams and
    key traced routes through ``hot``, and the broker find trace entries with it."""
    for name in ("relay_frame", "request_metadata", "forward", "stamp_parent", "trace_entry", "Stream"):
        monkeypatch.setattr(session, name, getattr(hot, name))
    monkeypatch.setattr(relay, "trace_entry", hot.trace_entry)


@pytest.mark.parametrize("hot", HOT_PATHS, ids=lambda m: m.__name__)
def test_first_response_and_end_are_metered_and_traced_on_each_hot_path(hot: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    """A traced request-response and a traced stream: their meter and span get the time of the
    first response frame, and the request-response its end, as the relay's clock read them; the
    provider gets each request with this hop's span id as its parent id, and nothing else changed."""
    _use(hot, monkeypatch)
    loop = asyncio.new_event_loop()
    try:
        broker = Broker(Settings(), loop)
        now = [0.0]
        broker.clock = lambda: now[0]
        provider, requester = MemorySession(broker, 42000), MemorySession(broker, 42001)
        reg = md.Registration(services=("svc",), instance="p")
        provider.feed(fr.setup_frame(metadata=md.composite_entry(md.REGISTER_MIME, reg.to_json())))
        requester.feed(fr.setup_frame())
        traced = md.route_metadata("svc.m") + tracing.entry(f"00-{'ab' * 16}-{'cd' * 8}-01")

        received: list[bytes] = []

        def relay(source: MemorySession, frame: bytes, at: float, dest: MemorySession) -> int:
            now[0] = at
            source.feed(frame)
            [got] = dest.take()
            received.append(got.raw)
            return got.stream_id

        rr = fr.request_frame(FrameType.REQUEST_RESPONSE, 1, traced, b"q")
        pid = relay(requester, rr, 1.0, provider)
        reply = fr.payload_frame(pid, b"answer", complete=True)
        relay(provider, reply, 1.25, requester)
        stream = fr.request_frame(FrameType.REQUEST_STREAM, 3, traced, b"q", initial_n=2)
        pid = relay(requester, stream, 2.0, provider)
        first = fr.payload_frame(pid, b"one")
        relay(provider, first, 2.5, requester)
        more = fr.request_n_frame(3, 5)
        relay(requester, more, 3.0, provider)
        last = fr.payload_frame(pid, b"two", complete=True)
        relay(provider, last, 4.0, requester)

        [meter] = [m for m in broker.meter.meters() if m.route == "svc.m"]
        assert meter.inflight == 0 and meter.outcomes[metering.OK] == 2 and sum(meter.outcomes) == 2
        assert meter.bytes_in == len(rr) + len(stream) + len(more)
        assert meter.bytes_out == len(reply) + len(first) + len(last)
        first_latency = meter.first[metering.OK]
        assert first_latency is not None and first_latency.total == pytest.approx(0.25 + 0.5)
        spans = broker.tracer.view("svc.m")
        assert [(span["route"], span["first_response_s"], span["outcome"]) for span in spans] == [("svc.m", 0.25, "ok"), ("svc.m", 0.5, "ok")]
        assert spans[0]["duration_s"] == 0.25  # a request-response ends with its first response frame
        for span, sent, got in ((spans[0], rr, received[0]), (spans[1], stream, received[2])):
            assert span["parent_span_id"] == "cd" * 8 and span["span_id"] != "cd" * 8
            assert got[4:] == sent[4:].replace(b"cd" * 8, span["span_id"].encode())
        assert not requester.streams and not provider.streams and provider.outstanding == 0
    finally:
        loop.close()


def _pair(broker: Broker) -> tuple[MemorySession, MemorySession]:
    provider, requester = MemorySession(broker, 43000), MemorySession(broker, 43001)
    reg = md.Registration(services=("svc",), instance="p")
    provider.feed(fr.setup_frame(metadata=md.composite_entry(md.REGISTER_MIME, reg.to_json())))
    requester.feed(fr.setup_frame())
    return provider, requester


@pytest.mark.parametrize("hot", HOT_PATHS, ids=lambda m: m.__name__)
def test_a_repeat_request_from_the_route_cache_meets_what_the_full_path_would(hot: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    """The route cache (``Session.open_cache``, read by the hot path's ``_open``) only spares a
    repeat request the resolving: a reused id, too many streams and a service policy changed
    since the route was remembered are decided as on the full path."""
    _use(hot, monkeypatch)
    loop = asyncio.new_event_loop()
    try:
        broker = Broker(Settings(max_streams=2), loop)
        provider, requester = _pair(broker)
        meta = md.route_metadata("svc.m")
        rr = FrameType.REQUEST_RESPONSE
        requester.feed(fr.request_frame(rr, 1, meta, b"a"))
        assert requester.open_cache is not None and meta in requester.open_cache  # remembered
        [first] = provider.take()
        requester.feed(fr.request_frame(rr, 3, meta, b"b"))  # from the cache
        [second] = provider.take()
        assert (first.stream_id, second.stream_id) == (2, 4) and second.data == b"b"
        requester.feed(fr.request_frame(rr, 5, meta, b"c"))  # a third concurrent stream: over max_streams
        [refused] = requester.take()
        assert refused.stream_id == 5 and refused.error == (ErrorCode.REJECTED, "too many concurrent streams on this connection (limit 2)")
        assert not provider.take() and broker.meter.limit_hits["max_streams"] == 1
        provider.feed(fr.payload_frame(second.stream_id, b"B", complete=True))
        assert [f.data for f in requester.take()] == [b"B"]
        broker.set_policy("svc", ServicePolicy.from_obj({"idempotent": True, "retries": 1}))
        requester.feed(fr.request_frame(rr, 7, meta, b"d"))  # the policy changed: the full path keeps it for retry
        [fourth] = provider.take()
        assert requester.streams[7].retry is not None and fourth.data == b"d"
        requester.feed(fr.request_frame(rr, 7, meta, b"e"))  # an id in use, on a remembered route
        [error] = requester.take()
        assert error.stream_id == 0 and error.error == (ErrorCode.CONNECTION_ERROR, "stream id 7 is already in use")
        assert requester.closing  # and its open streams are cancelled at the provider
        assert sorted((f.type, f.stream_id) for f in provider.take()) == [(FrameType.CANCEL, 2), (FrameType.CANCEL, fourth.stream_id)]
    finally:
        loop.close()


@pytest.mark.parametrize("hot", HOT_PATHS, ids=lambda m: m.__name__)
def test_a_rate_limit_set_after_a_route_was_remembered_holds_for_its_repeats(hot: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rate limits are per request, so the route cache never answers for them: a limit set at
    run time (as the config store does) counts and refuses repeats of a remembered route."""
    _use(hot, monkeypatch)
    loop = asyncio.new_event_loop()
    try:
        broker = Broker(Settings(), loop)
        provider, requester = _pair(broker)
        meta = md.route_metadata("svc.m")
        rr = FrameType.REQUEST_RESPONSE
        requester.feed(fr.request_frame(rr, 1, meta, b"a"))
        assert requester.open_cache is not None and meta in requester.open_cache and len(provider.take()) == 1
        one = {"service": "svc", "rate": 0.001, "burst": 1}  # one request, then one per 1000 s
        broker.traffic.set_limits({"svc-limit": RateLimit.from_obj("svc-limit", one)})
        requester.feed(fr.request_frame(rr, 3, meta, b"b"))  # the bucket's one token
        requester.feed(fr.request_frame(rr, 5, meta, b"c"))  # none left
        assert [f.data for f in provider.take()] == [b"b"]
        [refused] = requester.take()
        assert refused.stream_id == 5 and refused.error[0] == ErrorCode.REJECTED and "svc-limit" in refused.error[1]
    finally:
        loop.close()


@pytest.mark.parametrize("hot", HOT_PATHS, ids=lambda m: m.__name__)
@pytest.mark.parametrize(("cut", "stamped"), [(9, True), (90, False), (102, True)], ids=["before", "inside", "after"])
def test_a_fragmented_traced_request_is_stamped_in_the_fragment_holding_the_parent_id(
    hot: ModuleType, monkeypatch: pytest.MonkeyPatch, cut: int, stamped: bool
) -> None:
    """A traced request whose metadata comes in two fragments, cut before the parent id's 16
    digits, inside them, or after them: the provider gets the same fragments, with the digits
    rewritten to the hop's span id where one fragment holds them all (split digits are left as
    they came, and the hop span is then a sibling of the provider's)."""
    _use(hot, monkeypatch)
    loop = asyncio.new_event_loop()
    try:
        broker = Broker(Settings(), loop)
        provider, requester = MemorySession(broker, 42000), MemorySession(broker, 42001)
        reg = md.Registration(services=("svc",), instance="p")
        provider.feed(fr.setup_frame(metadata=md.composite_entry(md.REGISTER_MIME, reg.to_json())))
        requester.feed(fr.setup_frame())
        metadata = md.route_metadata("svc.m") + tracing.entry(f"00-{'ab' * 16}-{'cd' * 8}-01")
        parent = metadata.index(b"cd" * 8)
        assert (cut <= parent) or (cut >= parent + 16) or not stamped
        requester.feed(fr.request_frame(FrameType.REQUEST_RESPONSE, 1, metadata[:cut], b"", follows=True))
        requester.feed(fr.payload_frame(1, b"q", metadata[cut:], next_=True, complete=True))
        got = provider.take()
        forwarded = b"".join(hot.request_metadata(f.raw, 0, len(f.raw))[0] for f in got)
        provider.feed(fr.payload_frame(got[0].stream_id, b"a", next_=True, complete=True))
        [span] = broker.tracer.view("svc.m")
        assert span["parent_span_id"] == "cd" * 8
        assert forwarded == (metadata.replace(b"cd" * 8, span["span_id"].encode()) if stamped else metadata)
        assert [f.data for f in got] == [b"", b"q"] and requester.take()[0].data == b"a"
    finally:
        loop.close()
