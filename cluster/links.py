"""Broker-to-broker links: how a request for a service on another node gets there.

Node A keeps one long-lived outbound RSocket connection (a *link*) to every live node that
announces services; a request arriving at A for a service only node C serves is relayed
onto A's link to C exactly like onto a local provider's connection — stream id rewritten,
frames passed through — so REQUEST_N, CANCEL and errors stay end to end. On C the link is
an ordinary inbound connection whose SETUP carries a ``message/x.rsbroker.link.v0`` entry;
C sends its requests to local providers only, so a request makes one hop, never more.

Links are one-way: A's link to C carries A's requests; C's requests to A travel on C's own
link to A. That keeps stream-id parity simple (A is the client on its link).

The handshake (keyed cluster) proves the cluster key on *this* connection, both ways, in
three messages; every entry is JSON in a ``message/x.rsbroker.link.v0`` composite entry::

    A -> C  SETUP          {"v": 1, "node": A, "to": C, "nonce": Na}
    C -> A  METADATA_PUSH  {"node": C, "nonce": Nc, "proof": MAC("accept", Na, Nc, A, C)}
    A -> C  METADATA_PUSH  {"node": A, "proof": MAC("link", Na, Nc, A, C)}

``Na`` and ``Nc`` are 16 fresh random bytes per connection (base64); MAC is
:meth:`cluster.crypto.Keyring.mac` (HMAC-SHA256 under a key derived from the cluster key).
Why it holds:

* A recording is worthless: a replayed SETUP meets a fresh ``Nc``, and the recorded proof
  was computed over another one.
* C's answer cannot be reflected as A's proof (different labels), and a proof made for C
  says nothing at node D (both node ids are inside).
* A checks C's proof before it routes anything onto the link, so a process that took C's
  address without the key receives no client's request.
* Until C has checked A's proof the connection is a *pending* link: its principal
  (``broker.security.link_principal(proven=False)``) may send nothing — no request, no
  METADATA_PUSH — and it is closed after ``HANDSHAKE_TIMEOUT_S``.

A proven link may forward requests (the node it comes from checked them at its own edge)
and deliver routed METADATA_PUSH to local providers. It is never admin and can never
register services: a node's routes travel by gossip, sealed with the same key.

Without a cluster key (the loopback development mode), a link SETUP is accepted only over
TCP from a loopback peer, with no handshake; never over WebSocket, which a web page can
open. A node with authentication on refuses to start without a key (``broker.settings``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import json
import logging
import os
import ssl
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

from broker import metadata as md
from broker.auth import Principal
from broker.backoff import Backoff
from broker.frames import HEADER_LENGTH, ErrorCode, FrameError, keepalive_frame, metadata_push_frame, setup_frame
from broker.registry import NO_CAPACITY
from broker.security import is_loopback, is_proven_link, link_principal
from broker.transports import TcpSession
from cluster.crypto import Keyring

if TYPE_CHECKING:
    from broker.relay import Broker

log = logging.getLogger("rsbroker.links")

#: Version of the link entry's JSON. Append-only: a new handshake gets a new number.
LINK_VERSION = 1
#: Bytes of each side's handshake nonce: 128 bits never repeat by chance.
NONCE_BYTES = 16
#: Seconds a link's TCP (and TLS) connect may take before it is tried again.
CONNECT_TIMEOUT_S = 2.0
#: A link whose handshake has not finished by then is closed (seconds), on both sides.
HANDSHAKE_TIMEOUT_S = 5.0
#: MAC labels of the two proofs: distinct, so one side's proof never passes as the other's.
ACCEPT_LABEL = b"rsbroker link accept v1"
LINK_LABEL = b"rsbroker link v1"
#: Link keepalive: sent this often; the link is dropped after LINK_LIFETIME_MS of silence.
LINK_KEEPALIVE_MS = 500
LINK_LIFETIME_MS = 5_000
#: How often a link to a draining node is checked for its last stream (seconds).
RETIRE_POLL_S = 0.1
#: Reconnect backoff bounds (seconds), with full jitter.
BACKOFF_MIN_S = 0.05
BACKOFF_MAX_S = 2.0


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise ValueError(f"{what} must be base64 text")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{what} is not base64") from None


def _entry(metadata: bytes, code: ErrorCode) -> dict[str, Any] | None:
    """The JSON object of the link entry in composite ``metadata``, or None when it has none."""
    raw = md.find_entry(metadata, md.LINK_MIME)
    if raw is None:
        return None
    try:
        body = json.loads(raw)
    except ValueError:
        raise FrameError("broker link entry is not JSON", code) from None
    if not isinstance(body, dict):
        raise FrameError("broker link entry is not a JSON object", code)
    return body


@dataclass
class _Challenge:
    """What the accepting side remembers of a link between its SETUP and its proof."""

    node: str
    nonce_a: bytes
    nonce_c: bytes
    timer: asyncio.TimerHandle | None = None


class LinkSession(TcpSession):
    """Our outbound connection to another node; we are the client on it."""

    __slots__ = ("links", "node", "nonce", "handshake")

    plain_name = "link-out"
    peer_parity = 0  # the other node only answers our (odd) streams
    outbound = True

    def __init__(self, broker: "Broker", links: "Links", node: str) -> None:
        super().__init__(broker)
        #: its round trip is what p2c weighs its node's providers by (broker.latency)
        self.measure_rtt = True
        self.links = links
        self.node = node
        self.next_local_id = 1  # we are the client on this connection: odd stream ids
        self.nonce = os.urandom(NONCE_BYTES)
        #: resolves True once the link is up (handshake done), False if it closed before
        self.handshake: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    @property
    def provider_label(self) -> str:
        return f"the link to node '{self.node}'"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.peer = transport.get_extra_info("peername")
        high = self.broker.settings.max_pending_bytes
        transport.set_write_buffer_limits(high=high, low=high // 4)  # type: ignore[attr-defined]
        self.broker.add_session(self)
        self.principal = link_principal(self.node)
        self.keepalive_ms = LINK_KEEPALIVE_MS
        self.max_lifetime_ms = LINK_LIFETIME_MS
        self._transition("setup_ok")
        body = {"v": LINK_VERSION, "node": self.links.node_id, "to": self.node, "nonce": _b64(self.nonce)}
        entry = md.composite_entry(md.LINK_MIME, json.dumps(body).encode())
        self.send_frame(setup_frame(keepalive_ms=LINK_KEEPALIVE_MS, max_lifetime_ms=LINK_LIFETIME_MS, metadata=entry))
        self.flush()
        if self.links.keyring is None:
            self._up()  # keyless development mode: no challenge comes

    def _up(self) -> None:
        if not self.handshake.done():
            self.handshake.set_result(True)
        self.links.link_up(self)

    def _open_stream(self, buf: Any, off: int, end: int, sid: int, ftype: int, type_flags: int) -> None:
        self.fail(ErrorCode.CONNECTION_ERROR, "requests are not accepted on an outbound broker link")

    def _on_metadata_push(self, buf: Any, off: int, end: int, type_flags: int) -> None:
        """Only the accepting node's challenge comes this way; anything else is ignored."""
        keyring = self.links.keyring
        try:
            body = _entry(bytes(buf[off + HEADER_LENGTH : end]), ErrorCode.CONNECTION_ERROR)
            if body is None or keyring is None or self.handshake.done():
                self.broker.stats["ignored_frames"] += 1
                return
            if body.get("node") != self.node:
                raise ValueError(f"the challenge names node {body.get('node')!r}, not '{self.node}'")
            nonce_c = _unb64(body.get("nonce"), "nonce")
            proof = _unb64(body.get("proof"), "proof")
        except (FrameError, ValueError) as exc:
            self._refused(f"bad challenge from node '{self.node}': {exc}")
            return
        ids = (self.links.node_id.encode(), self.node.encode())
        if len(nonce_c) != NONCE_BYTES or not keyring.verify_mac(proof, ACCEPT_LABEL, self.nonce, nonce_c, *ids):
            self._refused(f"node '{self.node}' did not prove the cluster key (another cluster, or an impostor at its address)")
            return
        answer = {"node": self.links.node_id, "proof": _b64(keyring.mac(LINK_LABEL, self.nonce, nonce_c, *ids))}
        self.send_frame(metadata_push_frame(md.composite_entry(md.LINK_MIME, json.dumps(answer).encode())))
        self.flush()
        self._up()

    def _refused(self, reason: str) -> None:
        self.links.stats["link_auth_failures"] += 1
        self.fail(ErrorCode.CONNECTION_ERROR, f"broker link refused: {reason}")

    def connection_closed(self) -> None:
        super().connection_closed()
        if not self.handshake.done():
            self.handshake.set_result(False)
        self.links.link_down(self)


@dataclass(eq=False, slots=True)
class RemoteProvider:
    """A provider instance on another node, as the registry sees it."""

    links: "Links"
    node: str
    instance: str
    weight: int
    #: what its node gossips: open streams to it there, or NO_CAPACITY (lease spent, ejected)
    load: int = 0
    #: its registration tags (canary routing)
    tags: Mapping[str, str] = field(default_factory=dict)
    #: instances of this service on its node: this node's streams on the link, shared
    #: among them, are its live load figure
    siblings: int = 1
    #: never counted here: its own node judges its answers (broker.outlier)
    failures: int = 0
    is_remote = True
    #: never sampled itself: the link to its node is (LinkSession.measure_rtt)
    measure_rtt = False
    lease_enabled = False
    lease_remaining = 0
    lease_expires = 0.0

    @property
    def available(self) -> bool:
        """Reachable and taking requests: its link is up, gossip does not suspect its node,
        and its node does not say it has no capacity."""
        return self.node in self.links.up and self.node not in self.links.suspect and self.load < NO_CAPACITY

    @property
    def balance_load(self) -> int:
        """The gossiped figure (its node's view, up to a second old) or this node's own open
        streams on the link to its node, per instance there, whichever is higher: the live
        figure covers what we sent since the last gossip, the gossiped one everyone else's."""
        link = self.links.up.get(self.node)
        live = link.outstanding // self.siblings if link is not None else 0
        return self.load if self.load > live else live

    @property
    def target(self) -> LinkSession | None:
        return self.links.up.get(self.node)

    @property
    def rtt(self) -> float:
        """This node's peak-EWMA round trip through the link to its node (broker.latency):
        its node picks which of its providers answers, so that round trip is what a pick here
        weighs; 0.0 (not measured) while the link is down."""
        link = self.links.up.get(self.node)
        return link.rtt if link is not None else 0.0

    @property
    def rtt_at(self) -> float:
        link = self.links.up.get(self.node)
        return link.rtt_at if link is not None else 0.0

    @property
    def outstanding(self) -> int:
        link = self.links.up.get(self.node)
        return link.outstanding if link is not None else 0


class Links:
    """The node's outbound links and the remote providers reached through them; the relay
    sees it as a :class:`broker.peers.LinkAuthority` (inbound links) and its providers as
    :class:`broker.registry.Provider` entries."""

    def __init__(
        self,
        broker: "Broker",
        node_id: str,
        keyring: Keyring | None,
        client_ssl: ssl.SSLContext | None = None,
    ) -> None:
        self.broker = broker
        self.node_id = node_id
        self.keyring = keyring
        self.client_ssl = client_ssl
        #: links that are connected, by node
        self.up: dict[str, LinkSession] = {}
        #: nodes gossip currently suspects: their providers are skipped until refuted or dead
        self.suspect: set[str] = set()
        #: nodes we want a link to, with their TCP address
        self._wanted: dict[str, tuple[str, int]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._keepalive: asyncio.Task[None] | None = None
        #: inbound links between SETUP and proof (a closed session drops out by itself)
        self._challenges: weakref.WeakKeyDictionary[Any, _Challenge] = weakref.WeakKeyDictionary()
        #: links to nodes that left, kept open while their streams finish (``want(drain=True)``)
        self._retiring: set[LinkSession] = set()
        self._retire_tasks: set[asyncio.Task[None]] = set()
        self.stats = {"links_opened": 0, "links_lost": 0, "link_auth_failures": 0}
        #: per peer, for metrics: times a link came up, times it was lost, frames of links now closed
        self.opened: collections.Counter[str] = collections.Counter()
        self.lost: collections.Counter[str] = collections.Counter()
        self.closed_frames: collections.Counter[tuple[str, str]] = collections.Counter()
        broker.links = self
        broker.setup_listeners.append(self._challenge)

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self._keepalive = asyncio.get_running_loop().create_task(self._keepalive_loop())

    async def stop(self) -> None:
        # Forget the wanted nodes first: a _maintain loop that survived its cancel must still
        # end, or this await never returns (Python 3.11's asyncio.wait_for turned a cancel that
        # landed as its connect completed into the connect's result, gh-86296; the connect is
        # now under asyncio.timeout, which does not, and this stays as the second guard).
        self._wanted.clear()
        tasks = [*self._tasks.values(), *self._retire_tasks, *([self._keepalive] if self._keepalive else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        for link in list(self.up.values()):
            link.close()

    def background_tasks(self) -> dict[str, tuple[asyncio.Task[None], bool]]:
        """Name → (task, runs until stopped): the keepalive loop and each node's reconnect
        loop (which ends by itself once the node is no longer wanted), for supervision."""
        tasks = {f"link to {node}": (task, False) for node, task in self._tasks.items()}
        if self._keepalive is not None:
            tasks["link keepalive"] = (self._keepalive, True)
        return tasks

    # -- membership input -------------------------------------------------------------------

    def want(self, node: str, address: tuple[str, int] | None, *, drain: bool = False) -> None:
        """Keep a link to ``node`` at ``address``; None drops it (the node died or left).

        ``drain`` (the node left gracefully and is draining): no new request goes to it,
        but a link with streams in flight stays open until they end, the node closes it,
        or our own ``drain_timeout_s`` passes — cutting it would break the drain's promise
        to the streams crossing it.
        """
        if node == self.node_id:
            return
        if address is None:
            self._wanted.pop(node, None)
            task = self._tasks.pop(node, None)
            if task is not None:
                task.cancel()
            link = self.up.pop(node, None)
            if link is not None:
                link.close_reason = f"node {node} left the cluster or was declared dead"
                if drain and link.streams:
                    log.info("node %s is draining: its link stays for %d streams in flight", node, len(link.streams))
                    self._retire(link)
                else:
                    log.info("dropping link to node %s: it is no longer a live member", node)
                    link.close()
            return
        previous = self._wanted.get(node)
        self._wanted[node] = address
        if previous != address and node in self.up:
            self.up[node].close()  # address changed: reconnect to the new one
        if node not in self._tasks or self._tasks[node].done():
            self._tasks[node] = asyncio.get_running_loop().create_task(self._maintain(node))

    def peer_states(self) -> dict[str, bool]:
        """Whether the link to each node we want one to is up."""
        return {node: node in self.up for node in sorted(self._wanted)}

    # -- link upkeep ------------------------------------------------------------------------

    async def _maintain(self, node: str) -> None:
        """Connect to ``node`` and reconnect with jittered backoff while we still want it."""
        loop = asyncio.get_running_loop()
        backoff = Backoff(BACKOFF_MIN_S, BACKOFF_MAX_S)
        while node in self._wanted:
            if node in self.up:
                await asyncio.sleep(0.1)
                backoff.reset()
                continue
            host, port = self._wanted[node]
            link: LinkSession | None = None
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for turns a cancellation
                # that lands as the connect fails into that failure, and this loop would go on
                async with asyncio.timeout(CONNECT_TIMEOUT_S):
                    _, link = await loop.create_connection(
                        lambda: LinkSession(self.broker, self, node), host, port, ssl=self.client_ssl
                    )
                async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
                    assert link is not None
                    if await link.handshake:
                        continue
            except (OSError, asyncio.TimeoutError, ssl.SSLError) as exc:
                log.debug("link to node %s at %s:%d failed: %s", node, host, port, exc)
            if link is not None and not link.handshake.done():
                link.close_reason = f"no handshake answer within {HANDSHAKE_TIMEOUT_S:g} s"
                log.warning("link to node %s at %s:%d: %s (does it run without a cluster key?)",
                            node, host, port, link.close_reason)
                link.close()
            await backoff.wait()

    def _retire(self, link: LinkSession) -> None:
        """Close ``link`` once its streams ended (or at our drain timeout); keepalives go on."""
        self._retiring.add(link)

        async def close_when_idle() -> None:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.broker.settings.drain_timeout_s
            try:
                while link.streams and not link.closing and loop.time() < deadline:
                    await asyncio.sleep(RETIRE_POLL_S)
                if link.streams and not link.closing:
                    log.warning(
                        "link to draining node %s: %d streams still open at the drain timeout; closing it",
                        link.node,
                        len(link.streams),
                    )
            finally:
                self._retiring.discard(link)
                link.close()

        task = asyncio.get_running_loop().create_task(close_when_idle())
        self._retire_tasks.add(task)
        task.add_done_callback(self._retire_tasks.discard)

    def link_up(self, link: LinkSession) -> None:
        if link.node not in self._wanted:
            link.close()
            return
        old = self.up.get(link.node)
        if old is not None and old is not link:
            old.close()
        self.up[link.node] = link
        self.stats["links_opened"] += 1
        self.opened[link.node] += 1
        log.info("link to node %s is up (%s)", link.node, link.peer_text)

    def link_down(self, link: LinkSession) -> None:
        self._retiring.discard(link)
        if self.up.get(link.node) is link:
            del self.up[link.node]
            self.stats["links_lost"] += 1
            self.lost[link.node] += 1
            self.closed_frames[(link.node, "in")] += link.frames_in
            self.closed_frames[(link.node, "out")] += link.frames_out
            log.info("link to node %s is down: %s", link.node, link.close_reason or "closed")

    async def _keepalive_loop(self) -> None:
        while True:
            await asyncio.sleep(LINK_KEEPALIVE_MS / 1000.0)
            for link in [*self.up.values(), *self._retiring]:
                link.send_frame(keepalive_frame(True))

    # -- the accepting side of the handshake -------------------------------------------------

    def authenticate(self, session: Any, entry: bytes) -> Principal:
        """Check an inbound link's SETUP entry; with a key, the principal is pending until the proof."""
        if session.transport_name in ("ws", "wss"):
            raise self._refuse(session, "broker links use the TCP listener, never WebSocket")
        try:
            body = json.loads(entry)
            node = body["node"]
            if not isinstance(node, str) or not node or len(node) > 128:
                raise ValueError("bad node")
            to = body.get("to", self.node_id)
        except (ValueError, KeyError, TypeError, AttributeError):
            raise self._refuse(session, "malformed broker link entry") from None
        if node == self.node_id or to != self.node_id:
            raise self._refuse(session, f"a link from '{node}' to '{to}' does not belong on node '{self.node_id}'")
        if self.keyring is None:
            if not is_loopback(session.peer):
                raise self._refuse(session, "broker links from other hosts need a cluster key (--cluster-key)")
            return link_principal(node)
        try:
            if body.get("v") != LINK_VERSION:
                raise ValueError(f"handshake version {body.get('v')!r} is not {LINK_VERSION} (a node of another release?)")
            nonce_a = _unb64(body.get("nonce"), "nonce")
            if len(nonce_a) != NONCE_BYTES:
                raise ValueError(f"nonce must be {NONCE_BYTES} bytes")
        except ValueError as exc:
            raise self._refuse(session, f"link entry of node '{node}': {exc}") from None
        self._challenges[session] = _Challenge(node, nonce_a, os.urandom(NONCE_BYTES))
        return link_principal(node, proven=False)

    def _challenge(self, session: Any) -> None:
        """Setup listener: send a pending link its challenge, and bound how long it may take."""
        pending = self._challenges.get(session)
        if pending is None or self.keyring is None:
            return
        ids = (pending.node.encode(), self.node_id.encode())
        proof = self.keyring.mac(ACCEPT_LABEL, pending.nonce_a, pending.nonce_c, *ids)
        body = {"node": self.node_id, "nonce": _b64(pending.nonce_c), "proof": _b64(proof)}
        session.send_frame(metadata_push_frame(md.composite_entry(md.LINK_MIME, json.dumps(body).encode())))
        pending.timer = asyncio.get_running_loop().call_later(HANDSHAKE_TIMEOUT_S, self._expire, weakref.ref(session))

    def _expire(self, ref: "weakref.ref[Any]") -> None:
        session = ref()
        if session is not None and self._challenges.pop(session, None) is not None:
            self._fail(session, f"no proof within {HANDSHAKE_TIMEOUT_S:g} s")

    def on_link_push(self, session: Any, metadata: bytes, frame: bytes) -> None:
        """A METADATA_PUSH on an inbound link: the proof while pending, else a routed push."""
        try:
            body = _entry(metadata, ErrorCode.CONNECTION_ERROR)
            if md.find_entry(metadata, md.REGISTER_MIME) is not None:
                raise FrameError("a broker link cannot register services (routes travel by gossip)", ErrorCode.CONNECTION_ERROR)
        except FrameError as exc:
            session.fail(exc.code, str(exc))
            return
        pending = self._challenges.get(session)
        if pending is not None:
            self._check_proof(session, pending, body)
        elif body is not None or not is_proven_link(session.principal):
            self._fail(session, "unexpected link handshake message")
        else:
            self._deliver_push(session, metadata, frame)

    def _check_proof(self, session: Any, pending: _Challenge, body: dict[str, Any] | None) -> None:
        assert self.keyring is not None
        del self._challenges[session]
        if pending.timer is not None:
            pending.timer.cancel()
        try:
            if body is None or body.get("node") != pending.node:
                raise ValueError("the first METADATA_PUSH of a link must be its proof")
            proof = _unb64(body.get("proof"), "proof")
        except ValueError as exc:
            self._fail(session, str(exc))
            return
        ids = (pending.node.encode(), self.node_id.encode())
        if not self.keyring.verify_mac(proof, LINK_LABEL, pending.nonce_a, pending.nonce_c, *ids):
            self._fail(session, f"the proof of node '{pending.node}' does not verify with our cluster key "
                                "(another cluster's key, or a recorded handshake replayed)")
            return
        session.principal = link_principal(pending.node)
        log.info("broker link from node %s (%s) proved the cluster key", pending.node, session.peer_text)

    def _deliver_push(self, session: Any, metadata: bytes, frame: bytes) -> None:
        """A routed METADATA_PUSH from another node: to this node's own providers, one hop only."""
        route = md.route_of(metadata, md.COMPOSITE_MIME)
        if route is None:
            self.broker.stats["ignored_frames"] += 1
            return
        self.broker.push_metadata(session, route, frame)

    def _fail(self, session: Any, reason: str) -> None:
        self.stats["link_auth_failures"] += 1
        log.warning("refused broker link from %s: %s", session.peer_text, reason)
        session.fail(ErrorCode.REJECTED_SETUP, f"broker link refused: {reason}")

    def _refuse(self, session: Any, reason: str) -> FrameError:
        self.stats["link_auth_failures"] += 1
        log.warning("refused broker link from %s: %s", getattr(session, "peer_text", "?"), reason)
        return FrameError(f"broker link refused: {reason}", ErrorCode.REJECTED_SETUP)
