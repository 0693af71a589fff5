"""Which connections serve which service, and how the next request picks one.

The registry maps a service name to the sessions that provide it (local providers now,
broker links to other nodes later) and applies the service's load-balancing policy:

* ``round_robin`` — each provider in turn;
* ``least_outstanding`` — the provider with the fewest open streams through this node
  (ties broken round-robin, so equal providers still share);
* ``weighted`` — smooth weighted round robin (nginx's algorithm): deterministic, spreads
  picks evenly in proportion to the weights, no randomness to make tests flaky.

Providers that negotiated leases are only picked while they hold an unexpired lease with
requests left; picking spends one request of the lease.

Providers on other nodes (``is_remote``) share the service's list with local ones. With the
service's ``prefer_local`` (the default) a local provider wins whenever there is one; a
request that arrived over a broker link is only ever given to a local provider, so a
request crosses at most one hop. A remote provider whose link is down is not
``available`` and is skipped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

POLICIES = ("round_robin", "least_outstanding", "weighted")


class Provider(Protocol):
    """What the registry needs to know about a providing session."""

    lease_enabled: bool
    lease_remaining: int
    lease_expires: float
    #: served by another node, reached over a broker link
    is_remote: bool

    @property
    def instance(self) -> str: ...

    @property
    def weight(self) -> int: ...

    @property
    def available(self) -> bool: ...

    @property
    def outstanding(self) -> int:
        """Streams open towards it through this node (read by least_outstanding)."""
        ...

    @property
    def target(self) -> Any:
        """The session a request picked for this provider is sent on (itself, or a broker link)."""
        ...


@dataclass(slots=True)
class ServicePolicy:
    """Per-service settings, from the config file (``[services.<name>]``) or the config
    store (``services/<name>``); both parse them with :meth:`from_obj`."""

    policy: str = "round_robin"
    weights: dict[str, int] = field(default_factory=dict)
    prefer_local: bool = True

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(
                f"unknown load-balancing policy {self.policy!r}; 'policy' must be one of {', '.join(POLICIES)}"
            )
        for instance, weight in self.weights.items():
            if type(weight) is not int or weight < 0:  # bool is an int, but true is no weight
                raise ValueError(f"weight of instance '{instance}' must be an integer >= 0, got {weight!r}")
        if not isinstance(self.prefer_local, bool):
            raise ValueError(f"'prefer_local' must be true or false, got {self.prefer_local!r}")

    @classmethod
    def from_obj(cls, obj: object) -> "ServicePolicy":
        """The one parser of a policy in its JSON/TOML form; raises ValueError naming the field.

        A missing ``policy`` means ``round_robin``, missing ``weights`` none, missing
        ``prefer_local`` true — in the config file and the config store alike.
        """
        if not isinstance(obj, Mapping):
            raise ValueError(f"a service policy must be an object, got {type(obj).__name__}")
        unknown = set(obj) - {"policy", "weights", "prefer_local"}
        if unknown:
            raise ValueError(
                f"unknown service policy field(s) {', '.join(sorted(map(str, unknown)))}; "
                "allowed: policy, weights, prefer_local"
            )
        weights = obj.get("weights", {})
        if not isinstance(weights, Mapping):
            raise ValueError("'weights' must be an object of instance -> integer")
        return cls(policy=obj.get("policy", "round_robin"), weights=dict(weights), prefer_local=obj.get("prefer_local", True))


class _Service:
    __slots__ = ("providers", "cursor", "current", "remote", "leased", "only")

    def __init__(self) -> None:
        self.providers: list[Provider] = []
        self.cursor = 0
        #: smooth-weighted-round-robin running weights, by provider identity; made on the
        #: first weighted pick (a fleet has one service per device: no empty dict for each)
        self.current: dict[int, int] | None = None
        #: how many of ``providers`` are remote, and how many negotiated leases
        self.remote = 0
        self.leased = 0
        #: the provider to pick without consulting any policy — the single local one, with
        #: no lease — so the common single-node case costs one attribute read
        self.only: Provider | None = None

    def changed(self) -> None:
        self.remote = sum(1 for p in self.providers if p.is_remote)
        self.leased = sum(1 for p in self.providers if p.lease_enabled)
        simple = len(self.providers) == 1 and not self.remote and not self.leased
        self.only = self.providers[0] if simple else None


class Registry:
    """Service name → providers, with the pick policy of each service."""

    def __init__(self, default_policy: str = "round_robin") -> None:
        self._services: dict[str, _Service] = {}
        self._policies: dict[str, ServicePolicy] = {}
        self.default_policy = ServicePolicy(policy=default_policy)

    # -- membership -------------------------------------------------------------------

    def add(self, service: str, provider: Provider) -> None:
        entry = self._services.get(service)
        if entry is None:
            entry = self._services[service] = _Service()
        if provider not in entry.providers:
            entry.providers.append(provider)
            entry.changed()

    def remove(self, service: str, provider: Provider) -> None:
        entry = self._services.get(service)
        if entry is None or provider not in entry.providers:
            return
        entry.providers.remove(provider)
        if entry.current is not None:
            entry.current.pop(id(provider), None)
        if entry.providers:
            entry.changed()
        else:
            del self._services[service]

    def services(self) -> dict[str, list[Provider]]:
        return {name: list(entry.providers) for name, entry in self._services.items()}

    def names(self) -> list[str]:
        """Every service with a provider (no copies of the provider lists)."""
        return list(self._services)

    def providers(self, service: str) -> list[Provider]:
        entry = self._services.get(service)
        return list(entry.providers) if entry else []

    # -- policies ---------------------------------------------------------------------

    def set_policy(self, service: str, policy: ServicePolicy | None) -> None:
        if policy is None:
            self._policies.pop(service, None)
        else:
            self._policies[service] = policy

    def policy(self, service: str) -> ServicePolicy:
        return self._policies.get(service, self.default_policy)

    # -- picking ----------------------------------------------------------------------

    def pick(self, service: str, now: float, local_only: bool = False) -> tuple[Provider | None, str]:
        """Choose a provider for one request. Returns ``(provider, reason_if_none)``."""
        entry = self._services.get(service)
        if entry is None:
            return None, f"no provider for service '{service}'"
        if entry.only is not None:
            return entry.only, ""
        providers = entry.providers
        policy = self._policies.get(service, self.default_policy)
        if entry.remote:
            local = [p for p in providers if not p.is_remote]
            if local_only or (local and policy.prefer_local):
                providers = local
            else:
                providers = [p for p in providers if not p.is_remote or p.available]
            if not providers:
                where = "on this node" if local_only else "reachable (links to its nodes are down)"
                return None, f"no provider for service '{service}' {where}"
        if entry.leased:
            providers = [p for p in providers if _has_lease(p, now)]
            if not providers:
                return None, f"no provider for service '{service}' holds a lease with requests left"
        if len(providers) == 1:
            chosen = providers[0]
        elif policy.policy == "least_outstanding":
            chosen = self._least_outstanding(entry, providers)
        elif policy.policy == "weighted":
            chosen = self._weighted(entry, providers, policy)
        else:
            entry.cursor += 1
            chosen = providers[entry.cursor % len(providers)]
        if chosen.lease_enabled:
            chosen.lease_remaining -= 1
        return chosen, ""

    @staticmethod
    def _least_outstanding(entry: _Service, providers: list[Provider]) -> Provider:
        low = min(p.outstanding for p in providers)
        tied = [p for p in providers if p.outstanding == low]
        entry.cursor += 1
        return tied[entry.cursor % len(tied)]

    @staticmethod
    def _weighted(entry: _Service, providers: list[Provider], policy: ServicePolicy) -> Provider:
        """Smooth weighted round robin. Weight 0 drains an instance: it gets nothing while
        any other provider has weight, and all share equally if every weight is 0."""
        weights = [policy.weights.get(p.instance, p.weight) for p in providers]
        if not any(weights):
            weights = [1] * len(providers)
        total = 0
        best: Provider | None = None
        best_current = 0
        current = entry.current
        if current is None:
            current = entry.current = {}
        for p, weight in zip(providers, weights):
            if not weight:
                continue
            total += weight
            value = current.get(id(p), 0) + weight
            current[id(p)] = value
            if best is None or value > best_current:
                best, best_current = p, value
        assert best is not None
        current[id(best)] = best_current - total
        return best


def _has_lease(provider: Provider, now: float) -> bool:
    if not provider.lease_enabled:
        return True
    return provider.lease_remaining > 0 and now < provider.lease_expires
