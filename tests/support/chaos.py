"""A loopback TCP chaos proxy: put it in front of a listener to delay, drop or partition a link.

::

    proxy = await ChaosProxy.start()           # listens on 127.0.0.1:<free port>
    proxy.upstream = node.tcp                  # may be set after the node printed its address
    ...  # start the node with --advertise {proxy.address}: the others' links now go through us
    proxy.partition()                          # both ways: bytes vanish, connections stay open
    proxy.partition(Direction.UPSTREAM)        # one way: client → server bytes vanish
    proxy.heal()
    proxy.delay_s = 0.2                        # every chunk waits that long before it goes on
    proxy.drop()                               # reset every open connection (they may reconnect)
    proxy.captured[0]                          # the first client → server bytes (replay tests)
    await proxy.close()

A partition *blackholes* bytes rather than closing sockets: that is what a real network
partition looks like to TCP (no FIN, no RST), so the peers must notice by their own
keepalive timeouts. New connections during a partition are accepted and blackholed too.
Healing resumes forwarding on connections that are still open; bytes sent during the
partition are gone, so a peer that kept a connection across it sees a broken stream — which
is why the RSocket peers involved are expected to have given up on it and reconnected.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum

__all__ = ["ChaosProxy", "Direction"]

_CHUNK = 1 << 16
#: Bytes kept per connection in :attr:`ChaosProxy.captured`: enough for a handshake.
CAPTURE_LIMIT = 1 << 20


class Direction(enum.Flag):
    """Which way bytes flow: UPSTREAM is client → upstream server, DOWNSTREAM is back."""

    UPSTREAM = enum.auto()
    DOWNSTREAM = enum.auto()
    BOTH = UPSTREAM | DOWNSTREAM


class ChaosProxy:
    """Forwards every connection on :attr:`address` to :attr:`upstream`, with faults on demand."""

    def __init__(self, server: asyncio.Server) -> None:
        self._server = server
        host, port = server.sockets[0].getsockname()[:2]
        self.address = f"{host}:{port}"
        #: "host:port" connections are forwarded to; None refuses them (closed at once)
        self.upstream: str | None = None
        #: seconds every chunk waits before it is forwarded (0: none)
        self.delay_s = 0.0
        #: directions whose bytes are currently discarded
        self.blocked = Direction(0)
        self.stats = {"connections": 0, "forwarded_bytes": 0, "blackholed_bytes": 0}
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        #: per accepted connection, the first CAPTURE_LIMIT bytes the client sent upstream
        #: (what an eavesdropper on the wire records; replay tests send them again)
        self.captured: list[bytearray] = []

    @classmethod
    async def start(cls, host: str = "127.0.0.1", upstream: str | None = None) -> ChaosProxy:
        proxy: ChaosProxy | None = None

        async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            assert proxy is not None
            await proxy._serve(reader, writer)

        server = await asyncio.start_server(accepted, host, 0)
        proxy = cls(server)
        proxy.upstream = upstream
        return proxy

    # -- faults -----------------------------------------------------------------------------

    def partition(self, direction: Direction = Direction.BOTH) -> None:
        """Discard bytes flowing in ``direction`` (on open and new connections) until :meth:`heal`."""
        self.blocked = direction

    def heal(self) -> None:
        """Forward everything again, without delay."""
        self.blocked = Direction(0)
        self.delay_s = 0.0

    def drop(self) -> None:
        """Reset every open connection, as a crashed middlebox would."""
        for client, server in list(self._pairs):
            for writer in (client, server):
                transport = writer.transport
                if not transport.is_closing():
                    transport.abort()

    @property
    def open_connections(self) -> int:
        return len(self._pairs)

    # -- forwarding -------------------------------------------------------------------------

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.stats["connections"] += 1
        if self.upstream is None:
            client_writer.close()
            return
        host, _, port = self.upstream.rpartition(":")
        try:
            server_reader, server_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            client_writer.transport.abort()
            return
        pair = (client_writer, server_writer)
        self._pairs.add(pair)
        capture = bytearray()
        self.captured.append(capture)
        try:
            await asyncio.gather(
                self._pump(client_reader, server_writer, Direction.UPSTREAM, capture),
                self._pump(server_reader, client_writer, Direction.DOWNSTREAM),
            )
        finally:
            self._pairs.discard(pair)
            for writer in pair:
                writer.transport.abort()

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        direction: Direction,
        capture: bytearray | None = None,
    ) -> None:
        """Copy one direction until EOF or error; closing either side ends the pair."""
        try:
            while chunk := await reader.read(_CHUNK):
                if capture is not None and len(capture) < CAPTURE_LIMIT:
                    capture += chunk[: CAPTURE_LIMIT - len(capture)]
                if self.delay_s > 0:
                    await asyncio.sleep(self.delay_s)
                if direction in self.blocked:
                    self.stats["blackholed_bytes"] += len(chunk)
                    continue
                self.stats["forwarded_bytes"] += len(chunk)
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.transport.abort()

    async def close(self) -> None:
        """Stop listening and reset every connection."""
        self._server.close()
        self.drop()
        with contextlib.suppress(Exception):
            await self._server.wait_closed()
