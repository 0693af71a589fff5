"""The config store's relay settings, applied to this node's relay as Raft applies them.

Four prefixes of the replicated store configure the relay of every node: ``acl/`` (access
rules), ``keys/`` (JWT verification keys), ``revoked/`` (revoked token ids) and ``services/``
(load-balancing policies). :class:`RelayConfig` reads each prefix once at start and again on
every applied change under it, so a node that restarts or falls behind converges on the
committed values without a separate sync step. Values were validated when proposed (the
store runs the same parsers), so a bad one here is logged and skipped, never fatal.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Callable

from broker.auth import rules_from_store
from broker.registry import ServicePolicy

if TYPE_CHECKING:
    from broker.relay import Broker
    from cluster.raft.node import RaftNode
    from cluster.raft.statemachine import Change

__all__ = ["RelayConfig"]

log = logging.getLogger("rsbroker.cluster")


class RelayConfig:
    """Keeps the relay's rules, keys, revocations and service policies equal to the store's."""

    def __init__(self, raft: RaftNode, broker: Broker) -> None:
        self.raft = raft
        self.broker = broker
        #: services whose policy came from the config store (so a deleted key can be undone)
        self._policies_applied: set[str] = set()

    def watch(self) -> None:
        """Apply every prefix now, then on each change Raft applies under it."""
        appliers: dict[str, Callable[[Change | None], None]] = {
            "acl/": self._acl,
            "keys/": self._keys,
            "revoked/": self._revoked,
            "services/": self._services,
        }
        for prefix, apply in appliers.items():
            self.raft.watch(prefix, apply)
            apply(None)

    def _acl(self, _: Change | None) -> None:
        rules, problems = rules_from_store(self.raft.list("acl/"))
        self.broker.security.set_rules(rules)
        for problem in problems:
            log.warning("config store: %s", problem)

    def _keys(self, _: Change | None) -> None:
        self.broker.security.set_keys({k[len("keys/") :]: v for k, v in self.raft.list("keys/").items()})

    def _revoked(self, _: Change | None) -> None:
        self.broker.security.set_revoked(k[len("revoked/") :] for k in self.raft.list("revoked/"))

    def _services(self, _: Change | None) -> None:
        registry = self.broker.registry
        stored = {k[len("services/") :]: v for k, v in self.raft.list("services/").items()}
        for service in self._policies_applied - set(stored):
            registry.set_policy(service, None)
        for service, value in stored.items():
            try:
                registry.set_policy(service, ServicePolicy.from_obj(value))
            except ValueError as exc:
                log.warning("config store: services/%s: %s", service, exc)
        self._policies_applied = set(stored)
