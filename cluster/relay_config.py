"""The config store's relay settings, applied to this node's relay as Raft applies them.

Five prefixes of the replicated store configure the relay of every node: ``acl/`` (access
rules), ``keys/`` (JWT verification keys), ``revoked/`` (revoked token ids), ``services/``
(load-balancing policies, deadlines, retries) and ``limits/`` (rate limits, laid over the
config file's; the live-node count that splits them is the runtime's). :class:`RelayConfig` reads each prefix once at start and again on
every applied change under it, so a node that restarts or falls behind converges on the
committed values without a separate sync step. Values were validated when proposed (the
store runs the same parsers), so a bad one here is logged and skipped, never fatal.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Callable

from broker.auth import rules_from_store
from broker.registry import ServicePolicy
from broker.traffic import RateLimit

if TYPE_CHECKING:
    from broker.relay import Broker
    from cluster.raft.node import RaftNode
    from cluster.raft.statemachine import Change

__all__ = ["RelayConfig"]

log = logging.getLogger("rsbroker.cluster")


class RelayConfig:
    """Keeps the relay's rules, keys, revocations, service policies and rate limits equal to the store's."""

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
            "limits/": self._limits,
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
        broker = self.broker  # Broker.set_policy: balancing in the registry, deadline and retries in traffic
        stored = {k[len("services/") :]: v for k, v in self.raft.list("services/").items()}
        for service in self._policies_applied - set(stored):
            broker.set_policy(service, None)
        for service, value in stored.items():
            try:
                broker.set_policy(service, ServicePolicy.from_obj(value))
            except ValueError as exc:
                log.warning("config store: services/%s: %s", service, exc)
        self._policies_applied = set(stored)

    def _limits(self, _: Change | None) -> None:
        stored: dict[str, RateLimit] = {}
        for key, value in self.raft.list("limits/").items():
            try:
                stored[key[len("limits/") :]] = RateLimit.from_obj(key[len("limits/") :], value)
            except ValueError as exc:
                log.warning("config store: %s: %s", key, exc)
        self.broker.traffic.set_limits(stored)
