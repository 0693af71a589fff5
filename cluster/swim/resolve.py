"""Host names of members → IP addresses, for UDP sends that must not wait on DNS.

Members advertise themselves by host name (a Kubernetes pod's stable DNS name, a compose
service name). A datagram can only go to an IP address (uvloop refuses a name; the default
loop would resolve it synchronously on every packet), so names are resolved here:

* off the hot path: :meth:`Resolver.cached` never waits; a name not resolved yet starts a
  lookup (``loop.getaddrinfo``, in the resolver's thread pool) and the caller sends once
  :meth:`Resolver.resolve` answers;
* cached for ``ttl_s`` and then re-resolved in the background while the old address keeps
  being used, so a pod that keeps its name and changes its address is followed within a
  ``ttl_s`` and no packet waits for it;
* a failed lookup is remembered for ``negative_ttl_s`` so an unknown name cannot make every
  probe start a new lookup.

IP literals pass through untouched. The clock is the event loop's.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Resolver"]

log = logging.getLogger("rsbroker.gossip")


@dataclass
class _Entry:
    address: str | None  # None: the last lookup failed
    expires: float
    refreshing: bool = False


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class Resolver:
    """A small cache of name → address with background refresh."""

    def __init__(self, family: int = socket.AF_INET, *, ttl_s: float = 5.0, negative_ttl_s: float = 1.0,
                 on_moved: Callable[[str], None] | None = None) -> None:
        self.family = family
        #: called with the host name when its address changes (connections to the old one are stale)
        self.on_moved = on_moved
        self.ttl_s = ttl_s
        self.negative_ttl_s = negative_ttl_s
        self._entries: dict[str, _Entry] = {}
        self._pending: dict[str, asyncio.Future[str | None]] = {}
        self._failing: set[str] = set()  # logged once until the name resolves again
        #: lookups made and lookups that failed (for stats)
        self.lookups = 0
        self.failures = 0

    def cached(self, host: str) -> str | None:
        """The address to use now, or None if ``host`` has none yet (call :meth:`resolve`).

        A stale entry is still returned; its refresh starts in the background.
        """
        if _is_ip(host):
            return host
        entry = self._entries.get(host)
        if entry is None:
            return None
        loop = asyncio.get_running_loop()
        if loop.time() >= entry.expires and not entry.refreshing:
            entry.refreshing = True
            self._lookup(host)
        return entry.address

    def known(self, host: str) -> str | None:
        """The last address ``host`` resolved to (for views; never starts a lookup)."""
        if _is_ip(host):
            return host
        entry = self._entries.get(host)
        return entry.address if entry else None

    async def resolve(self, host: str) -> str | None:
        """The address of ``host`` (one lookup shared by every caller), or None if it has none."""
        if _is_ip(host):
            return host
        entry = self._entries.get(host)
        if entry is not None and asyncio.get_running_loop().time() < entry.expires:
            return entry.address
        return await asyncio.shield(self._lookup(host))

    def _lookup(self, host: str) -> asyncio.Future[str | None]:
        pending = self._pending.get(host)
        if pending is None:
            pending = asyncio.ensure_future(self._getaddrinfo(host))
            self._pending[host] = pending
            pending.add_done_callback(lambda _: self._pending.pop(host, None))
        return pending

    async def _getaddrinfo(self, host: str) -> str | None:
        loop = asyncio.get_running_loop()
        previous = self._entries.get(host)
        self.lookups += 1
        try:
            infos = await loop.getaddrinfo(host, None, family=self.family, type=socket.SOCK_DGRAM)
            address: str | None = str(infos[0][4][0])
        except (OSError, IndexError, UnicodeError) as exc:
            self.failures += 1
            if host not in self._failing:
                self._failing.add(host)
                log.warning("cannot resolve member host %r: %s (keeps trying)", host, exc)
            # keep using the last good address: a DNS hiccup must not silence a live member
            address = previous.address if previous else None
            ttl = self.negative_ttl_s
        else:
            ttl = self.ttl_s
            self._failing.discard(host)
            if previous and previous.address and previous.address != address:
                log.info("member host %s moved from %s to %s", host, previous.address, address)
                if self.on_moved is not None:
                    self.on_moved(host)
        self._entries[host] = _Entry(address, loop.time() + ttl)
        return address
