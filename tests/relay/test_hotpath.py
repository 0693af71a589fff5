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
from pathlib import Path
from types import ModuleType
from typing import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import run_state_machine_as_test

from broker import frames as fr
from broker import hotpath, metering, relay, session, tracing, traffic
from broker import metadata as md
from broker.frames import ErrorCode, FrameType
from broker.registry import ServicePolicy
from broker.relay import Broker
from broker.settings import Settings
from broker.auth.certs import write_keypair
from broker.auth.tokens import load_private_key, mint_token
from broker.traffic import RateLimit
from tests.e2e_security.clients import auth_setup
from tests.relay.test_parsers_fuzz import HOT_PATHS
from tests.relay.test_stream_map_model import StreamMaps
from tests.support.memory_session import MemorySession
from tests.support.rawclient import Frame


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
    """Make the sessions relay, read request metadata, stamp trace parents, forward, keep streams,
    keep frames for retries and key traced routes through ``hot``, the broker find trace entries
    with it, and the traffic rules keep their state in its classes and do their per-request
    work with its functions, and the tracer keep spans in its rings (brokers made after this call)."""
    monkeypatch.setattr(hotpath, "SpanRing", hot.SpanRing)
    for name in ("relay_frame", "request_metadata", "forward", "stamp_parent", "trace_entry", "trace_stream", "Stream", "RouteRules", "keep", "watch"):
        monkeypatch.setattr(session, name, getattr(hot, name))
    monkeypatch.setattr(relay, "trace_entry", hot.trace_entry)
    for name in ("Bucket", "RouteRules", "TrafficState", "spend", "sweep", "forward", "request_metadata"):
        monkeypatch.setattr(traffic, name, getattr(hot, name))


@pytest.mark.parametrize("hot", HOT_PATHS, ids=lambda m: m.__name__)
def test_first_response_and_end_are_metered_and_traced_on_each_hot_path(hot: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    """A traced request-response and a traced stream: their meter and span get the time of the
    first response frame, and each its end (a request-response's is its first response frame),
    as the relay's clock read them; the
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
        assert spans[1]["duration_s"] == 2.0  # a stream with its last, read when that came
        complete = meter.complete[metering.OK]
        assert complete is not None and complete.total == pytest.approx(0.25 + 2.0)
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
    """Rate limits are per request, so a repeat opened from the route cache spends its token
    there: a limit set at run time (as the config store does) counts and refuses repeats of a
    remembered route."""
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


#: what a run of a scenario is judged by: every frame each side got, in order, and the counts
_Seen = tuple[list[tuple[str, bytes]], list[dict[str, object]], dict[str, object]]


def _on_both_paths(
    hot: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    scenario: "Callable[[Broker, list[MemorySession], Callable[[float], None]], None]",
    coalesce: bool = False,
) -> tuple[_Seen, int]:
    """Run ``scenario`` on a fresh broker twice: with the route cache, then with every request
    through the full path (``Session._remember_route`` keeps nothing). Asserts that the two runs
    saw the same frames, spans (their span ids drawn from the same seed) and counts, and returns
    them with how many requests the cached run's full path opened. With ``coalesce`` the sessions
    queue frames in ``wire_out`` as TCP's do (a scenario flushes a session before reading ``out``),
    else they take them whole through ``forward`` as WebSocket's do."""
    _use(hot, monkeypatch)
    full_opens = [0]
    other_frame = session.Session.other_frame

    def counted(self: session.Session, buf: object, off: int, end: int, sid: int, ftype: int, type_flags: int) -> None:
        if ftype in (FrameType.REQUEST_RESPONSE, FrameType.REQUEST_STREAM, FrameType.REQUEST_CHANNEL):
            full_opens[0] += 1
        other_frame(self, buf, off, end, sid, ftype, type_flags)

    monkeypatch.setattr(session.Session, "other_frame", counted)
    seen: list[_Seen] = []
    for cached in (True, False):
        if not cached:
            monkeypatch.setattr(session.Session, "_remember_route", lambda *args: None)
        loop = asyncio.new_event_loop()
        try:
            broker = Broker(Settings(), loop)
            now = [100.0]
            broker.clock = broker.traffic.clock = lambda: now[0]
            sessions = [MemorySession(broker, 44000 + i, coalesce) for i in range(3)]
            for i, provider in enumerate(sessions[:2]):
                reg = md.Registration(services=("svc",), instance=f"p{i}")
                provider.feed(fr.setup_frame(metadata=md.composite_entry(md.REGISTER_MIME, reg.to_json())))
            sessions[2].feed(fr.setup_frame())
            hot.seed_span_ids(15)
            before = full_opens[0]

            def advance(to: float) -> None:
                now[0] = to

            scenario(broker, sessions, advance)
            if cached:
                opened_in_full = full_opens[0] - before
            for s in sessions:
                s.flush()
            frames = [(f"s{i}", raw) for i, s in enumerate(sessions) for raw in s.out]
            spans = [{k: v for k, v in span.items() if k != "start"} for span in broker.tracer.view()]
            meters = [m for m in broker.meter.meters() if m.service == "svc"]
            counts = {
                "outcomes": [sum(col) for col in zip(*(m.outcomes for m in meters))] or [0] * len(metering.OUTCOMES),
                "inflight": sum(m.inflight for m in meters),
                "bytes": [(m.route, m.bytes_in, m.bytes_out) for m in meters],
                "stats": (broker.stats["requests"], broker.stats["rejected"]),
                "refused": dict(broker.traffic.refused),
                "timeouts": dict(broker.traffic.timeouts),
                "retried": dict(broker.traffic.retried),
                "streams": [len(s.streams) for s in sessions],
            }
            seen.append((frames, spans, counts))
        finally:
            loop.close()
    assert seen[0] == seen[1]
    return seen[0], opened_in_full


def _traced(sid: int, extra: bytes = b"") -> bytes:
    """Metadata naming svc.m, with a trace entry whose parent id is the stream id's."""
    return md.route_metadata("svc.m") + extra + tracing.entry(f"00-{'ab' * 16}-{sid:016x}-01", "k=v")


@pytest.mark.parametrize("coalesce", [False, True], ids=["whole", "wire_out"])
@pytest.mark.parametrize("hot", HOT_PATHS, ids=lambda m: m.__name__)
def test_a_repeat_traced_request_gets_its_own_span_and_stamped_parent_from_the_route_cache(
    hot: ModuleType, monkeypatch: pytest.MonkeyPatch, coalesce: bool
) -> None:
    """Traced requests, each with its own parent id, are opened from the route cache after the
    first (remembered by their route key): each hop gets a new span id, each provider the frame
    with that id as its parent and nothing else changed, each span the requester's parent, as on
    the full path; stamped in a copy for a provider that takes frames whole (WebSocket) and
    where the frame was queued in ``wire_out`` for a coalescing one (TCP)."""

    def scenario(broker: Broker, sessions: list[MemorySession], advance: "Callable[[float], None]") -> None:
        requester = sessions[2]
        for sid in (1, 3, 5, 7):
            advance(100.0 + sid)
            requester.feed(fr.request_frame(FrameType.REQUEST_RESPONSE, sid, _traced(sid), b"q"))
        for provider in sessions[:2]:
            provider.flush()
            for got in [Frame(raw) for raw in provider.out]:
                provider.feed(fr.payload_frame(got.stream_id, b"a", complete=True))

    (frames, spans, counts), full_opens = _on_both_paths(hot, monkeypatch, scenario, coalesce)
    assert full_opens == 1  # the first; the three repeats came from the route cache
    sent = {f"{sid:016x}": fr.request_frame(FrameType.REQUEST_RESPONSE, sid, _traced(sid), b"q") for sid in (1, 3, 5, 7)}
    assert sorted(str(span["parent_span_id"]) for span in spans) == sorted(sent) and len({span["span_id"] for span in spans}) == 4
    forwarded = [raw for who, raw in frames if who != "s2"]
    for span in spans:
        parent, hop = str(span["parent_span_id"]), str(span["span_id"])
        assert sum(raw[4:] == sent[parent][4:].replace(parent.encode(), hop.encode()) for raw in forwarded) == 1
    assert counts["outcomes"][metering.OK] == 4 and counts["inflight"] == 0


@pytest.mark.parametrize("hot", HOT_PATHS, ids=lambda m: m.__name__)
def test_a_repeat_request_under_a_deadline_times_out_from_the_route_cache(hot: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    """A service deadline, and a requester's shorter deadline entry, hold for repeats opened from
    the route cache: unanswered at the deadline, the requester gets ERROR(CANCELED) and the
    provider a CANCEL, counted as timeouts, as on the full path; an answered one is not touched."""

    def scenario(broker: Broker, sessions: list[MemorySession], advance: "Callable[[float], None]") -> None:
        broker.set_policy("svc", ServicePolicy.from_obj({"deadline_ms": 1000}))
        requester = sessions[2]
        short = md.route_metadata("svc.m") + md.composite_entry(md.DEADLINE_MIME, b"200")
        for sid, meta in ((1, md.route_metadata("svc.m")), (3, md.route_metadata("svc.m")), (5, md.route_metadata("svc.m")), (7, short), (9, short)):
            requester.feed(fr.request_frame(FrameType.REQUEST_RESPONSE, sid, meta, b"q"))
        answered = Frame(sessions[0].out[0])
        sessions[0].feed(fr.payload_frame(answered.stream_id, b"a", complete=True))
        advance(100.5)
        broker.traffic.expire()  # the requester's 200 ms ran out
        advance(101.5)
        broker.traffic.expire()  # the service's 1000 ms ran out

    (frames, _, counts), full_opens = _on_both_paths(hot, monkeypatch, scenario)
    assert full_opens == 2  # one per distinct metadata
    errors = [Frame(raw) for who, raw in frames if who == "s2" and Frame(raw).type == FrameType.ERROR]
    # the requester's 200 ms ran out first (7, 9), then the service's 1000 ms for the two of 1, 3, 5 unanswered
    assert {e.stream_id for e in errors[:2]} == {7, 9} and len({e.stream_id for e in errors[2:]} & {1, 3, 5}) == 2
    assert all(e.error[0] == ErrorCode.CANCELED for e in errors) and len(errors) == 4
    assert [e.error[1].split(" exceeded")[0] for e in errors] == ["deadline of 200 ms"] * 2 + ["deadline of 1000 ms"] * 2
    cancels = [raw for who, raw in frames if who != "s2" and Frame(raw).type == FrameType.CANCEL]
    assert len(cancels) == 4 and counts["timeouts"] == {"svc": 4}
    assert counts["outcomes"][metering.TIMEOUT] == 4 and counts["outcomes"][metering.OK] == 1 and counts["inflight"] == 0


@pytest.mark.parametrize("hot", HOT_PATHS, ids=lambda m: m.__name__)
def test_a_repeat_idempotent_request_is_retried_from_the_route_cache(hot: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    """Repeats of an idempotent request opened from the route cache are kept as the provider got
    them (traced: stamped) and, refused by their provider with REJECTED, sent to the other one,
    byte for byte, as on the full path."""

    def scenario(broker: Broker, sessions: list[MemorySession], advance: "Callable[[float], None]") -> None:
        broker.set_policy("svc", ServicePolicy.from_obj({"idempotent": True, "retries": 1}))
        requester = sessions[2]
        providers = sessions[:2]
        for sid in (1, 3, 5):  # one at a time: the round robin sends each retry to the other provider
            seen = [len(p.out) for p in providers]
            requester.feed(fr.request_frame(FrameType.REQUEST_RESPONSE, sid, _traced(sid), b"q%d" % sid))
            [(refusing, frame)] = [(p, Frame(p.out[-1])) for p, n in zip(providers, seen) if len(p.out) > n]
            seen = [len(p.out) for p in providers]
            refusing.feed(fr.error_frame(frame.stream_id, ErrorCode.REJECTED, "busy"))
            [(answering, frame)] = [(p, Frame(p.out[-1])) for p, n in zip(providers, seen) if len(p.out) > n]
            assert answering is not refusing
            answering.feed(fr.payload_frame(frame.stream_id, frame.data.upper(), complete=True))

    (frames, spans, counts), full_opens = _on_both_paths(hot, monkeypatch, scenario)
    assert full_opens == 1 and counts["retried"] == {"svc": 3}
    p0 = [raw for who, raw in frames if who == "s0"]
    p1 = [raw for who, raw in frames if who == "s1"]
    # each request went to one provider, then the same bytes (its own stamped parent) to the other
    requests = [raw for raw in p0 + p1 if Frame(raw).type == FrameType.REQUEST_RESPONSE]
    assert len(requests) == 6 and len({raw[4:] for raw in requests}) == 3
    answers = [Frame(raw) for who, raw in frames if who == "s2"]
    assert sorted((a.stream_id, a.data) for a in answers) == [(1, b"Q1"), (3, b"Q3"), (5, b"Q5")]
    assert counts["outcomes"][metering.OK] == 3 and len(spans) == 3


@pytest.mark.parametrize("hot", HOT_PATHS, ids=lambda m: m.__name__)
def test_a_rate_limit_refuses_repeats_from_the_route_cache_as_the_full_path_does(
    hot: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A service limit and a principal limit: repeats opened from the route cache spend their
    tokens, and are refused with the same REJECTED message and counts, as on the full path."""

    def scenario(broker: Broker, sessions: list[MemorySession], advance: "Callable[[float], None]") -> None:
        broker.traffic.set_limits(
            {
                "svc-limit": RateLimit.from_obj("svc-limit", {"service": "svc", "rate": 1, "burst": 3}),
                "everyone": RateLimit.from_obj("everyone", {"principal": "*", "rate": 0.5, "burst": 4}),
            }
        )
        requester = sessions[2]
        for sid in range(1, 12, 2):
            requester.feed(fr.request_frame(FrameType.REQUEST_RESPONSE, sid, _traced(sid), b"q"))
        advance(101.0)  # one more service token
        requester.feed(fr.request_frame(FrameType.REQUEST_RESPONSE, 13, _traced(13), b"q"))
        advance(102.0)  # and another
        requester.feed(fr.request_frame(FrameType.REQUEST_RESPONSE, 15, _traced(15), b"q"))
        advance(103.0)  # and another, but the principal's 4 and its one token in 2 s are spent
        requester.feed(fr.request_frame(FrameType.REQUEST_RESPONSE, 17, _traced(17), b"q"))

    (frames, _, counts), full_opens = _on_both_paths(hot, monkeypatch, scenario)
    assert full_opens == 1
    refusals = [Frame(raw) for who, raw in frames if who == "s2"]
    assert [r.stream_id for r in refusals] == [7, 9, 11, 17]
    assert all(r.error[0] == ErrorCode.REJECTED for r in refusals)
    assert [r.error[1].split(" exceeded")[0] for r in refusals] == ["rate limit 'svc-limit'"] * 3 + ["rate limit 'everyone'"]
    assert counts["refused"] == {"svc-limit": 3, "everyone": 1} and counts["outcomes"][metering.REJECTED] == 4
    assert sum(1 for who, _ in frames if who != "s2") == 5


@pytest.mark.parametrize("hot", HOT_PATHS, ids=lambda m: m.__name__)
def test_a_limit_changed_between_two_requests_of_a_connection_applies_to_the_second(
    hot: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A route cache entry holds the buckets its repeats spend (``hotpath.RouteRules``): a limit
    replaced or removed between two requests of one connection must apply to the second, as on
    the full path, not the buckets the entry was made with."""

    def scenario(broker: Broker, sessions: list[MemorySession], advance: "Callable[[float], None]") -> None:
        requester = sessions[2]
        tight = RateLimit.from_obj("svc-limit", {"service": "svc", "rate": 0.001, "burst": 1})
        broker.traffic.set_limits({"svc-limit": tight})
        requester.feed(fr.request_frame(FrameType.REQUEST_RESPONSE, 1, md.route_metadata("svc.m"), b"q"))
        requester.feed(fr.request_frame(FrameType.REQUEST_RESPONSE, 3, md.route_metadata("svc.m"), b"q"))  # spent
        looser = RateLimit.from_obj("svc-limit", {"service": "svc", "rate": 0.001, "burst": 3})
        broker.traffic.set_limits({"svc-limit": looser})  # a changed limit starts full
        for sid in (5, 7, 9, 11):
            requester.feed(fr.request_frame(FrameType.REQUEST_RESPONSE, sid, md.route_metadata("svc.m"), b"q"))
        broker.traffic.set_limits({})
        for sid in (13, 15):
            requester.feed(fr.request_frame(FrameType.REQUEST_RESPONSE, sid, md.route_metadata("svc.m"), b"q"))

    (frames, _, counts), full_opens = _on_both_paths(hot, monkeypatch, scenario)
    refusals = [Frame(raw) for who, raw in frames if who == "s2"]
    assert [r.stream_id for r in refusals] == [3, 11] and counts["refused"] == {"svc-limit": 2}
    assert full_opens == 3  # the first request, and the first after each change


@pytest.mark.parametrize("hot", HOT_PATHS, ids=lambda m: m.__name__)
def test_the_sweep_of_refilled_buckets_cannot_give_a_principal_two_buckets(
    hot: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Past ``MAX_BUCKETS`` principals, those whose buckets refilled are forgotten and get new
    ones on their next request. A route cache entry holding a forgotten bucket must not outlive
    the sweep: alice, on the connection that remembered her route and on a new one, spends one
    bucket, its burst of 2 and no more."""
    _use(hot, monkeypatch)
    monkeypatch.setattr(traffic, "MAX_BUCKETS", 2)
    files = write_keypair("ed25519", tmp_path)
    key = load_private_key(files.key)
    loop = asyncio.new_event_loop()
    try:
        broker = Broker(Settings(jwt_keys=str(files.cert)), loop)
        now = [100.0]
        broker.clock = broker.traffic.clock = lambda: now[0]
        broker.traffic.set_limits({"everyone": RateLimit.from_obj("everyone", {"principal": "*", "rate": 0.001, "burst": 2})})
        port = iter(range(45000, 45100))

        def connect(name: str, services: tuple[str, ...] = ()) -> MemorySession:
            conn = MemorySession(broker, next(port))
            conn.feed(auth_setup(mint_token(key, sub=name, roles=("admin",), ttl=3600), services, name))  # type: ignore[arg-type]
            assert conn.principal is not None and conn.principal.name == name, conn.take()
            return conn

        def ask(conn: MemorySession, sid: int) -> str:
            """'' when the request reached the provider, else the refusal's message."""
            conn.feed(fr.request_frame(FrameType.REQUEST_RESPONSE, sid, md.route_metadata("svc.m"), b"q"))
            answers = conn.take()
            return answers[0].error[1] if answers else ""

        connect("provider", ("svc",))
        alice = connect("alice")
        assert ask(alice, 1) == "" and alice.open_cache is not None  # her route remembered, her bucket made
        now[0] += 5000.0  # alice's bucket refills
        assert ask(connect("bob"), 1) == ""  # the second principal: bob's bucket is spent
        assert ask(connect("carol"), 1) == ""  # the third: alice's refilled bucket is swept
        again = connect("alice")
        answers = [ask(again, 1), ask(alice, 3), ask(alice, 5), ask(again, 3)]
        assert answers[:2] == ["", ""], answers
        assert all(a.startswith("rate limit 'everyone' exceeded by principal 'alice'") for a in answers[2:]), answers
        [plan] = {entry[3].plan for conn in (alice, again) for entry in conn.open_cache.values()}  # type: ignore[union-attr]
        assert len(plan) == 1  # one bucket of hers, held by both connections' route caches
    finally:
        loop.close()


@pytest.mark.parametrize("hot", HOT_PATHS, ids=lambda m: m.__name__)
def test_the_deadline_fifo_keeps_the_open_requests_and_ends_each_at_its_deadline(
    hot: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """600 requests under a 1 s deadline, opened 1 ms apart, three in four answered at once: the
    answered ones are swept out of the FIFO as it grows (it holds O(open requests), not all 600),
    and each unanswered one ends at its own deadline, the older half at one expiry and the rest
    at the next, with ERROR(CANCELED) to the requester and CANCEL to the provider, once."""
    _use(hot, monkeypatch)
    loop = asyncio.new_event_loop()
    try:
        broker = Broker(Settings(), loop)
        now = [100.0]
        broker.clock = broker.traffic.clock = lambda: now[0]
        provider, requester = _pair(broker)
        broker.set_policy("svc", ServicePolicy.from_obj({"deadline_ms": 1000}))
        state = broker.traffic.state
        unanswered: dict[int, int] = {}  # the requester's stream id -> the provider's
        for i in range(600):
            now[0] = 100.0 + i * 0.001
            requester.feed(fr.request_frame(FrameType.REQUEST_RESPONSE, 2 * i + 1, md.route_metadata("svc.m"), b"q"))
            [got] = provider.take()
            if i % 4 == 3:
                unanswered[2 * i + 1] = got.stream_id
            else:
                provider.feed(fr.payload_frame(got.stream_id, b"a", complete=True))
        assert len(requester.take()) == 450 and len(unanswered) == 150
        held = [st.req_id for queue in state.queues.values() for st in queue]
        assert state.tracked == len(held) < 2 * 150 + traffic.COMPACT_MIN  # swept, and counted right
        assert set(unanswered) <= set(held)

        def expire_at(t: float) -> tuple[list[int], list[int]]:
            now[0] = t
            broker.traffic.expire()
            errors = requester.take()
            assert all(e.error == (ErrorCode.CANCELED, "deadline of 1000 ms exceeded for route 'svc.m' (service 'svc')") for e in errors)
            return [e.stream_id for e in errors], [f.stream_id for f in provider.take() if f.type == FrameType.CANCEL]

        older = [sid for sid in unanswered if sid <= 2 * 299 + 1]  # opened by 100.299 s
        assert expire_at(101.2995) == (older, [unanswered[sid] for sid in older])
        rest = [sid for sid in unanswered if sid not in older]
        assert expire_at(102.0) == (rest, [unanswered[sid] for sid in rest])
        assert expire_at(103.0) == ([], [])
        assert state.tracked == 0 and not state.queues and broker.traffic.timeouts["svc"] == 150
    finally:
        loop.close()


_RR, _STREAM = FrameType.REQUEST_RESPONSE, FrameType.REQUEST_STREAM
#: the rate limits a run starts with or changes to: none, a service limit (refusing soon, later or
#: never), or a principal limit (a glob matching the requester)
_LIMITS: list[dict[str, dict[str, object]] | None] = [
    None,
    {"lim": {"service": "svc", "rate": 0.01, "burst": 1.0}},
    {"lim": {"service": "svc", "rate": 2.0, "burst": 3.0}},
    {"lim": {"service": "svc", "rate": 1e9, "burst": 1e9}},
    {"who": {"principal": "anon*", "rate": 1.0, "burst": 2.0}},
]
#: the service policies a run starts with or changes to
_POLICIES: list[dict[str, object] | None] = [
    None,
    {"deadline_ms": 300},
    {"idempotent": True, "retries": 1},
    {"deadline_ms": 300, "idempotent": True, "retries": 1},
    {"deadline_ms": 2000},
]
#: one step of the requester, a provider, the clock or the operator: a request (kind, traced,
#: deadline entry, which of two routes, the deadline entry after the trace entry), an answer by
#: provider 0 or 1 to its oldest unanswered request, time passing, or the limits or the
#: service's policy changed (an index into _LIMITS or _POLICIES)
_steps = st.lists(
    st.one_of(
        st.tuples(
            st.just("request"), st.sampled_from([_RR, _STREAM]), st.booleans(), st.sampled_from([None, b"150", b"5000"]), st.booleans(),
            st.booleans(),
        ),
        st.tuples(st.just("answer"), st.integers(0, 1), st.sampled_from([None, ErrorCode.REJECTED, ErrorCode.APPLICATION_ERROR])),
        st.tuples(st.just("advance"), st.sampled_from([0.1, 0.2, 0.4, 1.0])),
        st.tuples(st.just("limits"), st.integers(0, len(_LIMITS) - 1)),
        st.tuples(st.just("policy"), st.integers(0, len(_POLICIES) - 1)),
    ),
    max_size=30,
)


def _set_limits(broker: Broker, limits: dict[str, dict[str, object]] | None) -> None:
    """Set ``limits`` (None: none) on ``broker``, as the config store does."""
    broker.traffic.set_limits({name: RateLimit.from_obj(name, obj) for name, obj in (limits or {}).items()})


def _set_policy(broker: Broker, policy: dict[str, object] | None) -> None:
    """Set the service's ``policy`` (None: none) on ``broker``, as the config store does."""
    broker.set_policy("svc", None if policy is None else ServicePolicy.from_obj(policy))


@given(
    steps=_steps,
    policy=st.integers(0, len(_POLICIES) - 1),
    limits=st.integers(0, len(_LIMITS) - 1),
    coalesce=st.booleans(),
)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_the_route_cache_and_the_full_path_and_both_twins_agree(
    steps: list[tuple[object, ...]], policy: int, limits: int, coalesce: bool
) -> None:
    """Any mix of traced and untraced requests, with and without a deadline entry (before or after
    the trace entry), on two routes, under any of a deadline, retries and a rate limit, changed
    between requests, answered, refused or left to time out, to providers that coalesce (TCP: a
    traced repeat's parent id written in ``wire_out``) or take frames whole (WebSocket: stamped in
    a copy): the route cache opens them as the full path does (same frames, spans and counts),
    and the compiled hot path as the pure one."""
    def scenario(broker: Broker, sessions: list[MemorySession], advance: "Callable[[float], None]") -> None:
        _set_limits(broker, _LIMITS[limits])
        _set_policy(broker, _POLICIES[policy])
        requester, now, sid = sessions[2], 100.0, 1
        answered: list[set[int]] = [set(), set()]
        for step in steps:
            if step[0] == "request":
                _, kind, traced, asked, other, late = step
                meta = md.composite_entry(md.ROUTING_MIME, md.routing("svc.m", "v=2")) if other else md.route_metadata("svc.m")
                deadline = md.composite_entry(md.DEADLINE_MIME, asked) if asked is not None else b""  # type: ignore[arg-type]
                if traced:
                    trace = tracing.entry(f"00-{'ab' * 16}-{sid:016x}-01")
                    meta += trace + deadline if late else deadline + trace
                else:
                    meta += deadline
                requester.feed(fr.request_frame(kind, sid, meta, b"q", initial_n=1 if kind == _STREAM else 0))
                sid += 2
            elif step[0] == "answer":
                _, i, code = step
                provider = sessions[int(i)]  # type: ignore[call-overload]
                provider.flush()
                todo = [f for f in map(Frame, provider.out) if f.type in (_RR, _STREAM) and f.stream_id not in answered[int(i)]]  # type: ignore[call-overload]
                if todo:
                    answered[int(i)].add(todo[0].stream_id)  # type: ignore[call-overload]
                    if code is None:
                        provider.feed(fr.payload_frame(todo[0].stream_id, b"a", complete=True))
                    else:
                        provider.feed(fr.error_frame(todo[0].stream_id, code, "no"))  # type: ignore[arg-type]
            elif step[0] == "advance":
                now += step[1]  # type: ignore[operator]
                advance(now)
                broker.traffic.expire()
            elif step[0] == "limits":
                _set_limits(broker, _LIMITS[step[1]])  # type: ignore[call-overload]
            else:
                _set_policy(broker, _POLICIES[step[1]])  # type: ignore[call-overload]

    seen = []
    for hot in HOT_PATHS:
        with pytest.MonkeyPatch.context() as mp:
            seen.append(_span_ids_numbered(hot, _on_both_paths(hot, mp, scenario, coalesce)[0]))
    assert all(other == seen[0] for other in seen[1:])


def _span_ids_numbered(hot: ModuleType, seen: _Seen) -> _Seen:
    """``seen`` with each hop span id, in frames and spans, replaced by its place in the order
    ``hot`` drew them from ``_on_both_paths``' seed: the twins draw the same ids in the same order,
    but from different generators (the compiled one is splitmix64 in C)."""
    hot.seed_span_ids(15)
    numbered = {b"%016x" % hot.span_id(): b"span-%011d" % i for i in range(64)}
    frames, spans, counts = seen

    def number(raw: bytes) -> bytes:
        for hexed, place in numbered.items():
            raw = raw.replace(hexed, place)
        return raw

    return (
        [(name, number(raw)) for name, raw in frames],
        [{**span, "span_id": number(span["span_id"].encode()).decode()} for span in spans],  # type: ignore[attr-defined]
        counts,
    )
