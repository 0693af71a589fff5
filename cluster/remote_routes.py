"""Remote providers in the relay's registry, kept equal to the gossiped routing table.

Rules of this module:

* It turns one :class:`~cluster.routing_table.RoutesChanged` into registry updates for
  just the services named in it: O(instances of those services), never a pass over the
  whole table (a fleet of devices is one service per device, so a table has tens of
  thousands of services while a change touches one).
* Entries are indexed by node, then by service: a node that dies drops
  its providers in O(its entries) without looking at anyone else's.
* No I/O; it only calls the registry and reads the links' state through the providers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

from cluster.links import RemoteProvider

if TYPE_CHECKING:
    from broker.registry import Registry
    from cluster.links import Links
    from cluster.routing_table import ServiceEntry

__all__ = ["RemoteRoutes"]


class RemoteRoutes:
    """Node -> service -> its providers there (a tuple: one instance per device is the rule,
    and a tuple of one costs less than a dict)."""

    def __init__(self, registry: "Registry", links: "Links") -> None:
        self._registry = registry
        self._links = links
        self._by_node: dict[str, dict[str, tuple[RemoteProvider, ...]]] = {}

    def update(self, node: str, service: str, entries: Iterable["ServiceEntry"]) -> None:
        """Make the registry hold exactly ``entries`` for ``service`` at ``node``."""
        services = self._by_node.setdefault(node, {})
        held = {p.instance: p for p in services.get(service, ())}
        fresh = {e.instance: e for e in entries}
        for instance in [i for i in held if i not in fresh]:
            self._registry.remove(service, held.pop(instance))
        siblings = len(fresh)
        for instance, entry in fresh.items():
            provider = held.get(instance)
            if provider is None:
                provider = held[instance] = RemoteProvider(
                    self._links, node, instance, entry.weight, entry.load, entry.tags, siblings
                )
                self._registry.add(service, provider)
            else:
                provider.weight, provider.load, provider.tags, provider.siblings = entry.weight, entry.load, entry.tags, siblings
        if held:
            services[service] = tuple(held.values())
        else:
            services.pop(service, None)
            if not services:
                del self._by_node[node]

    def drop(self, node: str) -> None:
        """``node`` is gone: remove all its providers (O(its entries))."""
        for service, providers in self._by_node.pop(node, {}).items():
            for provider in providers:
                self._registry.remove(service, provider)

    def count(self, node: str) -> int:
        """Services of ``node`` in the registry."""
        return len(self._by_node.get(node, ()))
