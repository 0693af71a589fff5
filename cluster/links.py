"""Broker-to-broker links: how a request for a service on another node gets there.

Node A keeps one long-lived outbound RSocket connection (a *link*) to every live node that
announces services; a request arriving at A for a service only node C serves is relayed
onto A's link to C exactly like onto a local provider's connection — stream id rewritten,
frames passed through — so REQUEST_N, CANCEL and errors stay end to end. On C the link is
an ordinary inbound connection whose SETUP carries a ``message/x.rsbroker.link.v0`` entry;
C sends its requests to local providers only, so a request makes one hop, never more.

A link proves it comes from a cluster member with the cluster key: its SETUP entry holds
``{"node": id, "ts": unix seconds, "proof": seal("link|<node>|<ts>")}``, sealed with the
keyring (AES-GCM, aad ``b"link"``) and accepted within ``PROOF_WINDOW_S``. Without a
cluster key, links are accepted only from loopback peers (a single-machine cluster).

Links are one-way: A's link to C carries A's requests; C's requests to A travel on C's own
link to A. That keeps stream-id parity simple (A is the client on its link).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
import ssl
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable

from broker import metadata as md
from broker.auth import ADMIN_ROLE, Principal
from broker.frames import ErrorCode, FrameError, keepalive_frame, setup_frame
from broker.security import is_loopback
from broker.transports import TcpSession
from cluster.crypto import DecryptError, Keyring

if TYPE_CHECKING:
    from broker.relay import Broker

log = logging.getLogger("rsbroker.links")

#: How far a link proof's timestamp may be from our clock (seconds): covers clock skew.
PROOF_WINDOW_S = 120.0
#: Link keepalive: sent this often; the link is dropped after LINK_LIFETIME_MS of silence.
LINK_KEEPALIVE_MS = 500
LINK_LIFETIME_MS = 5_000
#: Reconnect backoff bounds (seconds), with full jitter.
BACKOFF_MIN_S = 0.05
BACKOFF_MAX_S = 2.0


def link_principal(node: str) -> Principal:
    """The principal of another node: it already enforced access rules at its own edge."""
    return Principal(name=f"node:{node}", roles=frozenset({ADMIN_ROLE}), source="link")


class LinkSession(TcpSession):
    """Our outbound connection to another node; we are the client on it."""

    transport_name = "link-out"
    peer_parity = 0  # the other node only answers our (odd) streams
    outbound = True

    def __init__(self, broker: "Broker", links: "Links", node: str) -> None:
        super().__init__(broker)
        self.links = links
        self.node = node
        self.next_local_id = 1  # we are the client on this connection: odd stream ids

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
        entry = md.composite_entry(md.LINK_MIME, self.links.proof())
        self.send_frame(setup_frame(keepalive_ms=LINK_KEEPALIVE_MS, max_lifetime_ms=LINK_LIFETIME_MS, metadata=entry))
        self.flush()
        self.links.link_up(self)

    def _open_stream(self, buf: Any, off: int, end: int, sid: int, ftype: int, type_flags: int) -> None:
        self.fail(ErrorCode.CONNECTION_ERROR, "requests are not accepted on an outbound broker link")

    def connection_closed(self) -> None:
        super().connection_closed()
        self.links.link_down(self)


@dataclass(eq=False)
class RemoteProvider:
    """A provider instance on another node, as the registry sees it."""

    links: "Links"
    node: str
    instance: str
    weight: int
    load: int = 0
    is_remote = True
    lease_enabled = False
    lease_remaining = 0
    lease_expires = 0.0

    @property
    def available(self) -> bool:
        """Reachable: its link is up and gossip does not suspect its node."""
        return self.node in self.links.up and self.node not in self.links.suspect

    @property
    def target(self) -> LinkSession | None:
        return self.links.up.get(self.node)

    @property
    def outstanding(self) -> int:
        link = self.links.up.get(self.node)
        return link.outstanding if link is not None else 0


class Links:
    """The node's outbound links and the remote providers reached through them."""

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
        self._remote: dict[tuple[str, str, str], RemoteProvider] = {}
        self._keepalive: asyncio.Task[None] | None = None
        self.stats = {"links_opened": 0, "links_lost": 0, "link_auth_failures": 0}
        broker.links = self

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self._keepalive = asyncio.get_running_loop().create_task(self._keepalive_loop())

    async def stop(self) -> None:
        # Forget the wanted nodes first: on Python 3.11, asyncio.wait_for swallows a
        # cancellation that arrives as its connect completes (gh-86296), and a _maintain
        # loop that survived its cancel must still end, or this await never returns.
        self._wanted.clear()
        tasks = list(self._tasks.values()) + ([self._keepalive] if self._keepalive else [])
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

    def want(self, node: str, address: tuple[str, int] | None) -> None:
        """Keep a link to ``node`` at ``address``; None drops it (the node died or left)."""
        if node == self.node_id:
            return
        if address is None:
            self._wanted.pop(node, None)
            task = self._tasks.pop(node, None)
            if task is not None:
                task.cancel()
            link = self.up.pop(node, None)
            if link is not None:
                log.info("dropping link to node %s: it is no longer a live member", node)
                link.close_reason = f"node {node} left the cluster or was declared dead"
                link.close()
            return
        previous = self._wanted.get(node)
        self._wanted[node] = address
        if previous != address and node in self.up:
            self.up[node].close()  # address changed: reconnect to the new one
        if node not in self._tasks or self._tasks[node].done():
            self._tasks[node] = asyncio.get_running_loop().create_task(self._maintain(node))

    def set_remote_services(self, node: str, entries: Iterable[Any]) -> None:
        """Make the registry hold exactly ``entries`` (service, instance, weight…) for ``node``."""
        registry = self.broker.registry
        fresh: dict[tuple[str, str, str], Any] = {(node, e.service, e.instance): e for e in entries}
        for key in [k for k in self._remote if k[0] == node and k not in fresh]:
            registry.remove(key[1], self._remote.pop(key))
        for key, entry in fresh.items():
            provider = self._remote.get(key)
            if provider is None:
                provider = self._remote[key] = RemoteProvider(self, node, entry.instance, entry.weight, entry.load)
                registry.add(entry.service, provider)
            else:
                provider.weight, provider.load = entry.weight, entry.load

    def remote_view(self) -> list[dict[str, Any]]:
        return [
            {"node": p.node, "service": key[1], "instance": p.instance, "weight": p.weight, "link_up": p.available}
            for key, p in sorted(self._remote.items())
        ]

    # -- link upkeep ------------------------------------------------------------------------

    async def _maintain(self, node: str) -> None:
        """Connect to ``node`` and reconnect with jittered backoff while we still want it."""
        loop = asyncio.get_running_loop()
        backoff = BACKOFF_MIN_S
        while node in self._wanted:
            if node in self.up:
                await asyncio.sleep(0.1)
                backoff = BACKOFF_MIN_S
                continue
            host, port = self._wanted[node]
            try:
                await asyncio.wait_for(
                    loop.create_connection(lambda: LinkSession(self.broker, self, node), host, port, ssl=self.client_ssl),
                    timeout=2.0,
                )
            except (OSError, asyncio.TimeoutError, ssl.SSLError) as exc:
                log.debug("link to node %s at %s:%d failed: %s", node, host, port, exc)
                await asyncio.sleep(random.uniform(0, backoff))
                backoff = min(BACKOFF_MAX_S, backoff * 2)

    def link_up(self, link: LinkSession) -> None:
        if link.node not in self._wanted:
            link.close()
            return
        old = self.up.get(link.node)
        if old is not None and old is not link:
            old.close()
        self.up[link.node] = link
        self.stats["links_opened"] += 1
        log.info("link to node %s is up (%s)", link.node, link.peer_text)

    def link_down(self, link: LinkSession) -> None:
        if self.up.get(link.node) is link:
            del self.up[link.node]
            self.stats["links_lost"] += 1
            log.info("link to node %s is down: %s", link.node, link.close_reason or "closed")

    async def _keepalive_loop(self) -> None:
        while True:
            await asyncio.sleep(LINK_KEEPALIVE_MS / 1000.0)
            for link in list(self.up.values()):
                link.send_frame(keepalive_frame(True))

    # -- proofs -----------------------------------------------------------------------------

    def proof(self) -> bytes:
        """The JSON of our link SETUP entry."""
        ts = int(time.time())
        body: dict[str, Any] = {"node": self.node_id, "ts": ts}
        if self.keyring is not None:
            sealed = self.keyring.seal(f"link|{self.node_id}|{ts}".encode(), aad=b"link")
            body["proof"] = base64.b64encode(sealed).decode()
        return json.dumps(body).encode()

    def authenticate(self, session: Any, entry: bytes) -> Principal:
        """Check an inbound link's SETUP entry; the principal names the calling node."""
        try:
            body = json.loads(entry)
            node, ts = body["node"], body["ts"]
            if not isinstance(node, str) or not node or not isinstance(ts, int):
                raise ValueError("bad node or ts")
        except (ValueError, KeyError, TypeError):
            raise self._refuse(session, "malformed broker link entry") from None
        if self.keyring is None:
            if not is_loopback(session.peer):
                raise self._refuse(session, "broker links from other hosts need a cluster key (--cluster-key)")
            return link_principal(node)
        if abs(time.time() - ts) > PROOF_WINDOW_S:
            raise self._refuse(session, f"link proof of node '{node}' is stale (clock skew over {PROOF_WINDOW_S:g} s?)")
        try:
            plain = self.keyring.open(base64.b64decode(body.get("proof", ""), validate=True), aad=b"link")
        except (DecryptError, ValueError):
            raise self._refuse(session, f"link proof of node '{node}' does not open with our cluster key") from None
        if plain != f"link|{node}|{ts}".encode():
            raise self._refuse(session, "link proof does not match the node it names")
        return link_principal(node)

    def _refuse(self, session: Any, reason: str) -> FrameError:
        self.stats["link_auth_failures"] += 1
        log.warning("refused broker link from %s: %s", getattr(session, "peer_text", "?"), reason)
        return FrameError(f"broker link refused: {reason}", ErrorCode.REJECTED_SETUP)
