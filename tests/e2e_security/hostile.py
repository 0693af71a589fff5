"""Hypothesis strategies for hostile clients: random bytes and mutated valid frame streams.

A hostile session is a list of *chunks*, each sent as it is: over TCP one write of bytes
(length prefixes included, or not, as the strategy decided), over WebSocket one binary
message. Valid streams start from real frames built with ``broker.frames`` — a SETUP with
one of several credentials, then requests, payloads, REQUEST_N, CANCEL, fragments,
keepalives, errors, metadata pushes, a second SETUP — and are then mutated: bytes flipped,
frames cut short, duplicated, dropped, swapped, or random bytes spliced in.

Credentials (:class:`Credentials`) are tokens the test mints: none, garbage, expired, a
stranger's key, ``alg: none``, a valid token for a principal no rule allows (``mallory``),
and a valid token of a principal allowed to call the target (``trusted``). Only sessions
that carry the trusted token intact may ever reach the provider.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st

from broker import frames as fr
from broker import metadata as md
from broker.auth import encode_bearer
from broker.frames import FrameType

__all__ = ["TARGET", "Credentials", "HostileSession", "mutated_frame_sessions", "random_byte_sessions", "setup_frame"]

TARGET = "hostile.target"
ROUTES = [f"{TARGET}.echo", f"{TARGET}.hold", f"{TARGET}.hold", f"{TARGET}", "other.service.call", ""]
STREAM_IDS = [1, 3, 5, 7, 9, 11, 2, 0, 0x7FFFFFFF]


@dataclass(frozen=True)
class Credentials:
    """The bearer tokens hostile SETUPs may carry, by name; ``trusted`` may call the target."""

    tokens: dict[str, str | None]

    @property
    def trusted(self) -> str:
        token = self.tokens["trusted"]
        assert token is not None
        return token


@dataclass(frozen=True)
class HostileSession:
    """What one hostile connection sends."""

    #: TCP: bytes written as they are (length prefixes included or not); WebSocket: one message each
    chunks: tuple[bytes, ...]

    def carries(self, token: str) -> bool:
        """Whether ``token`` appears intact in what is sent (then the connection may be admitted)."""
        return token.encode() in b"".join(self.chunks)


def setup_frame(token: str | None, register: bool = False, lease: bool = False) -> bytes:
    """A SETUP with ``token`` as bearer and, if ``register``, a registration for the target."""
    metadata = b""
    if register:
        reg = md.Registration(services=(TARGET,), instance="hostile", weight=1)
        metadata += md.composite_entry(md.REGISTER_MIME, reg.to_json())
    if token is not None:
        metadata += md.composite_entry(md.AUTH_MIME, encode_bearer(token))
    return fr.setup_frame(metadata=metadata or None, lease=lease)


def _setups(credentials: Credentials) -> st.SearchStrategy[bytes]:
    """SETUP frames; the trusted token and no registration are favoured so that some
    sessions get through and open streams on the provider (what the leak check needs)."""
    tokens = st.one_of(st.just(credentials.trusted), st.sampled_from(list(credentials.tokens.values())))
    return st.builds(setup_frame, tokens, st.sampled_from([False, False, False, True]), st.booleans())


_sid = st.sampled_from(STREAM_IDS)
_data = st.binary(max_size=64)
_n = st.sampled_from([0, 1, 7, fr.MAX_REQUEST_N, 0xFFFFFFFF])


def _request(ftype: int, sid: int, route: str, data: bytes, n: int, follows: bool, complete: bool) -> bytes:
    metadata = md.route_metadata(route) if route else None
    return fr.request_frame(
        ftype, sid, metadata, data, initial_n=min(n, fr.MAX_REQUEST_N), follows=follows, complete=complete
    )


_requests = st.builds(
    _request,
    st.sampled_from(
        [FrameType.REQUEST_RESPONSE, FrameType.REQUEST_FNF, FrameType.REQUEST_STREAM, FrameType.REQUEST_CHANNEL]
    ),
    _sid,
    st.sampled_from(ROUTES),
    _data,
    _n,
    st.booleans(),
    st.booleans(),
)

_others = st.one_of(
    st.builds(
        lambda sid, data, nxt, complete, follows: fr.payload_frame(
            sid, data, next_=nxt, complete=complete, follows=follows
        ),
        _sid,
        _data,
        st.booleans(),
        st.booleans(),
        st.booleans(),
    ),
    st.builds(lambda sid, n: fr.request_n_frame(sid, n & 0x7FFFFFFF), _sid, _n),
    st.builds(fr.cancel_frame, _sid),
    st.builds(
        lambda sid, code: fr.error_frame(sid, code, "hostile"), _sid, st.sampled_from([int(c) for c in fr.ErrorCode])
    ),
    st.builds(fr.keepalive_frame, st.booleans(), _data),
    st.builds(lambda route: fr.metadata_push_frame(md.route_metadata(route or "x.y")), st.sampled_from(ROUTES)),
    st.builds(fr.lease_frame, st.integers(0, 60_000), st.integers(0, 100)),
)


def _frames(credentials: Credentials) -> st.SearchStrategy[list[bytes]]:
    body = st.lists(st.one_of(_requests, _requests, _others), min_size=1, max_size=10)
    return st.builds(lambda setup, rest: [setup, *rest], _setups(credentials), body)


@st.composite
def _mutate(draw: st.DrawFn, frames: list[bytes]) -> list[bytes]:
    """Apply a few structural and byte-level mutations to a list of frames."""
    frames = list(frames)
    for _ in range(draw(st.integers(0, 3))):
        if not frames:
            break
        i = draw(st.integers(0, len(frames) - 1))
        op = draw(st.sampled_from(["flip", "cut", "dup", "drop", "swap", "splice", "retype"]))
        frame = frames[i]
        if op == "flip" and frame:
            pos = draw(st.integers(0, len(frame) - 1))
            frames[i] = frame[:pos] + bytes([frame[pos] ^ draw(st.integers(1, 255))]) + frame[pos + 1 :]
        elif op == "cut":
            frames[i] = frame[: draw(st.integers(0, max(0, len(frame) - 1)))]
        elif op == "dup":
            frames.insert(i, frame)
        elif op == "drop":
            del frames[i]
        elif op == "swap":
            j = draw(st.integers(0, len(frames) - 1))
            frames[i], frames[j] = frames[j], frames[i]
        elif op == "splice":
            frames.insert(i, draw(st.binary(max_size=32)))
        elif op == "retype" and len(frame) >= 6:
            ftype = draw(st.integers(0, 0x3F))
            frames[i] = frame[:4] + bytes([(ftype << 2) | (frame[4] & 0x03)]) + frame[5:]
    return frames


def mutated_frame_sessions(credentials: Credentials, websocket: bool) -> st.SearchStrategy[HostileSession]:
    """Valid frame streams with mutations; over TCP each frame gets its (true) length prefix."""

    def session(frames: list[bytes]) -> HostileSession:
        if websocket:
            return HostileSession(tuple(frames))
        return HostileSession((b"".join(fr.with_length_prefix(f) for f in frames),))

    return _frames(credentials).flatmap(_mutate).map(session)


def random_byte_sessions(credentials: Credentials, websocket: bool) -> st.SearchStrategy[HostileSession]:
    """Random bytes, alone or after a well-formed SETUP (so they reach the session, not just the handshake)."""
    setup = st.one_of(st.just(b""), _setups(credentials))
    if websocket:
        messages = st.lists(st.binary(min_size=0, max_size=200), min_size=1, max_size=5)
        return st.builds(lambda s, m: HostileSession(tuple([s, *m] if s else m)), setup, messages)
    return st.builds(
        lambda s, b: HostileSession(((fr.with_length_prefix(s) if s else b"") + b,)),
        setup,
        st.binary(min_size=1, max_size=600),
    )
