"""One simulated device on the wire: RSocket over WebSocket (or TCP) on a bare asyncio protocol.

Why not :mod:`broker.client`: a load generator has to be cheaper than what it measures. A
cluster client costs a supervisor task, a connection object with its timers, a router, a
transport protocol and a handful of futures per connect — about 0.25 ms of CPU, more than
the node's 0.1 ms — so the simulator, sharing the machine, was what capped the connect rate
(issue 13). Here a device is one object, a backoff and, per connection, a four-field
asyncio protocol (:class:`_Link`); the upgrade request, the SETUP and the first KEEPALIVE
leave in one write, right behind each other (the node's listener takes frames sent behind
the request).

What a device does, and no more:

* SETUP registering its service, asking for topology pushes (to learn the other nodes);
  registered once its KEEPALIVE comes back (the node handles frames in order);
* answers ``<service>.ping`` (echo) and ``<service>.info`` (JSON: id, reconnects);
  fire-and-forgets are taken and dropped; other requests get ERROR(REJECTED);
* sends a KEEPALIVE when its fleet's ticker says so and gives up on a node silent for the
  lifetime (a paused node);
* when its connection ends it moves to the next node of its list after a full-jitter
  backoff; a SETUP refused with ``retry after N ms`` is tried again after that plus up to
  20 % (the node already gave each refused client its own slot);
* records its way back (:class:`Move`) for the fail-over timeline.

Framing is :mod:`broker.websocket` (the node's codec); client frames are masked (RFC 6455 §5.3).
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
import ssl as ssl_module
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from broker import metadata as md
from broker.backoff import Backoff
from broker.client.cluster import Topology
from broker.client.errors import retry_after_s
from broker.client.transport import parse_address
from broker.frames import (
    FLAG_RESPOND, MAX_FRAME_LENGTH, ErrorCode, FrameError, FrameType, error_frame, header, keepalive_frame, parse_error,
    payload_frame, request_data, request_metadata, split_frames,
)  # fmt: skip
from broker.websocket import OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, WebSocketError, accept_key, encode_frame, parse_frames

if TYPE_CHECKING:
    from broker.devices.fleet import Fleet

__all__ = ["Move", "Target", "WireDevice"]

#: the answer to an upgrade may not grow past this before its blank line
_MAX_HEAD = 16 * 1024


class Move(NamedTuple):
    """One device's way back after losing its node (wall-clock seconds), for the summary's
    fail-over timeline: connection lost → backoff → attempt started → TCP connected →
    upgraded → SETUP answered (registered). Earlier failed attempts fall between ``lost``
    and ``started`` (they are counted by reason in ``failures``)."""

    lost: float
    backoff_s: float
    started: float
    connected: float
    upgraded: float
    back: float


@dataclass(frozen=True, slots=True)
class Target:
    """A node as the devices dial it: where, with what TLS, and for WebSocket the upgrade
    request around its ``Sec-WebSocket-Key`` line (the key is fresh per connection, the rest
    is built once). A TCP node (``host:port``, ``tls://``) takes length-prefixed frames."""

    host: str
    port: int
    ssl: ssl_module.SSLContext | None
    websocket: bool
    head: bytes
    tail: bytes

    @classmethod
    def of(cls, address: str, headers: dict[str, str]) -> "Target":
        parsed = parse_address(address)
        context = ssl_module.create_default_context() if parsed.tls else None
        if parsed.kind != "ws":
            return cls(parsed.host, parsed.port, context, False, b"", b"")
        path = "/" + parsed.url.split("://", 1)[1].partition("/")[2]
        hostport = f"[{parsed.host}]:{parsed.port}" if ":" in parsed.host else f"{parsed.host}:{parsed.port}"
        extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        head = f"GET {path} HTTP/1.1\r\nHost: {hostport}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: "
        tail = f"\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        return cls(parsed.host, parsed.port, context, True, head.encode(), tail.encode())


class _Link(asyncio.Protocol):
    """One connection of a device: the asyncio protocol, so that a late callback of an
    abandoned connection (a timed-out attempt) can be told from the current one's."""

    __slots__ = ("device", "transport", "accept", "buf", "upgraded")

    def __init__(self, device: "WireDevice", accept: bytes | None) -> None:
        self.device = device
        self.transport: asyncio.Transport | None = None
        #: the expected ``sec-websocket-accept`` line; None on a TCP connection
        self.accept = accept
        self.buf = b""
        self.upgraded = accept is None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's are not asyncio.Transport subclasses
        if self.device.link is self:
            self.device.connected(self)

    def data_received(self, data: bytes) -> None:
        if self.device.link is self:
            self.device.received(self, data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.device.link is self:
            self.device.lost(self)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def framed(self, frame: bytes) -> bytes:
        """``frame`` as this connection carries it: a masked WebSocket message, or length-prefixed."""
        if self.accept is None:
            return len(frame).to_bytes(3, "big") + frame
        return encode_frame(OP_BINARY, frame, masked=True)

    def send_frame(self, frame: bytes) -> None:
        self.write(self.framed(frame))

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class WireDevice:
    """A device; its fleet (:class:`broker.devices.fleet.Fleet`) owns the counters and tickers."""

    def __init__(self, fleet: "Fleet", number: int, service: str, setup: bytes, nodes: list[str]) -> None:
        self.fleet = fleet
        self.number = number
        self.ping_route = f"{service}.ping"
        self.info_route = f"{service}.info"
        self.setup = setup
        # start at a node of its own, so a fleet spreads evenly over the list
        start = number % len(nodes)
        self.topology = Topology(nodes[start:] + nodes[:start])
        self.backoff = Backoff(fleet.spec.backoff_base_s, fleet.spec.backoff_max_s)
        #: the connection in use or being set up
        self.link: _Link | None = None
        self.registered = False
        self.ever_registered = False
        self.reconnects = 0
        self.next_sid = 1
        self.last_heard = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._dialing: asyncio.Task[None] | None = None
        #: why the attempt in progress failed, when the device itself ended it
        self._why = ""
        self._hint: float | None = None
        # the timeline of the attempt in progress and of the last loss (loop times)
        self._started = self._connected_at = self._upgraded_at = 0.0
        self._lost_at = self._lost_wait = 0.0

    # -- dialling -------------------------------------------------------------------------

    def dial(self) -> None:
        """Start an attempt on the next node of the list; it ends registered or in a retry."""
        fleet = self.fleet
        if fleet.stopping:
            return
        target = fleet.target(self.topology.next_address())
        loop = fleet.loop
        self._started = loop.time()
        self._why, self._hint = "", None
        if target.websocket:
            key = base64.b64encode(os.urandom(16))
            link = self.link = _Link(self, b"sec-websocket-accept: " + accept_key(key).encode().lower())
            request = target.head + key + target.tail
        else:
            link = self.link = _Link(self, None)
            request = b""
        self._timer = loop.call_later(fleet.setup_timeout_s, self._attempt_timed_out)
        self._dialing = loop.create_task(self._connect(target, link, request))

    async def _connect(self, target: Target, link: _Link, request: bytes) -> None:
        try:
            await self.fleet.loop.create_connection(
                lambda: link, target.host, target.port, ssl=target.ssl, server_hostname=target.host if target.ssl else None
            )
        except asyncio.CancelledError:  # the attempt timed out (or the fleet stops)
            self._attempt_failed(self._why or "timeout")
            return
        except OSError as exc:
            self._attempt_failed("connection_refused" if isinstance(exc, ConnectionRefusedError)
                                 else f"os_error_{exc.errno}" if exc.errno else "os_error")
            return
        finally:
            self._dialing = None
        if link.transport is None:  # made and lost again before this coroutine resumed
            self._attempt_failed(self._why or "connection_lost")
        else:  # the upgrade request, the SETUP and a KEEPALIVE to answer, in one write
            link.write(request + link.framed(self.setup) + link.framed(keepalive_frame(True)))

    def _attempt_timed_out(self) -> None:
        self._timer = None
        self._why = "timeout"
        if self._dialing is not None:
            self._dialing.cancel()
        elif self.link is not None:
            self.link.abort()

    def _attempt_failed(self, reason: str) -> None:
        fleet = self.fleet
        self._cancel_timer()
        self.link = None
        if fleet.stopping:
            return
        fleet.failures[reason] += 1
        if not self.ever_registered and fleet.loop.time() >= fleet.deadline:
            fleet.gave_up(self)
            return
        wait = self._hint * random.uniform(1.0, 1.2) if self._hint is not None else self.backoff.next_delay()
        fleet.loop.call_later(wait, self.dial)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- the current connection's events (from _Link) -------------------------------------

    def connected(self, link: _Link) -> None:
        self._connected_at = self._upgraded_at = self.last_heard = self.fleet.loop.time()

    def received(self, link: _Link, data: bytes) -> None:
        self.last_heard = self.fleet.loop.time()
        buf = link.buf + data if link.buf else data
        if not link.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > _MAX_HEAD:
                    self._end("upgrade_refused")
                else:
                    link.buf = buf
                return
            head = buf[:end].lower()
            if not head.startswith(b"http/1.1 101 ") or link.accept is None or link.accept not in head:
                self._end("upgrade_refused")
                return
            link.upgraded = True
            self._upgraded_at = self.last_heard
            buf = buf[end + 4 :]
        if link.accept is None:
            self._received_tcp(link, buf)
            return
        try:
            frames, used = parse_frames(buf, MAX_FRAME_LENGTH)
            for _, opcode, payload in frames:
                if opcode == OP_BINARY and len(payload) >= 6:
                    self._frame(link, payload)
                elif opcode == OP_PING:
                    link.write(encode_frame(OP_PONG, payload, masked=True))
                elif opcode == OP_CLOSE:
                    self._end("connection_lost")
                if self.link is not link or link.transport is None or link.transport.is_closing():
                    return
        except (WebSocketError, FrameError):
            self._end("protocol_error")
            return
        link.buf = buf[used:]

    def _received_tcp(self, link: _Link, buf: bytes) -> None:
        try:
            spans, used = split_frames(buf, 0, MAX_FRAME_LENGTH)
            for off, end in spans:
                if end - off >= 6:
                    self._frame(link, buf[off:end])
                if self.link is not link or link.transport is None or link.transport.is_closing():
                    return
        except FrameError:
            self._end("protocol_error")
            return
        link.buf = buf[used:]

    def lost(self, link: _Link) -> None:
        self.link = None
        if self.registered:
            self.registered = False
            loop = self.fleet.loop
            self._lost_at = loop.time()
            if not self.fleet.stopping:
                self._lost_wait = self.backoff.next_delay()
                loop.call_later(self._lost_wait, self.dial)
        elif self._dialing is None:  # made, then lost before it was registered
            self._attempt_failed(self._why or "connection_lost")

    # -- frames from the node -------------------------------------------------------------

    def _frame(self, link: _Link, frame: bytes) -> None:
        sid, ftype, flags = header(frame)
        if ftype == FrameType.KEEPALIVE:
            if flags & FLAG_RESPOND:
                link.send_frame(keepalive_frame(False))
            elif not self.registered:
                self._registered()
        elif ftype == FrameType.REQUEST_RESPONSE:
            link.send_frame(self._answer(sid, frame))
        elif ftype == FrameType.METADATA_PUSH:
            body = md.find_entry(frame[6:], md.TOPOLOGY_MIME)
            if body is not None:
                self.topology.update(body)
        elif ftype == FrameType.ERROR and sid == 0:
            _, message = parse_error(frame, 0, len(frame))
            if not self.registered:
                self._hint = retry_after_s(Exception(message))
                self._end("setup_rate_limited" if self._hint is not None else "setup_rejected")
            else:
                self._end("connection_lost")
        elif ftype in (FrameType.REQUEST_STREAM, FrameType.REQUEST_CHANNEL):
            link.send_frame(error_frame(sid, ErrorCode.REJECTED, "a simulated device answers request-response only"))

    def _answer(self, sid: int, frame: bytes) -> bytes:
        route = md.route_of(request_metadata(frame, 0, len(frame))[0], md.COMPOSITE_MIME)
        if route == self.ping_route:
            return payload_frame(sid, request_data(frame, 0, len(frame)), complete=True)
        if route == self.info_route:
            return payload_frame(sid, b'{"id": %d, "reconnects": %d}' % (self.number, self.reconnects), complete=True)
        return error_frame(sid, ErrorCode.APPLICATION_ERROR, f"device {self.number} has no route '{route}'")

    def _registered(self) -> None:
        self._cancel_timer()
        self.registered = True
        self.backoff.reset()
        fleet = self.fleet
        if self.ever_registered:
            self.reconnects += 1
            offset = time.time() - fleet.loop.time()  # loop time -> the wall clock the parent shares
            fleet.moves.append(Move(self._lost_at + offset, self._lost_wait, self._started + offset,
                                    self._connected_at + offset, self._upgraded_at + offset, self.last_heard + offset))
        else:
            self.ever_registered = True
            fleet.registered(self)

    # -- writing ------------------------------------------------------------------------------

    def send(self, frame: bytes) -> bool:
        """Send ``frame`` if registered; whether it went."""
        if not self.registered or self.link is None:
            return False
        self.link.send_frame(frame)
        return True

    def stream_id(self) -> int:
        sid, self.next_sid = self.next_sid, self.next_sid + 2
        return sid

    def _end(self, reason: str) -> None:
        """Drop the connection; its attempt failed for ``reason`` (if it was one)."""
        self._why = reason
        if self.link is not None:
            self.link.abort()

    def drop(self, reason: str) -> None:
        """Leave a registered connection (its node went silent) and move to the next node."""
        self.fleet.failures[reason] += 1
        self._end(reason)

    def close(self) -> None:
        self._cancel_timer()
        if self._dialing is not None:
            self._dialing.cancel()
        link, self.link = self.link, None
        if link is not None and link.transport is not None:
            if link.accept is not None:
                link.write(encode_frame(OP_CLOSE, (1000).to_bytes(2, "big"), masked=True))
            link.transport.close()
