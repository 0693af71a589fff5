"""A client of a whole cluster: one connection at a time, moved to another node when it ends.

* **Topology:** the SETUP asks for topology pushes, so the client learns nodes that joined
  after it started and forgets nodes that left.
* **Fail-over:** one supervisor task owns the connection. When the connection ends (node
  killed, drained, or silent for the keepalive lifetime — a paused or partitioned node),
  it connects to the next node of the list, after a full-jitter backoff that grows with
  consecutive failures and is capped at ``backoff_max_s``. A node that accepts the TCP
  connection but never answers the SETUP (a paused node: its kernel still accepts) costs
  ``setup_timeout_s``, then the next node is tried.
* **Connect storms:** a SETUP refused with a hint (``... retry after 250 ms``, a node over
  its ``max_setups_per_s``) is tried again after that long plus up to 20 % jitter (the node
  already gave each refused client its own slot), even before the first connection succeeded.
* **Re-registration:** a provider's services ride in every SETUP, so whichever node the
  client reaches, it is registered there.
* Requests in flight when the connection ends fail with
  :class:`~broker.client.errors.ConnectionLostError` (retry them); a request-response made
  while the client reconnects waits up to ``request_wait_s`` for the next connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import random
from typing import Any, AsyncIterable, AsyncIterator, Iterable

from broker import metadata as md
from broker.backoff import Backoff
from broker.client.api import default_instance, open_connection
from broker.client.connection import Connection
from broker.client.errors import ConnectionLostError, SetupError, retry_after_s
from broker.client.router import Router
from broker.client.streams import Inbound
from broker.client.transport import parse_address

__all__ = ["ClusterClient", "Topology", "connect_cluster"]

log = logging.getLogger("rsbroker.client")


class Topology:
    """The node list a cluster client fails over across, kept fresh by topology pushes."""

    def __init__(self, addresses: Iterable[str]) -> None:
        self.addresses: list[str] = list(dict.fromkeys(addresses))
        if not self.addresses:
            raise ValueError("at least one broker address (HOST:PORT) is needed")
        parsed = [parse_address(a) for a in self.addresses]  # refuse a typo now, not at the first fail-over
        first = parsed[0]
        #: pushed node lists carry bare host:port; they are dialled the way the first address is
        self.websocket = first.kind == "ws"
        self.scheme = ("wss://" if first.tls else "ws://") if self.websocket else ("tls://" if first.tls else "")
        self.cursor = 0
        self.current: str | None = None
        self.pushes = 0

    def next_address(self) -> str:
        address = self.addresses[self.cursor % len(self.addresses)]
        self.cursor += 1
        self.current = address
        return address

    def update(self, body: bytes) -> None:
        """Take the node list of a ``message/x.rsbroker.topology.v0`` push (JSON)."""
        alive = _alive_nodes(body, "ws" if self.websocket else "tcp")
        if alive is None:
            log.info("ignored a topology push that is not the expected JSON")
            return
        fresh = [f"{self.scheme}{a}/rsocket" if self.websocket else f"{self.scheme}{a}" for a in alive]
        if fresh:
            # keep the node we are on first so a push does not move a healthy connection; the
            # others in random order, so the clients of a node that dies spread over the rest
            # instead of all moving to the same next one
            others = [a for a in fresh if a != self.current]
            random.shuffle(others)
            self.addresses = [a for a in fresh if a == self.current] + others
            self.cursor = 1 if self.current in fresh else 0
            self.pushes += 1


@functools.lru_cache(maxsize=16)
def _alive_nodes(body: bytes, key: str) -> tuple[str, ...] | None:
    """The ``key`` addresses (``ws`` or ``tcp``) of the alive nodes of a topology push, or None
    when it is not the expected JSON. Cached: a node sends the same push to every client (a
    fleet simulator parses one per device per connect)."""
    try:
        nodes = json.loads(body)["nodes"]
        return tuple(n[key] for n in nodes if n.get(key) and n.get("state", "alive") == "alive")
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


class ClusterClient:
    """Requests through whichever node the client is connected to (see the module notes)."""

    def __init__(
        self,
        addresses: Iterable[str],
        *,
        services: Iterable[str] = (),
        router: Router | None = None,
        instance: str | None = None,
        backoff_base_s: float = 0.05,
        backoff_max_s: float = 2.0,
        request_wait_s: float = 10.0,
        **options: Any,
    ) -> None:
        address_list = list(addresses)
        self.topology = Topology(address_list)
        self.services = list(services)
        self.router = router
        self.instance = instance or default_instance()
        #: full jitter, so that clients that lost the same node do not come back in one herd
        self.backoff = Backoff(backoff_base_s, backoff_max_s)
        self.request_wait_s = request_wait_s
        self.options = {"keepalive_s": 1.0, "max_lifetime_s": 4.0, "setup_timeout_s": 2.0, **options}
        self.connection: Connection | None = None
        #: connections made after the first one
        self.reconnects = 0
        #: connection attempts that failed (refused, timed out, SETUP refused)
        self.failed_attempts = 0
        self.last_error: BaseException | None = None
        self._connected = asyncio.Event()
        self._closing = False
        self._ever_connected = False
        self._task: asyncio.Task[None] | None = None

    # -- life ------------------------------------------------------------------------------

    async def start(self, timeout_s: float = 30.0) -> None:
        """Start the supervisor and wait for the first connection (or raise why there is none).

        A client whose start failed may be started again."""
        self._closing = False
        self._task = asyncio.get_running_loop().create_task(self._supervise(), name="rsbroker-cluster-client")
        waiter = asyncio.ensure_future(self._connected.wait())
        done, _ = await asyncio.wait({waiter, self._task}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        if waiter not in done:
            waiter.cancel()
            await self.close()
            if isinstance(self.last_error, SetupError):
                raise self.last_error
            raise ConnectionLostError(f"no broker of {self.topology.addresses} reachable: {self.last_error}")

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.connection is not None:
            self.connection.close()

    async def _supervise(self) -> None:
        try:
            await self._connect_forever()
        except Exception as exc:  # a bug here must not leave a client that silently never reconnects
            log.exception("cluster client stopped reconnecting")
            self.last_error = exc
            raise

    async def _connect_forever(self) -> None:
        while not self._closing:
            address = self.topology.next_address()
            try:
                connection = await open_connection(
                    address,
                    services=self.services,
                    router=self.router,
                    instance=self.instance,
                    topology=True,
                    on_metadata_push=self._on_metadata_push,
                    **self.options,
                )
            except SetupError as exc:
                self._failed(address, exc)
                hint = retry_after_s(exc)
                if hint is None and not self._ever_connected:
                    return  # a refused first SETUP (bad token) will not get better by retrying
                if hint is not None:
                    # a node shedding a connect storm says when to come back; jitter spreads the herd
                    await asyncio.sleep(hint * random.uniform(1.0, 1.2))
                else:
                    await self.backoff.wait()
                continue
            except (OSError, ConnectionLostError, asyncio.TimeoutError) as exc:
                self._failed(address, exc)
                await self.backoff.wait()
                continue
            if self._ever_connected:
                self.reconnects += 1
            self._ever_connected = True
            self.backoff.reset()
            self.connection = connection
            self._connected.set()
            log.info("connected to %s", address)
            reason = await connection.wait_closed()
            self._connected.clear()
            self.connection = None
            self.last_error = reason
            if not self._closing:
                log.warning("connection to %s ended (%s); moving to the next node", address, reason)
                await self.backoff.wait()

    def _failed(self, address: str, exc: BaseException) -> None:
        self.failed_attempts += 1
        self.last_error = exc
        log.info("could not connect to %s: %s", address, exc)

    def _on_metadata_push(self, metadata: bytes) -> None:
        body = md.find_entry(metadata, md.TOPOLOGY_MIME)
        if body is not None:
            self.topology.update(body)

    async def _connection(self) -> Connection:
        connection = self.connection
        if connection is not None and not connection.is_closed:
            return connection
        try:
            await asyncio.wait_for(self._connected.wait(), self.request_wait_s)
        except asyncio.TimeoutError:
            raise ConnectionLostError(
                f"no broker connection within {self.request_wait_s:g} s (last error: {self.last_error})"
            ) from None
        assert self.connection is not None
        return self.connection

    def _current(self) -> Connection:
        connection = self.connection
        if connection is None or connection.is_closed:
            raise ConnectionLostError(f"not connected (reconnecting; last error: {self.last_error})")
        return connection

    # -- requests --------------------------------------------------------------------------

    async def request_response(self, route: str, data: bytes, metadata: bytes | None = None) -> bytes:
        return await (await self._connection()).request_response(route, data, metadata)

    def request_stream(self, route: str, data: bytes = b"", window: int = 64, metadata: bytes | None = None) -> Inbound:
        """As :meth:`Connection.request_stream`; raises ConnectionLostError while reconnecting."""
        return self._current().request_stream(route, data, window, metadata)

    def request_channel(
        self, route: str, items: AsyncIterable[bytes] | Iterable[bytes], window: int = 64, metadata: bytes | None = None
    ) -> Inbound:
        return self._current().request_channel(route, items, window, metadata)

    async def fire_and_forget(self, route: str, data: bytes, metadata: bytes | None = None) -> None:
        await (await self._connection()).fire_and_forget(route, data, metadata)

    async def metadata_push(self, metadata: bytes) -> None:
        await (await self._connection()).metadata_push(metadata)

    async def register(self, services: Iterable[str], weight: int = 1, tags: dict[str, str] | None = None) -> None:
        """Replace the registration, here and on every node the client moves to later."""
        self.services = list(services)
        await (await self._connection()).register(self.services, self.instance, weight, tags)


@contextlib.asynccontextmanager
async def connect_cluster(addresses: Iterable[str], **options: Any) -> AsyncIterator[ClusterClient]:
    """A :class:`ClusterClient` for the ``async with`` block, connected when the block starts.

    Options: those of :class:`ClusterClient` and of :func:`broker.client.open_connection`
    (``token``, ``ssl``, ``keepalive_s``, ``max_lifetime_s``, ...). The cluster defaults
    are a 1 s keepalive and a 4 s lifetime, so a paused node is left within about 5 s.
    """
    client = ClusterClient(addresses, **options)
    await client.start()
    try:
        yield client
    finally:
        await client.close()
