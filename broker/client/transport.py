"""Byte transports under a client connection: TCP (optionally TLS) and WebSocket (ws/wss).

A transport moves whole frames. It hands each received frame to its sink as
``frame_received(buf, off, end)`` (offsets into a bytes object, nothing copied for frames
that arrive whole) and takes a *batch* of frames to send with :meth:`write_frames`: the
connection calls it at most once per event-loop turn, so a burst of requests costs one
``transport.write`` (one system call) instead of one per frame.

Addresses::

    host:port  or  tcp://host:port      RSocket over TCP (length-prefixed frames)
    tls://host:port                     the same over TLS (or ``host:port`` with an SSL context;
                                        :func:`broker.auth.tls.client_context` makes one)
    ws://host:port/rsocket              WebSocket, one frame per binary message
    wss://host:port/rsocket             WebSocket over TLS

The TCP framing is :func:`broker.client.codec.read_frames` and
:func:`broker.client.codec.prefixed` (compiled when built; fuzzed against
:func:`broker.frames.split_frames` and :func:`broker.frames.with_length_prefix`); nothing
here reads a frame's contents.
"""

from __future__ import annotations

import asyncio
import ssl as ssl_module
from dataclasses import dataclass
from typing import Protocol

from broker.client.websocket import open_websocket
from broker.client.codec import prefixed, read_frames
from broker.frames import MAX_FRAME_LENGTH, FrameError

__all__ = ["Address", "FrameSink", "FrameTransport", "open_transport", "parse_address"]


class FrameSink(Protocol):
    """What a transport delivers to: the connection."""

    def frame_received(self, buf: bytes, off: int, end: int) -> None: ...

    def transport_lost(self, reason: str) -> None: ...

    def writing_paused(self) -> None: ...

    def writing_resumed(self) -> None: ...


class FrameTransport(Protocol):
    def write_frames(self, frames: list[bytes]) -> None: ...

    def close(self) -> None: ...

    @property
    def peer(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Address:
    """A parsed broker address."""

    kind: str  # "tcp" or "ws"
    host: str
    port: int
    tls: bool
    url: str  # the WebSocket URL (ws/wss), or ``host:port``

    def __str__(self) -> str:
        return self.url


def parse_address(text: str) -> Address:
    """``host:port``, ``tcp://``, ``tls://``, ``ws://`` or ``wss://`` → :class:`Address`.

    Raises ValueError naming the expected forms, so a typo in a config fails at start.
    """
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "tcp", text
    scheme = scheme.lower()
    if scheme not in ("tcp", "tls", "ws", "wss"):
        raise ValueError(f"broker address {text!r}: scheme must be tcp, tls, ws or wss")
    hostport, slash, path = rest.partition("/")
    host, colon, port_text = hostport.rpartition(":")
    if not colon or not host or not port_text.isdigit():
        raise ValueError(f"broker address {text!r} is not HOST:PORT, tcp://HOST:PORT or ws://HOST:PORT/rsocket")
    host = host.strip("[]")
    if scheme in ("ws", "wss"):
        url = f"{scheme}://{hostport}/{path if slash else 'rsocket'}"
        return Address("ws", host, int(port_text), scheme == "wss", url)
    return Address("tcp", host, int(port_text), scheme == "tls", hostport)


class _TcpProtocol(asyncio.Protocol):
    """RSocket over a stream socket: 3-byte length prefixes, frames split in place."""

    def __init__(self, sink: FrameSink, max_frame: int) -> None:
        self.sink = sink
        self.max_frame = max_frame
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._need = 0  # bytes the buffered partial frame needs before it is worth splitting
        self.peer = "?"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Nagle is off already: asyncio and uvloop set TCP_NODELAY on every TCP connection
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"

    def data_received(self, data: bytes) -> None:
        if self._buf:
            self._buf += data
            if len(self._buf) < self._need:
                return
            data = bytes(self._buf)
            self._buf = bytearray()
        try:
            consumed, need = read_frames(self.sink, data, self.max_frame)
        except FrameError as exc:
            self.sink.transport_lost(f"bad framing from {self.peer}: {exc}")
            self.close()
            return
        if consumed < len(data):
            self._buf = bytearray(memoryview(data)[consumed:])
            self._need = need

    def eof_received(self) -> bool:
        return False

    def pause_writing(self) -> None:
        self.sink.writing_paused()

    def resume_writing(self) -> None:
        self.sink.writing_resumed()

    def connection_lost(self, exc: Exception | None) -> None:
        self.sink.transport_lost(f"connection to {self.peer} closed" + (f": {exc}" if exc else ""))

    # -- FrameTransport --------------------------------------------------------------------

    def write_frames(self, frames: list[bytes]) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.write(prefixed(frames))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def open_transport(
    address: Address,
    sink: FrameSink,
    *,
    ssl: ssl_module.SSLContext | None = None,
    max_frame: int = MAX_FRAME_LENGTH,
    headers: dict[str, str] | None = None,
) -> FrameTransport:
    """Connect to ``address`` and deliver its frames to ``sink``."""
    loop = asyncio.get_running_loop()
    context = ssl if ssl is not None else (ssl_module.create_default_context() if address.tls else None)
    if address.kind == "tcp":
        _, protocol = await loop.create_connection(
            lambda: _TcpProtocol(sink, max_frame), address.host, address.port, ssl=context
        )
        return protocol
    path = "/" + address.url.split("://", 1)[1].partition("/")[2]
    return await open_websocket(sink, address.host, address.port, path, ssl=context, max_frame=max_frame, headers=headers)
