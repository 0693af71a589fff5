"""Remote providers in the relay's registry, kept equal to the gossiped routing table.

Rules of this module:

* It turns one :class:`~cluster.routing_table.RoutesChanged` into registry updates for
  just the services named in it: O(members + instances of those services), never a pass
  over the whole table (a fleet of devices is one service per device, so a table has tens
  of thousands of services while a change touches one).
* Provider objects only where the table alone cannot answer a pick: a service that is one
  instance on one node, as a device registers it (weight 1, no tags, load 0), and that no
  local provider shares, has no registry entry at all. The registry asks
  :meth:`RemoteRoutes.sole` for it, which makes its provider from the table when it is
  picked and keeps the last ``PICKED_KEPT`` of them (issue 13: ~400 bytes per remote route
  as objects before, a bounded cache now). Any other remote
  service (several instances, weights, tags, a load, or a local provider beside it) has
  its providers in the registry, as before, so policies, ejection and leases see them.
* Entries are indexed by node, then by service: a node that dies drops its providers in
  O(its entries) without looking at anyone else's.
* No I/O; it only calls the registry and reads the table and the links' state through
  the providers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Iterator

from cluster.links import RemoteProvider

if TYPE_CHECKING:
    from broker.registry import Provider, Registry
    from cluster.links import Links
    from cluster.routing_table import RemoteEntry, RoutingTable, ServiceEntry

__all__ = ["RemoteRoutes"]

#: Providers kept for services picked that the registry holds no entry for: a device called
#: again costs one dict lookup instead of a walk over the members, and this bounds what the
#: cache holds (~200 bytes each), whatever the size of the fleet.
PICKED_KEPT = 4096


class RemoteRoutes:
    """Node -> service -> its providers there, for the services the registry holds (a tuple:
    one instance per device is the rule, and a tuple of one costs less than a dict); the
    registry's :class:`~broker.registry.RemoteServices` for the rest."""

    def __init__(self, registry: "Registry", links: "Links", table: "RoutingTable") -> None:
        self._registry = registry
        self._links = links
        self._table = table
        self._by_node: dict[str, dict[str, tuple[RemoteProvider, ...]]] = {}
        #: providers made by :meth:`sole`, oldest first (dropped first when full)
        self._picked: dict[str, RemoteProvider] = {}
        registry.remote = self

    def changed(self, service: str) -> None:
        """The entries of ``service`` on other nodes changed in the table: give the registry
        provider objects for them, or none when the table answers for it."""
        self._picked.pop(service, None)
        if self._registry.has_local(service) or self._table.sole_entry(service) is None:
            self._hold(service, self._table.lookup(service))
        else:
            self._hold(service, ())

    def drop(self, node: str) -> None:
        """``node`` is gone: remove all its providers (O(its entries))."""
        self._picked.clear()  # at most PICKED_KEPT, once per node lost
        for service, providers in self._by_node.pop(node, {}).items():
            for provider in providers:
                self._registry.remove(service, provider)

    def count(self, node: str) -> int:
        """Services of ``node`` with provider objects in the registry."""
        return len(self._by_node.get(node, ()))

    # -- the registry's RemoteServices ----------------------------------------------------

    def sole(self, service: str) -> RemoteProvider | None:
        provider = self._picked.get(service)
        if provider is not None:
            return provider
        found = self._table.sole_entry(service)
        if found is None:
            return None
        picked = self._picked
        if len(picked) >= PICKED_KEPT:
            del picked[next(iter(picked))]
        provider = picked[service] = RemoteProvider(self._links, found[0], found[1], 1)
        return provider

    def view(self, service: str) -> list["Provider"]:
        return [self._provider(r.node, r.entry, siblings) for r, siblings in _with_siblings(self._table.lookup(service))]

    def names(self) -> Iterator[str]:
        return self._table.remote_services()

    def served_by(self, service: str, node: str) -> bool:
        return self._table.holds(node, service)

    def attach(self, service: str) -> None:
        self._picked.pop(service, None)
        self._hold(service, self._table.lookup(service))

    # -- internals ---------------------------------------------------------------------------

    def _hold(self, service: str, entries: Iterable["RemoteEntry"]) -> None:
        """Make the registry hold exactly ``entries`` of ``service`` (by node)."""
        by_node: dict[str, list[ServiceEntry]] = {}
        for remote in entries:
            by_node.setdefault(remote.node, []).append(remote.entry)
        held = [node for node, services in self._by_node.items() if service in services]
        for node in by_node.keys() | set(held):
            self._update(node, service, by_node.get(node, ()))

    def _update(self, node: str, service: str, entries: Iterable["ServiceEntry"]) -> None:
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
                provider = held[instance] = self._provider(node, entry, siblings)
                self._registry.add(service, provider)
            else:
                provider.weight, provider.load, provider.tags, provider.siblings = entry.weight, entry.load, entry.tags, siblings
        if held:
            services[service] = tuple(held.values())
        else:
            services.pop(service, None)
            if not services:
                del self._by_node[node]

    def _provider(self, node: str, entry: "ServiceEntry", siblings: int) -> RemoteProvider:
        return RemoteProvider(self._links, node, entry.instance, entry.weight, entry.load, entry.tags, siblings)


def _with_siblings(entries: list["RemoteEntry"]) -> Iterator[tuple["RemoteEntry", int]]:
    """Each entry with the number of instances of its service on its node."""
    per_node: dict[str, int] = {}
    for remote in entries:
        per_node[remote.node] = per_node.get(remote.node, 0) + 1
    for remote in entries:
        yield remote, per_node[remote.node]
