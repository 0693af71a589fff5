"""A raw RSocket frame client for tests: any bytes out, parsed frames back.

Built on the ``broker.frames`` builders, it speaks no protocol by itself: the test
decides every frame, including malformed ones. Over TCP each frame gets the 3-byte
length prefix (:meth:`RawClient.send`) unless sent with :meth:`RawClient.send_raw`;
over WebSocket each frame is one binary message on ``/rsocket``::

    async with await RawClient.tcp(node.tcp) as c:            # or RawClient.ws(node.ws)
        await c.setup(services=["svc"], instance="p1")         # a provider
        sid = c.next_stream_id()
        await c.send(request_frame(FrameType.REQUEST_RESPONSE, sid, route_metadata("svc.m"), b"hi"))
        reply = await c.expect(FrameType.PAYLOAD, stream_id=sid)
        err = await c.expect_error(ErrorCode.CONNECTION_ERROR)  # connection-level (stream 0)
        await c.wait_closed()

``expect`` skips KEEPALIVE and LEASE frames unless asked for them and fails on any other
unexpected frame, so a test sees exactly what the broker sent. Timeouts only bound how
long a test waits for a condition; nothing asserts on speed.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from dataclasses import dataclass
from typing import Any, Iterable

import aiohttp

from broker import frames as fr
from broker import metadata as md
from broker.frames import ErrorCode, FrameType

__all__ = ["ConnectionClosed", "Frame", "RawClient", "provider_setup", "DEFAULT_TIMEOUT_S"]

#: How long to wait for a frame the broker must send; generous for a busy machine.
DEFAULT_TIMEOUT_S = 20.0
_SKIPPED = (FrameType.KEEPALIVE, FrameType.LEASE)


class ConnectionClosed(Exception):
    """The broker closed the connection."""


@dataclass(frozen=True)
class Frame:
    """One frame as received (no length prefix), with readers for the parts tests check."""

    raw: bytes

    @property
    def stream_id(self) -> int:
        return fr.header(self.raw)[0]

    @property
    def type(self) -> int:
        return fr.header(self.raw)[1]

    @property
    def flags(self) -> int:
        return fr.header(self.raw)[2]

    @property
    def error(self) -> tuple[int, str]:
        """``(code, message)`` of an ERROR frame."""
        return fr.parse_error(self.raw, 0, len(self.raw))

    @property
    def data(self) -> bytes:
        return fr.request_data(self.raw, 0, len(self.raw))

    @property
    def metadata(self) -> bytes:
        return fr.request_metadata(self.raw, 0, len(self.raw))[0]

    @property
    def request_n(self) -> int:
        return fr.parse_request_n(self.raw, 0, len(self.raw))

    @property
    def route(self) -> str | None:
        return md.route_of(self.metadata, md.COMPOSITE_MIME)

    def __repr__(self) -> str:
        try:
            name = FrameType(self.type).name
        except ValueError:
            name = f"0x{self.type:02x}"
        extra = ""
        if self.type == FrameType.ERROR and len(self.raw) >= 10:
            code, message = self.error
            extra = f" code=0x{code:x} {message!r}"
        return f"<Frame {name} stream={self.stream_id} flags=0x{self.flags:03x} len={len(self.raw)}{extra}>"


def provider_setup(
    services: Iterable[str] = (),
    instance: str | None = None,
    *,
    weight: int = 1,
    lease: bool = False,
    keepalive_ms: int = 20_000,
    max_lifetime_ms: int = 90_000,
    extra_metadata: bytes = b"",
) -> bytes:
    """A SETUP frame; with ``services`` it carries the registration entry of a provider."""
    metadata = extra_metadata
    service_list = list(services)
    if service_list:
        reg = md.Registration(services=tuple(service_list), instance=instance or "raw-provider", weight=weight)
        metadata = md.composite_entry(md.REGISTER_MIME, reg.to_json()) + metadata
    return fr.setup_frame(
        keepalive_ms=keepalive_ms, max_lifetime_ms=max_lifetime_ms, metadata=metadata or None, lease=lease
    )


class RawClient:
    """One connection to a broker; build with :meth:`tcp` or :meth:`ws`."""

    def __init__(self) -> None:
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._next_id = 1
        self._keepalive: asyncio.Task[None] | None = None
        #: frames ``expect`` skipped (KEEPALIVE, LEASE), oldest first, for tests that look back
        self.skipped: list[Frame] = []

    # -- construction ---------------------------------------------------------------------

    @classmethod
    async def tcp(
        cls,
        address: str | None,
        *,
        sndbuf: int | None = None,
        rcvbuf: int | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> "RawClient":
        """Connect to ``host:port``; ``sndbuf``/``rcvbuf`` shrink the kernel socket buffers
        (flow-control tests use them so that back-pressure shows up after little data);
        ``ssl_context`` speaks TLS (a client certificate in it makes an mTLS principal)."""
        assert address is not None, "this node has no TCP listener"
        host, _, port = address.rpartition(":")
        sock = socket.socket(socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET, socket.SOCK_STREAM)
        if sndbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, (host.strip("[]"), int(port)))
        except OSError:
            sock.close()
            raise
        client = cls()
        tls: dict[str, Any] = {"ssl": ssl_context, "server_hostname": host.strip("[]")} if ssl_context else {}
        client.reader, client.writer = await asyncio.open_connection(sock=sock, limit=1 << 16, **tls)
        return client

    @classmethod
    async def ws(cls, address: str | None) -> "RawClient":
        """Connect to ``ws://host:port/rsocket``."""
        assert address is not None, "this node has no WebSocket listener"
        client = cls()
        client._session = aiohttp.ClientSession()
        try:
            client._ws = await client._session.ws_connect(f"ws://{address}/rsocket", max_msg_size=0, autoping=True)
        except BaseException:
            await client._session.close()
            raise
        return client

    @classmethod
    async def connect(cls, address: str, transport: str = "tcp") -> "RawClient":
        """``transport`` is ``"tcp"`` or ``"ws"`` (for tests parametrized over both)."""
        return await (cls.ws(address) if transport == "ws" else cls.tcp(address))

    async def __aenter__(self) -> "RawClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def close(self) -> None:
        await self.stop_keepalive()
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except (ConnectionError, OSError):
                pass
        if self._ws is not None:
            await self._ws.close()
        if self._session is not None:
            await self._session.close()

    # -- sending --------------------------------------------------------------------------

    def next_stream_id(self) -> int:
        """The next odd (client-parity) stream id."""
        sid = self._next_id
        self._next_id += 2
        return sid

    async def send(self, *frames: bytes) -> None:
        """Send whole frames (TCP adds each one's length prefix)."""
        if self._ws is not None:
            for frame in frames:
                await self._ws.send_bytes(frame)
            return
        assert self.writer is not None
        self.writer.write(b"".join(fr.with_length_prefix(f) for f in frames))
        await self.writer.drain()

    async def send_raw(self, data: bytes) -> None:
        """Send bytes exactly as given (TCP: no prefix added; WS: one binary message)."""
        if self._ws is not None:
            await self._ws.send_bytes(data)
            return
        assert self.writer is not None
        self.writer.write(data)
        await self.writer.drain()

    async def send_text(self, text: str) -> None:
        """A WebSocket text message (not an RSocket frame: the broker must refuse it)."""
        assert self._ws is not None, "text messages exist on WebSocket only"
        await self._ws.send_str(text)

    def start_keepalive(self, every_s: float) -> None:
        """Send KEEPALIVE (no respond flag) every ``every_s`` seconds until stopped or closed,
        for clients whose SETUP promised a short max lifetime."""

        async def pump() -> None:
            with contextlib.suppress(ConnectionError, RuntimeError):
                while True:
                    await self.send(fr.keepalive_frame(False))
                    await asyncio.sleep(every_s)

        if self._keepalive is None:
            self._keepalive = asyncio.create_task(pump())

    async def stop_keepalive(self) -> None:
        """Stop the KEEPALIVE task: from now on the client is silent unless the test speaks."""
        task, self._keepalive = self._keepalive, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def setup(self, services: Iterable[str] = (), instance: str | None = None, **options: Any) -> None:
        """Send SETUP (see :func:`provider_setup` for the options)."""
        await self.send(provider_setup(services, instance, **options))

    async def request(
        self, ftype: int, route: str, data: bytes = b"", *, initial_n: int = fr.MAX_REQUEST_N, complete: bool = False
    ) -> int:
        """Open a stream to ``route``; returns its stream id."""
        sid = self.next_stream_id()
        await self.send(fr.request_frame(ftype, sid, md.route_metadata(route), data, initial_n=initial_n, complete=complete))
        return sid

    # -- receiving ------------------------------------------------------------------------

    async def recv(self, timeout: float = DEFAULT_TIMEOUT_S) -> Frame:
        """The next frame; raises ConnectionClosed at EOF and TimeoutError after ``timeout``."""
        async with asyncio.timeout(timeout):
            if self._ws is not None:
                msg = await self._ws.receive()
                if msg.type == aiohttp.WSMsgType.BINARY:
                    return Frame(msg.data)
                raise ConnectionClosed(f"websocket {msg.type.name}")
            assert self.reader is not None
            try:
                head = await self.reader.readexactly(3)
                return Frame(await self.reader.readexactly(int.from_bytes(head, "big")))
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                raise ConnectionClosed(str(exc)) from None

    async def expect(
        self,
        ftype: int,
        *,
        stream_id: int | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        skip: tuple[int, ...] = _SKIPPED,
    ) -> Frame:
        """The next frame of type ``ftype`` (and ``stream_id``); skip only ``skip`` types before it."""
        while True:
            frame = await self.recv(timeout)
            if frame.type == ftype and (stream_id is None or frame.stream_id == stream_id):
                return frame
            if frame.type in skip and frame.type != ftype:
                self.skipped.append(frame)
                continue
            raise AssertionError(f"expected {FrameType(ftype).name} on stream {stream_id}, got {frame!r}")

    async def expect_error(
        self, code: int, *, stream_id: int = 0, contains: str = "", timeout: float = DEFAULT_TIMEOUT_S
    ) -> str:
        """The next ERROR on ``stream_id`` must have ``code`` and contain ``contains``; returns its message."""
        frame = await self.expect(FrameType.ERROR, stream_id=stream_id, timeout=timeout)
        got, message = frame.error
        assert got == code, f"expected error 0x{code:x} ({ErrorCode(code).name}), got {frame!r}"
        assert contains in message, f"error message {message!r} lacks {contains!r}"
        return message

    async def wait_closed(self, timeout: float = DEFAULT_TIMEOUT_S) -> list[Frame]:
        """Read until the broker closes the connection; returns the frames read meanwhile."""
        frames: list[Frame] = []
        try:
            while True:
                frames.append(await self.recv(timeout))
        except ConnectionClosed:
            return frames
