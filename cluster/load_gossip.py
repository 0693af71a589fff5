"""This node's per-provider load, put into its routing-table entries at a bounded rate.

Rules of this module:

* The figure of a local provider is what ``p2c`` on other nodes compares: its open streams
  here (requests of every node pass through this one to reach it), or
  :data:`~broker.registry.NO_CAPACITY` when it takes no request now (it negotiated leases
  and holds none with requests left, or its service ejected it).
* A figure travels as the ``load`` of the provider's routing entry: a changed entry is one
  more queued delta, batched with the others once per gossip round (the routing table's
  O(change) path). No new message, no new port.
* Bounded: one pass per :data:`LOAD_GOSSIP_S`, and a figure is re-announced only when it
  changed meaningfully (:func:`meaningful`), so an idle or steady cluster sends nothing
  and a busy one at most one delta per provider and second.
* A pass walks only the services where a local provider has siblings
  (``Registry.balanced``): a fleet's one-device services never cost a look.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from broker.registry import NO_CAPACITY
from cluster.routing_table import ServiceEntry

if TYPE_CHECKING:
    from broker.registry import Provider, Registry
    from cluster.routing_table import RoutingTable

__all__ = ["LOAD_GOSSIP_S", "load_figure", "local_entries", "meaningful", "refreshed"]

#: Seconds between two passes: the most often a provider's load is re-announced.
LOAD_GOSSIP_S = 1.0


def load_figure(registry: "Registry", service: str, provider: "Provider", now: float) -> int:
    """What other nodes should weigh ``provider`` of ``service`` by."""
    if provider.lease_enabled and not (provider.lease_remaining > 0 and now < provider.lease_expires):
        return NO_CAPACITY
    if registry.ejected(service, provider, now):
        return NO_CAPACITY
    return provider.outstanding


def meaningful(old: int, new: int) -> bool:
    """Worth a delta: in or out of capacity, or a move of at least 2 streams and 20 %."""
    if old == new:
        return False
    if NO_CAPACITY in (old, new):
        return True
    return abs(new - old) >= max(2, old // 5)


def local_entries(registry: "Registry", service: str, now: float) -> list[ServiceEntry]:
    """This node's entries of ``service``: its local providers with their weights, tags and loads."""
    return [
        ServiceEntry(service, p.instance, p.weight, p.tags, load_figure(registry, service, p, now))
        for p in registry.providers(service)
        if not p.is_remote
    ]


def refreshed(registry: "Registry", table: "RoutingTable", node: str, now: float) -> list[tuple[str, list[ServiceEntry]]]:
    """The services of ``registry.balanced`` whose local figures moved meaningfully from
    what this node's routing table (``table``, ours being ``node``) announces, with their
    fresh entries. An instance the table does not hold is the registration path's to
    announce (or one peers could not decode), never a reason to resend."""
    out = []
    for service in registry.balanced:
        held = {e.instance: e.load for e in table.entries(node, service)}
        fresh = local_entries(registry, service, now)
        if any(e.instance in held and meaningful(held[e.instance], e.load) for e in fresh):
            out.append((service, fresh))
    return out
