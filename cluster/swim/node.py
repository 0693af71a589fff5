"""The asyncio shell around the SWIM core: sockets, timers, callbacks. Nothing clever.

Rules of this module:

* It only moves bytes and time: UDP datagrams and TCP frames in, through the
  :class:`~cluster.swim.wire.PacketCodec`, into :class:`~cluster.swim.core.Swim`; the
  core's outputs back out. Protocol decisions live in the core.
* One port, two protocols: UDP for probes and gossip, TCP for push-pull and oversized
  messages. A TCP connection starts with one channel byte (0x01 gossip, 0x02 Raft, ...);
  other channels are handed to handlers registered with :meth:`GossipNode.add_tcp_channel`.
  Gossip frames are ``4-byte big-endian length | sealed packet``.
* Without a cluster key, binding a non-loopback address is refused unless
  ``allow_insecure=True``: unauthenticated gossip on a network lets anyone join or kill
  members (like Redis's protected mode).
* Members may advertise host names: UDP sends go through a :class:`~cluster.swim.resolve.Resolver`
  (cached, re-resolved in the background, never on the send path); a datagram to a name not
  resolved yet waits for its one lookup. TCP connects resolve through the loop as usual.
* Every dropped packet is counted (:meth:`GossipNode.stats`); callbacks that raise are
  logged and do not stop the node. A gossip TCP exchange must finish within
  ``tcp_timeout_s``, and one address holds at most ``MAX_UNOPENED_PER_PEER`` streams whose
  first frame has not opened yet (what an unauthenticated peer can make us buffer).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import struct
import time
from collections import Counter
from typing import Any, Awaitable, Callable, Iterable

from broker.loopback import is_loopback_host
from cluster.crypto import Keyring
from cluster.routing_table import RemoteEntry, RoutesChanged, RoutingTable, ServiceEntry

from .config import Config
from .core import Addr, MemberChanged, NameConflict, PushPullTo, Send, Swim
from .messages import PushPull
from .resolve import Resolver
from .wire import MAX_FRAME, Dropped, PacketCodec

__all__ = ["CHANNEL_GOSSIP", "CHANNEL_RAFT", "GossipNode", "parse_addr"]

log = logging.getLogger("rsbroker.gossip")

#: TCP channel bytes on the cluster port. APPEND-ONLY.
CHANNEL_GOSSIP = 0x01
CHANNEL_RAFT = 0x02

TcpHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
#: Gossip TCP streams one address may hold before a frame of theirs opened (push-pulls and
#: oversized messages are short exchanges; nodes sharing a host rarely overlap more).
MAX_UNOPENED_PER_PEER = 4
_LEN = struct.Struct(">I")


def parse_addr(text: str) -> Addr:
    """``"host:port"`` (or ``"[v6]:port"``) -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected host:port, got {text!r}")
    return host.strip("[]"), int(port)


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, node: "GossipNode") -> None:
        self._node = node

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self._node._on_datagram(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        self._node._counters["udp_errors"] += 1


class GossipNode:
    """A cluster member: membership by SWIM, routing entries by gossip, over UDP and TCP."""

    def __init__(
        self,
        node_id: str,
        bind: str | Addr,
        *,
        config: Config | None = None,
        keyring: Keyring | None = None,
        meta: dict[str, str] | None = None,
        advertise: str | Addr | None = None,
        allow_insecure: bool = False,
    ) -> None:
        self.node_id = node_id
        self.config = (config or Config()).validate()
        self._bind = parse_addr(bind) if isinstance(bind, str) else bind
        self._advertise = parse_addr(advertise) if isinstance(advertise, str) else advertise
        if keyring is None and not allow_insecure and not is_loopback_host(self._bind[0]):
            raise ValueError(
                f"refusing to gossip on {self._bind[0]} without a cluster key: anyone on the network "
                "could join or declare members dead; give a key or allow_insecure=True"
            )
        if self._bind[0] in ("0.0.0.0", "::") and self._advertise is None:
            raise ValueError("binding a wildcard address needs an advertise address other members can reach")
        self._keyring = keyring
        self._meta = dict(meta or {})
        self._codec = PacketCodec(keyring, max_clock_skew_s=self.config.max_clock_skew_s,
                                  rand64=lambda: int.from_bytes(os.urandom(8), "big"))
        self._counters: Counter[str] = Counter()
        self._channels: dict[int, TcpHandler] = {}
        #: per peer host, gossip streams whose first frame has not opened yet (oldest first)
        self._unopened: dict[str, list[asyncio.StreamWriter]] = {}
        self._member_callbacks: list[Callable[[MemberChanged], None]] = []
        self._route_callbacks: list[Callable[[RoutesChanged], None]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._wake = asyncio.Event()
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._runner: asyncio.Task[None] | None = None
        self._swim: Swim | None = None
        self._table: RoutingTable | None = None
        self._moved_callbacks: list[Callable[[str], None]] = []
        self._resolver = Resolver(on_moved=lambda host: self._notify(self._moved_callbacks, host))

    # ---- lifecycle ----------------------------------------------------------------------

    async def start(self) -> Addr:
        """Bind UDP and TCP on the same port (port 0 picks one) and start the timers."""
        loop = asyncio.get_running_loop()
        host, port = self._bind
        for attempt in range(10):
            udp, _ = await loop.create_datagram_endpoint(lambda: _Udp(self), local_addr=(host, port))
            bound = udp.get_extra_info("sockname")[1]
            try:
                self._tcp = await asyncio.start_server(self._on_tcp, host, bound)
            except OSError:
                udp.close()
                if port != 0 or attempt == 9:
                    raise
                continue
            self._udp = udp
            self._resolver.family = udp.get_extra_info("socket").family
            break
        bound_addr = (host, bound)
        advertised = (self._advertise[0], self._advertise[1] or bound) if self._advertise else bound_addr
        self._table = RoutingTable(self.node_id, time.time_ns() // 1_000_000, self.config)
        self._swim = Swim(self.node_id, advertised, config=self.config, rng=random.Random(os.urandom(16)),
                          now=loop.time(), meta=self._meta, delegate=self._table, sealed=self._keyring is not None)
        self._runner = loop.create_task(self._run())
        log.info("gossip node %s listening on %s:%d (udp+tcp), advertised %s:%d",
                 self.node_id, host, bound, advertised[0], advertised[1])
        return bound_addr

    async def join(self, seeds: Iterable[str | Addr]) -> int:
        """Push-pull with each seed; returns how many answered."""
        addrs = [parse_addr(s) if isinstance(s, str) else s for s in seeds]
        results = await asyncio.gather(*(self._push_pull(a, join=True) for a in addrs))
        return sum(results)

    async def leave(self) -> None:
        """Announce a graceful leave, give it ``leave_propagate_s`` to spread, then stop."""
        swim = self._require()
        loop = asyncio.get_running_loop()
        self._process(swim.leave(loop.time()))
        deadline = loop.time() + self.config.leave_propagate_s
        while swim.leave_pending() and loop.time() < deadline:
            await asyncio.sleep(self.config.gossip_interval_s / 2)
        await self.stop()

    async def stop(self) -> None:
        """Close sockets and timers without telling anyone (as a crash would look)."""
        pending = list(self._tasks) + ([self._runner] if self._runner else [])
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        self._runner = None
        if self._udp:
            self._udp.close()
            self._udp = None
        if self._tcp:
            self._tcp.close()
            await self._tcp.wait_closed()
            self._tcp = None

    # ---- API for the broker ---------------------------------------------------------------

    @property
    def address(self) -> Addr:
        """The address other members know us by."""
        return self._require().addr

    @property
    def background_tasks(self) -> dict[str, asyncio.Task[None]]:
        """The timer loop, which must run until :meth:`stop` (for supervision)."""
        return {"gossip timer": self._runner} if self._runner is not None else {}

    def add_tcp_channel(self, tag: int, handler: TcpHandler) -> None:
        """Serve TCP connections whose first byte is ``tag`` with ``handler`` (e.g. Raft)."""
        if tag == CHANNEL_GOSSIP or not 0 <= tag <= 255:
            raise ValueError(f"channel byte {tag} is reserved or out of range")
        self._channels[tag] = handler

    def on_member_changed(self, callback: Callable[[MemberChanged], None]) -> None:
        self._member_callbacks.append(callback)

    def on_routes_changed(self, callback: Callable[[RoutesChanged], None]) -> None:
        self._route_callbacks.append(callback)

    def on_host_moved(self, callback: Callable[[str], None]) -> None:
        """``callback(host)`` when a member's host name resolves to a new address: long-lived
        connections to the old one (Raft's) hang until TCP gives up, minutes later."""
        self._moved_callbacks.append(callback)

    def set_local_services(self, entries: Iterable[ServiceEntry]) -> None:
        """Replace what this node announces; differences are gossiped at once."""
        self.table.set_local(entries, asyncio.get_running_loop().time())
        self._wake.set()

    def set_local_service(self, service: str, entries: Iterable[ServiceEntry]) -> None:
        """Replace what this node announces for one service (O(its instances))."""
        self.table.set_local_service(service, entries, asyncio.get_running_loop().time())

    def lookup(self, service: str) -> list[RemoteEntry]:
        """Entries of other live nodes for ``service``."""
        return self._table.lookup(service) if self._table else []

    @property
    def table(self) -> RoutingTable:
        """The routing table, for reads (``entries``, ``count``, ``service_names``)."""
        if self._table is None:
            raise RuntimeError("gossip node not started")
        return self._table

    def set_keyring(self, keyring: Keyring) -> None:
        """Key rotation without restart: add the new key as secondary everywhere, then make
        it primary everywhere, then drop the old one (each step a new Keyring here)."""
        self._codec.set_keyring(keyring)
        self._keyring = keyring

    def set_meta(self, meta: dict[str, str]) -> None:
        self._require().set_meta(meta)
        self._wake.set()

    def members(self) -> list[dict[str, Any]]:
        """Every listed member: node_id, address, state, incarnation, metadata, and how many
        routing entries it announces (O(members); :meth:`services_of` lists them)."""
        swim, table = self._require(), self._table
        assert table is not None
        return [{
            "node_id": m.node,
            "address": f"{m.host}:{m.port}",
            "resolved": self._resolver.known(m.host),
            "state": m.state.name.lower(),
            "incarnation": m.incarnation,
            "metadata": m.meta,
            "routes": table.count(m.node),
        } for m in swim.members()]

    def stats(self) -> dict[str, int]:
        """Packet, byte and drop counters (``dropped_decrypt``, ``dropped_replay``, ...)."""
        merged = Counter(self._codec.stats)
        merged.update(self._counters)
        if self._table:
            merged["routes_not_announced"] = self._table.not_announced
        merged["dns_lookups"] = self._resolver.lookups
        merged["dns_failures"] = self._resolver.failures
        if self._swim:
            merged.update(self._swim.counts)
            merged["health_score"] = self._swim.awareness.score
            merged["members_live"] = self._swim.num_live()
        return dict(merged)

    # ---- the timer loop ---------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        swim = self._require()
        while True:
            self._process(swim.tick(loop.time()))
            delay = max(0.0, swim.next_deadline() - loop.time())
            self._wake.clear()
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow the
            # cancellation that stop() sends (gh-86296), leaving a node that never stops.
            try:
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            except TimeoutError:
                pass

    def _process(self, outputs: list[object]) -> None:
        for out in outputs:
            if isinstance(out, Send):
                if out.reliable:
                    self._spawn(self._send_tcp(out.addr, out.messages))
                else:
                    self._send_udp(out.addr, self._codec.seal(out.messages, time.time()))
            elif isinstance(out, PushPullTo):
                self._spawn(self._push_pull(out.addr, out.join))
            elif isinstance(out, MemberChanged):
                self._notify(self._member_callbacks, out)
            elif isinstance(out, RoutesChanged):
                self._notify(self._route_callbacks, out)
            elif isinstance(out, NameConflict):
                log.warning("node name %s claimed by %s:%d and %s:%d; keeping the first",
                            out.node, *out.known, *out.other)
        self._wake.set()

    def _notify(self, callbacks: list[Callable[[Any], None]], event: object) -> None:
        for cb in callbacks:
            try:
                cb(event)
            except Exception:
                log.exception("gossip callback %r failed on %r", cb, event)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _require(self) -> Swim:
        if self._swim is None:
            raise RuntimeError("gossip node not started")
        return self._swim

    # ---- UDP ----------------------------------------------------------------------------

    def _send_udp(self, addr: Addr, packet: bytes) -> None:
        """Send at once to a known address; a name not resolved yet sends after its lookup."""
        if self._udp is None:
            return
        address = self._resolver.cached(addr[0])
        if address is not None:
            self._udp.sendto(packet, (address, addr[1]))
        else:
            self._spawn(self._resolve_and_send(addr, packet))

    async def _resolve_and_send(self, addr: Addr, packet: bytes) -> None:
        address = await self._resolver.resolve(addr[0])
        if address is None:
            self._counters["dropped_unresolved"] += 1
        elif self._udp is not None:
            self._udp.sendto(packet, (address, addr[1]))

    def _on_datagram(self, data: bytes, src: Addr) -> None:
        if self._swim is None or self._runner is None:
            return
        try:
            messages = self._codec.open(data, time.time())
        except Dropped as drop:
            log.debug("dropped datagram from %s:%d: %s", src[0], src[1], drop)
            return
        self._process(self._swim.receive(src, messages, asyncio.get_running_loop().time()))

    # ---- TCP ----------------------------------------------------------------------------

    async def _read_frame(self, reader: asyncio.StreamReader) -> bytes:
        header = await reader.readexactly(_LEN.size)
        (length,) = _LEN.unpack(header)
        if length > MAX_FRAME:
            self._counters["dropped_oversize"] += 1
            raise Dropped("oversize", f"{length} byte frame")
        return await reader.readexactly(length)

    def _frame(self, messages: Iterable[Any]) -> bytes:
        data = self._codec.seal(list(messages), time.time())
        return _LEN.pack(len(data)) + data

    async def _on_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            tag = (await asyncio.wait_for(reader.readexactly(1), self.config.tcp_timeout_s))[0]
            if tag != CHANNEL_GOSSIP:
                handler = self._channels.get(tag)
                if handler is None:
                    self._counters["dropped_channel"] += 1
                    return
                await handler(reader, writer)
                return
            await asyncio.wait_for(self._serve_gossip(reader, writer), self.config.tcp_timeout_s)
        except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError, Dropped) as exc:
            self._counters["tcp_errors"] += 1
            if isinstance(exc, asyncio.TimeoutError):
                self._counters["dropped_timeout"] += 1
            log.debug("gossip tcp connection ended: %r", exc)
        finally:
            self._unopened_done(writer)
            writer.close()

    def _unopened_add(self, writer: asyncio.StreamWriter) -> None:
        """Bound the gossip streams one address holds before a frame of theirs opened: each may
        buffer up to MAX_FRAME for tcp_timeout_s. A new one past the cap closes the oldest."""
        waiting = self._unopened.setdefault(str(writer.get_extra_info("peername")[0]), [])
        waiting.append(writer)
        if len(waiting) > MAX_UNOPENED_PER_PEER:
            self._counters["dropped_peer_limit"] += 1
            log.warning("gossip: more than %d unauthenticated streams from %s; closing the oldest",
                        MAX_UNOPENED_PER_PEER, writer.get_extra_info("peername")[0])
            waiting.pop(0).close()

    def _unopened_done(self, writer: asyncio.StreamWriter) -> None:
        host = str((writer.get_extra_info("peername") or ("?",))[0])
        waiting = self._unopened.get(host)
        if waiting and writer in waiting:
            waiting.remove(writer)
            if not waiting:
                del self._unopened[host]

    async def _serve_gossip(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        swim = self._require()
        loop = asyncio.get_running_loop()
        peer = writer.get_extra_info("peername")
        self._unopened_add(writer)
        messages = self._codec.open(await self._read_frame(reader), time.time())
        self._unopened_done(writer)
        pushes = [m for m in messages if isinstance(m, PushPull)]
        if pushes:
            writer.write(self._frame([swim.local_state()]))
            await writer.drain()
            for push in pushes:
                self._process(swim.merge_remote_state(push, loop.time()))
            self._counters["push_pull_served"] += 1
        rest = [m for m in messages if not isinstance(m, PushPull)]
        if rest:
            self._process(swim.receive((peer[0], peer[1]), rest, loop.time()))

    async def _connect(self, addr: Addr) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(addr[0], addr[1]),
                                                self.config.tcp_timeout_s)
        writer.write(bytes((CHANNEL_GOSSIP,)))
        return reader, writer

    async def _send_tcp(self, addr: Addr, messages: tuple[Any, ...]) -> None:
        try:
            _, writer = await self._connect(addr)
            writer.write(self._frame(messages))
            await asyncio.wait_for(writer.drain(), self.config.tcp_timeout_s)
            writer.close()
            self._counters["tcp_sent"] += 1
        except (OSError, asyncio.TimeoutError) as exc:
            self._counters["tcp_send_failed"] += 1
            log.debug("oversized gossip to %s:%d failed: %r", addr[0], addr[1], exc)

    async def _push_pull(self, addr: Addr, join: bool) -> bool:
        swim = self._require()
        loop = asyncio.get_running_loop()
        writer = None
        try:
            reader, writer = await self._connect(addr)
            writer.write(self._frame([swim.local_state(join)]))
            reply = self._codec.open(await asyncio.wait_for(self._read_frame(reader), self.config.tcp_timeout_s),
                                     time.time())
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, Dropped) as exc:
            self._counters["push_pull_failed"] += 1
            log.debug("push-pull with %s:%d failed: %r", addr[0], addr[1], exc)
            return False
        finally:
            if writer:
                writer.close()
        for msg in reply:
            if isinstance(msg, PushPull):
                self._process(swim.merge_remote_state(msg, loop.time()))
        self._counters["push_pull_done"] += 1
        return True
