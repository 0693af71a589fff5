"""How Raft messages travel: an interface, an in-memory network for tests, and TCP.

TCP framing (the cluster-port contract): a connection opens with the channel byte 0x02
(written by the connecting side; when the gossip listener owns the port it consumes that
byte and hands the stream to ``TcpTransport.handle_connection``). After it, every message
is ``4-byte big-endian length | Keyring.seal(msgpack(message), aad=b"raft")``, or the bare
msgpack bytes when no cluster key is configured.

Each peer gets one outbound connection, made on demand, fed from a bounded queue by one
writer task; inbound connections only read. Sending never blocks the Raft loop: when a
queue is full or a peer is unreachable, messages are dropped - Raft retransmits.

Inbound streams are untrusted until a frame opens with the cluster key, so what one peer
can make us hold is bounded: a frame may declare at most ``max_message`` bytes
(``--cluster-max-message-bytes``), its body must arrive within ``read_timeout``
(``--cluster-read-timeout-s``) once its header came, and one peer address holds at most
``MAX_STREAMS_PER_PEER`` streams that have not yet delivered a frame that opens (a new one
closes the oldest; nodes sharing a host are unaffected once their first frame is in). A frame whose seal
does not open closes the stream before anything is decoded; a sealed frame that does not
decode (it came from a member: e.g. a message type of a newer release) is skipped and the
stream goes on, while without a key an undecodable frame closes the stream. Every
drop is counted by reason in :attr:`TcpTransport.stats` (``dropped_seal``,
``dropped_decode``, ``dropped_oversize``, ``dropped_timeout``, ``dropped_peer_limit``).
"""

from __future__ import annotations

import abc
import asyncio
import collections
import contextlib
import logging
import struct
from collections.abc import Callable

from broker.backoff import Backoff

from ..crypto import DecryptError, Keyring
from .messages import Message, WireError, decode_message, encode_message

__all__ = ["CHANNEL_RAFT", "InMemoryNetwork", "InMemoryTransport", "Resolver", "TcpTransport", "Transport"]

log = logging.getLogger(__name__)

#: Channel byte of Raft streams on the multiplexed cluster port (0x01 is SWIM).
CHANNEL_RAFT = 0x02
AAD = b"raft"
#: Default bound on one frame (``--cluster-max-message-bytes``): a snapshot of the config store fits easily.
MAX_FRAME = 16 << 20
#: Default time a frame's body may take to arrive once its header came (``--cluster-read-timeout-s``).
READ_TIMEOUT_S = 10.0
#: Not-yet-authenticated inbound streams one peer address may hold; a new one closes the
#: oldest (a peer that reconnects after a partition must not be locked out by its own
#: half-dead streams). Streams whose first frame opened no longer count: several nodes may
#: share one host (a local cluster, a test).
MAX_STREAMS_PER_PEER = 4
#: Wait bounds between attempts to reach a peer that did not answer (seconds, full jitter).
RECONNECT_MIN_S = 0.02
RECONNECT_MAX_S = 1.0
_LEN = struct.Struct(">I")

#: node id -> (host, port), or None while the address is unknown.
Resolver = Callable[[str], "tuple[str, int] | None"]
Deliver = Callable[[Message], None]


class Transport(abc.ABC):
    """Carries messages between nodes, best effort, addressed by ``msg.to``."""

    @abc.abstractmethod
    async def start(self, deliver: Deliver) -> None:
        """Begin delivering inbound messages to ``deliver`` (called on the event loop)."""

    @abc.abstractmethod
    def send(self, msg: Message) -> None:
        """Queue ``msg`` for ``msg.to``; never blocks, may drop."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop sending and receiving; release sockets."""


class InMemoryNetwork:
    """A switchboard for InMemoryTransports in one event loop, with partitions for tests.

    Messages go through the real msgpack codec, so tests exercise the wire form.
    """

    def __init__(self) -> None:
        self._nodes: dict[str, Deliver] = {}
        self.blocked: set[tuple[str, str]] = set()

    def isolate(self, node: str) -> None:
        """Cut every link to and from ``node``."""
        for other in self._nodes:
            if other != node:
                self.blocked |= {(node, other), (other, node)}

    def heal(self) -> None:
        self.blocked.clear()

    def _attach(self, node: str, deliver: Deliver) -> None:
        self._nodes[node] = deliver

    def _detach(self, node: str) -> None:
        self._nodes.pop(node, None)

    def _route(self, msg: Message) -> None:
        deliver = self._nodes.get(msg.to)
        if deliver is None or (msg.frm, msg.to) in self.blocked:
            return
        copy = decode_message(encode_message(msg))
        asyncio.get_running_loop().call_soon(deliver, copy)


class InMemoryTransport(Transport):
    def __init__(self, network: InMemoryNetwork, node_id: str) -> None:
        self.network = network
        self.node_id = node_id

    async def start(self, deliver: Deliver) -> None:
        self.network._attach(self.node_id, deliver)

    def send(self, msg: Message) -> None:
        self.network._route(msg)

    async def close(self) -> None:
        self.network._detach(self.node_id)


class _Peer:
    """The outbound side towards one node: a queue and the task that writes it."""

    def __init__(self, transport: TcpTransport, node_id: str) -> None:
        self.transport = transport
        self.node_id = node_id
        self.queue: asyncio.Queue[Message] = asyncio.Queue(maxsize=transport.queue_size)
        self.task = asyncio.get_running_loop().create_task(self._run(), name=f"raft-send-{node_id}")

    async def _run(self) -> None:
        backoff = Backoff(RECONNECT_MIN_S, RECONNECT_MAX_S)
        while True:
            first = await self.queue.get()
            try:
                writer = await self._connect()
            except (TimeoutError, OSError) as exc:
                log.debug("raft: cannot reach %s: %s", self.node_id, exc)
                self._drain()  # stale by the time we reconnect; Raft will resend what matters
                await backoff.wait()
                continue
            backoff.reset()
            try:
                batch = [first]
                while True:
                    if writer.is_closing():  # the peer went away; asyncio would only log writes
                        raise ConnectionResetError("connection closed by peer")
                    for msg in batch:
                        writer.write(self.transport._frame(msg))
                    await writer.drain()
                    batch = [await self.queue.get()]
                    while not self.queue.empty() and len(batch) < 256:
                        batch.append(self.queue.get_nowait())
            except (OSError, ConnectionError) as exc:
                log.debug("raft: link to %s broke: %s", self.node_id, exc)
            finally:
                writer.close()

    async def _connect(self) -> asyncio.StreamWriter:
        addr = self.transport.resolver(self.node_id)
        if addr is None:
            raise OSError(f"no address known for {self.node_id}")
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for turns a cancellation that lands
        # as the connect fails into that failure, and this loop would outlive close()
        async with asyncio.timeout(self.transport.connect_timeout):
            _, writer = await asyncio.open_connection(*addr)
        writer.write(bytes((CHANNEL_RAFT,)))
        return writer

    def _drain(self) -> None:
        while not self.queue.empty():
            self.queue.get_nowait()


class TcpTransport(Transport):
    """Raft over TCP, sealed with the cluster keyring when one is configured."""

    def __init__(
        self,
        node_id: str,
        resolver: Resolver,
        keyring: Keyring | None = None,
        *,
        queue_size: int = 4096,
        connect_timeout: float = 1.0,
        max_message: int = MAX_FRAME,
        read_timeout: float = READ_TIMEOUT_S,
    ) -> None:
        self.node_id = node_id
        self.resolver = resolver
        self.keyring = keyring
        self.queue_size = queue_size
        self.connect_timeout = connect_timeout
        self.max_message = max_message
        self.read_timeout = read_timeout
        self._deliver: Deliver | None = None
        self._peers: dict[str, _Peer] = {}
        self._server: asyncio.base_events.Server | None = None
        self._inbound: dict[asyncio.StreamWriter, asyncio.Task[None]] = {}
        #: inbound streams per peer host that have not delivered a frame yet, oldest first
        self._unproven: dict[str, list[asyncio.StreamWriter]] = collections.defaultdict(list)
        #: inbound frames and drops by reason; nothing is dropped uncounted
        self.stats: collections.Counter[str] = collections.Counter()

    async def start(self, deliver: Deliver) -> None:
        self._deliver = deliver

    def _frame(self, msg: Message) -> bytes:
        body = encode_message(msg)
        if self.keyring is not None:
            body = self.keyring.seal(body, aad=AAD)
        return _LEN.pack(len(body)) + body

    def send(self, msg: Message) -> None:
        peer = self._peers.get(msg.to)
        if peer is None:
            peer = self._peers[msg.to] = _Peer(self, msg.to)
        try:
            peer.queue.put_nowait(msg)
        except asyncio.QueueFull:
            log.debug("raft: queue to %s full, dropping %s", msg.to, msg.type.name)

    def forget(self, node_id: str) -> None:
        """Drop the connection to ``node_id``; the next message reconnects to its current address
        (its host moved: the old connection would hang until TCP gives up)."""
        peer = self._peers.pop(node_id, None)
        if peer is not None:
            peer.task.cancel()

    async def handle_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one inbound Raft stream whose channel byte was already read."""
        task = asyncio.current_task()
        if task is not None:
            self._inbound[writer] = task
        peer = writer.get_extra_info("peername")
        host = str(peer[0]) if peer else "?"
        unproven = self._unproven[host]
        unproven.append(writer)
        if len(unproven) > MAX_STREAMS_PER_PEER:
            self._drop("peer_limit", peer, f"more than {MAX_STREAMS_PER_PEER} unauthenticated streams from one "
                                           "address; closing the oldest")
            unproven.pop(0).close()
        try:
            while await self._serve_frame(reader, peer):
                if writer in unproven:
                    unproven.remove(writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            self._inbound.pop(writer, None)
            if writer in unproven:
                unproven.remove(writer)
            if not unproven:
                self._unproven.pop(host, None)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve_frame(self, reader: asyncio.StreamReader, peer: object) -> bool:
        """Read, open and deliver one frame; False when the stream must close."""
        header = await reader.readexactly(_LEN.size)
        (length,) = _LEN.unpack(header)
        if length > self.max_message:
            self._drop("oversize", peer, f"RaftFrameTooLarge: {length}-byte frame over the {self.max_message}-byte "
                                         "limit (--cluster-max-message-bytes)")
            return False
        try:
            async with asyncio.timeout(self.read_timeout):
                body = await reader.readexactly(length)
        except TimeoutError:
            self._drop("timeout", peer, f"RaftReadTimeout: a {length}-byte frame did not arrive within "
                                        f"{self.read_timeout:g} s (--cluster-read-timeout-s)")
            return False
        if self.keyring is not None:
            try:
                body = self.keyring.open(body, aad=AAD)
            except DecryptError as exc:
                self._drop("seal", peer, f"RaftBadSeal: {exc}")
                return False
        try:
            msg = decode_message(body)
        except WireError as exc:
            sealed = self.keyring is not None
            self._drop("decode", peer, f"RaftUndecodable: {exc}; " + ("skipping it" if sealed else "closing"))
            return sealed
        self.stats["messages_in"] += 1
        if self._deliver is not None:
            self._deliver(msg)
        return True

    def _drop(self, reason: str, peer: object, detail: str) -> None:
        self.stats[f"dropped_{reason}"] += 1
        log.warning("raft: dropped from %s: %s", peer, detail)

    async def listen(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        """A standalone listener (when Raft does not share the gossip port); returns the bound address."""
        self._server = await asyncio.start_server(self._accept, host, port)
        sock = self._server.sockets[0].getsockname()
        return sock[0], sock[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            tag = await reader.readexactly(1)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        if tag[0] != CHANNEL_RAFT:
            log.warning("raft: unexpected channel byte %#x; closing", tag[0])
            writer.close()
            return
        await self.handle_connection(reader, writer)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        senders = [p.task for p in self._peers.values()]
        for t in senders:
            t.cancel()
        # Inbound readers end by themselves once their socket is closed (cancelling the
        # tasks asyncio's server created makes it log spurious errors).
        readers = list(self._inbound.values())
        for w in list(self._inbound):
            w.close()
        await asyncio.gather(*senders, *readers, return_exceptions=True)
        self._peers.clear()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
