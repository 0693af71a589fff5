"""The relay's stream-id maps against a dumb reference: a dict keyed by (connection, id).

Hypothesis drives three in-process sessions (each a provider of its own service and a
requester of any) through random interleavings of requests, frames in both directions,
late frames for ended streams, and connection losses. After every step the real
``Session.streams`` maps and ``outstanding`` counters must match the model, every
frame must come out exactly where the model says, with the id the model expects, and each
route's meter must count the model's bytes each way, streams in flight and streams ended.

The sessions are real ``broker.session.Session`` objects on a real ``Broker``; only the
transport is replaced by a list (what the TCP/WS shells would write).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from broker import frames as fr
from broker import metadata as md
from broker import metering
from broker.frames import FLAG_COMPLETE, FLAG_NEXT, ErrorCode, FrameType
from broker.relay import Broker
from broker.session import State
from broker.settings import Settings
from tests.support.memory_session import MemorySession

SESSIONS = 3
RR, FNF, STREAM, CHANNEL = FrameType.REQUEST_RESPONSE, FrameType.REQUEST_FNF, FrameType.REQUEST_STREAM, FrameType.REQUEST_CHANNEL


@dataclass
class ModelStream:
    kind: int
    req: int
    rid: int
    prov: int
    pid: int
    in_done: bool = False
    out_done: bool = False


class StreamMaps(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.broker = Broker(Settings(), self.loop)
        self.sessions = [MemorySession(self.broker, 40000 + i) for i in range(SESSIONS)]
        for i, s in enumerate(self.sessions):
            reg = md.Registration(services=(f"s{i}",), instance=f"i{i}")
            s.feed(fr.setup_frame(metadata=md.composite_entry(md.REGISTER_MIME, reg.to_json())))
            assert s.state is State.SERVING and not s.take()
        self.open = [True] * SESSIONS
        self.next_rid = [1] * SESSIONS
        self.live: dict[tuple[int, int], ModelStream] = {}
        self.ended: list[tuple[int, int]] = []
        #: per provider index: requests sent to its route, and frame bytes relayed each way
        self.requests = [0] * SESSIONS
        self.bytes_in = [0] * SESSIONS
        self.bytes_out = [0] * SESSIONS

    def teardown(self) -> None:
        if hasattr(self, "loop"):
            self.loop.close()

    # -- helpers ----------------------------------------------------------------------------

    def _streams(self) -> list[ModelStream]:
        return list({id(m): m for m in self.live.values()}.values())

    def _silent(self, *except_: int) -> None:
        for i, s in enumerate(self.sessions):
            if i not in except_:
                assert s.take() == [], f"session {i} got frames the model does not expect"

    def _end_if_done(self, m: ModelStream) -> None:
        if m.in_done and m.out_done:
            del self.live[(m.req, m.rid)]
            del self.live[(m.prov, m.pid)]
            self.ended.append((m.req, m.rid))

    # -- rules ------------------------------------------------------------------------------

    @precondition(lambda self: any(self.open))
    @rule(data=st.data(), kind=st.sampled_from([RR, FNF, STREAM, CHANNEL]), complete=st.booleans())
    def request(self, data: st.DataObject, kind: int, complete: bool) -> None:
        req = data.draw(st.sampled_from([i for i in range(SESSIONS) if self.open[i]]))
        prov = data.draw(st.integers(0, SESSIONS - 1))
        rid = self.next_rid[req]
        self.next_rid[req] += 2
        complete = complete and kind == CHANNEL
        request = fr.request_frame(kind, rid, md.route_metadata(f"s{prov}.m"), b"%d" % rid, complete=complete)
        self.sessions[req].feed(request)
        self.requests[prov] += 1
        if not self.open[prov]:
            if kind != FNF:
                [err] = self.sessions[req].take()
                assert err.stream_id == rid and err.error[0] == ErrorCode.REJECTED
            self._silent()
            return
        [got] = self.sessions[prov].take()
        assert got.type == kind and got.data == b"%d" % rid
        pid = got.stream_id
        self.bytes_in[prov] += len(request)
        assert pid % 2 == 0 and (prov, pid) not in self.live, f"provider id {pid} is even and unused"
        self._silent()
        if kind == FNF:
            self.ended.append((req, rid))
            return
        m = ModelStream(kind, req, rid, prov, pid, in_done=kind != CHANNEL or complete)
        self.live[(req, rid)] = self.live[(prov, pid)] = m

    @precondition(lambda self: self.live)
    @rule(
        data=st.data(),
        from_requester=st.booleans(),
        what=st.sampled_from(["next", "complete", "next_complete", "request_n", "cancel", "error"]),
    )
    def frame(self, data: st.DataObject, from_requester: bool, what: str) -> None:
        m = data.draw(st.sampled_from(self._streams()))
        src, sid, dst, did = (m.req, m.rid, m.prov, m.pid) if from_requester else (m.prov, m.pid, m.req, m.rid)
        frame = {
            "next": fr.payload_frame(sid, b"n"),
            "complete": fr.payload_frame(sid, b"", next_=False, complete=True),
            "next_complete": fr.payload_frame(sid, b"nc", complete=True),
            "request_n": fr.request_n_frame(sid, 3),
            "cancel": fr.cancel_frame(sid),
            "error": fr.error_frame(sid, ErrorCode.APPLICATION_ERROR, "boom"),
        }[what]
        self.sessions[src].feed(frame)
        [got] = self.sessions[dst].take()
        assert got.stream_id == did and got.raw[4:] == frame[4:]
        self._silent()
        if from_requester:
            self.bytes_in[m.prov] += len(frame)
        else:
            self.bytes_out[m.prov] += len(frame)
        flags = got.flags
        if what == "error":
            m.in_done = m.out_done = True
        elif from_requester:
            if what == "cancel":
                m.out_done = True
                m.in_done = m.in_done or m.kind != CHANNEL
            elif got.type == FrameType.PAYLOAD and m.kind == CHANNEL and flags & FLAG_COMPLETE:
                m.in_done = True
        else:
            if what == "cancel":
                m.in_done = True
            elif got.type == FrameType.PAYLOAD and (flags & FLAG_COMPLETE or (m.kind == RR and flags & FLAG_NEXT)):
                m.out_done = True
        self._end_if_done(m)

    @precondition(lambda self: self.ended)
    @rule(data=st.data(), what=st.sampled_from(["next", "request_n", "cancel", "error"]))
    def late_frame(self, data: st.DataObject, what: str) -> None:
        """A frame for a stream that already ended (crossed a CANCEL, say) is dropped."""
        src, sid = data.draw(st.sampled_from(self.ended))
        if not self.open[src] or (src, sid) in self.live:
            return
        frame = {
            "next": fr.payload_frame(sid, b"late"),
            "request_n": fr.request_n_frame(sid, 1),
            "cancel": fr.cancel_frame(sid),
            "error": fr.error_frame(sid, ErrorCode.CANCELED, "late"),
        }[what]
        self.sessions[src].feed(frame)
        self._silent()

    @precondition(lambda self: sum(self.open) > 1)
    @rule(data=st.data())
    def connection_lost(self, data: st.DataObject) -> None:
        gone = data.draw(st.sampled_from([i for i in range(SESSIONS) if self.open[i]]))
        expected: dict[int, set[tuple[int, int]]] = {i: set() for i in range(SESSIONS)}
        for m in self._streams():
            if m.req == gone and m.prov == gone:
                pass  # both ends on the lost connection: nobody left to tell
            elif m.req == gone:
                expected[m.prov].add((FrameType.CANCEL, m.pid))
            elif m.prov == gone:
                expected[m.req].add((FrameType.ERROR, m.rid))
            else:
                continue
            del self.live[(m.req, m.rid)]
            del self.live[(m.prov, m.pid)]
        self.sessions[gone].close()
        self.open[gone] = False
        self.sessions[gone].take()
        for i in range(SESSIONS):
            if i != gone:
                assert {(f.type, f.stream_id) for f in self.sessions[i].take()} == expected[i]

    # -- invariants -------------------------------------------------------------------------

    @invariant()
    def maps_match_the_model(self) -> None:
        if not hasattr(self, "sessions"):
            return
        for i, s in enumerate(self.sessions):
            if not self.open[i]:
                assert s.state is State.CLOSED and not s.streams
                continue
            assert set(s.streams) == {sid for (idx, sid) in self.live if idx == i}
            assert s.outstanding == sum(1 for m in self._streams() if m.prov == i)
            for (idx, sid), m in self.live.items():
                if idx == i:
                    st_ = s.streams[sid]
                    assert (st_.req_id, st_.prov_id, st_.kind) == (m.rid, m.pid, m.kind)

    @invariant()
    def meters_match_the_model(self) -> None:
        """Every request to ``s{i}.m`` is in flight or ended with one outcome; no byte is missed."""
        if not hasattr(self, "sessions"):
            return
        meters = {m.route: m for m in self.broker.meter.meters()}
        for i in range(SESSIONS):
            meter = meters.get(f"s{i}.m")
            if meter is None:
                assert self.requests[i] == 0
                continue
            inflight = sum(1 for m in self._streams() if m.prov == i)
            assert meter.inflight == inflight
            assert sum(meter.outcomes) == self.requests[i] - inflight
            hist = meter.complete[metering.OK]
            assert (sum(hist.counts) if hist else 0) == meter.outcomes[metering.OK]
            assert (meter.bytes_in, meter.bytes_out) == (self.bytes_in[i], self.bytes_out[i])


TestStreamMaps = StreamMaps.TestCase
TestStreamMaps.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)


def test_broker_stream_ids_wrap_at_31_bits_and_skip_ids_in_use() -> None:
    """Stream ids are 31 bits. A long-lived provider connection sees 2^30 streams in a day or
    two at 10k requests/s: its ids must wrap back to 2, skipping ids still in use, never
    reaching the reserved top bit."""
    loop = asyncio.new_event_loop()
    try:
        broker = Broker(Settings(), loop)
        provider, requester = MemorySession(broker, 41000), MemorySession(broker, 41001)
        reg = md.Registration(services=("svc",), instance="p")
        provider.feed(fr.setup_frame(metadata=md.composite_entry(md.REGISTER_MIME, reg.to_json())))
        requester.feed(fr.setup_frame())

        def open_stream(rid: int) -> int:
            requester.feed(fr.request_frame(STREAM, rid, md.route_metadata("svc.m"), b""))
            [frame] = provider.take()
            return frame.stream_id

        assert open_stream(1) == 2  # stays open
        provider.next_local_id = fr.MAX_REQUEST_N - 3  # 0x7FFFFFFC
        ids = [open_stream(rid) for rid in (3, 5, 7, 9)]
        assert ids == [0x7FFFFFFC, 0x7FFFFFFE, 4, 6]
        assert set(provider.streams) == {2, 4, 6, 0x7FFFFFFC, 0x7FFFFFFE}
    finally:
        loop.close()
