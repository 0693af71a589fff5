"""Which connections serve which service, and how the next request picks one.

The registry maps a service name to the sessions that provide it (local providers now,
broker links to other nodes later) and applies the service's load-balancing policy:

* ``round_robin`` — each provider in turn;
* ``least_outstanding`` — the provider with the fewest open streams through this node
  (ties broken round-robin, so equal providers still share);
* ``weighted`` — smooth weighted round robin (nginx's algorithm): deterministic, spreads
  picks evenly in proportion to the weights, no randomness to make tests flaky;
* ``p2c`` — power of two choices: two providers drawn at random, the cheaper one wins. Its
  cost is Finagle's and Linkerd's: peak-EWMA round-trip time x (load + 1), the time a new
  request can expect to wait there (``broker.latency``; a provider not measured yet is
  weighed as the other candidate, so the loads decide). A local provider's load is its open
  streams (exact: every stream to it passes here) and its round trip is measured here; a
  remote one's load is the larger of the figure its node gossips (at most once a second, see
  ``cluster.load_gossip``) and this node's own open streams on the link to that node, per
  instance there, and its round trip is this node's through that link. Drawing two at
  random is what keeps nodes that act on the same stale figures from all herding onto the
  one that looked idlest. Round robin stays the default
  (deterministic, and what existing deployments count on); ``p2c`` is the policy to set for
  services whose providers span nodes or differ in speed.

Each service may also eject failing providers (``outlier``, see ``broker.outlier``) and send
a share of its requests, or tagged ones, to canary providers (``canary``, see
``broker.canary``). Both are off unless the service's policy sets them, and cost nothing then.

Providers that negotiated leases are only picked while they hold an unexpired lease with
requests left; picking spends one request of the lease.

Providers on other nodes (``is_remote``) share the service's list with local ones. With the
service's ``prefer_local`` (the default) a local provider wins whenever there is one; a
request that arrived over a broker link is only ever given to a local provider, so a
request crosses at most one hop. A remote provider whose link is down is not
``available`` and is skipped.

A remote service that is one instance on one node, as a device registers it, has no entry
here at all (issue 13: tens of thousands of them on every node, each ~400 bytes as provider
objects): ``remote`` (``cluster.remote_routes``) answers for it from the routing table.
Any other remote service, or one a local provider shares, has its providers here.
"""

from __future__ import annotations

import collections
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Iterable, Protocol

from broker.canary import CanaryPolicy
from broker.latency import p2c
from broker.outlier import OutlierPolicy, Outliers

POLICIES = ("round_robin", "least_outstanding", "weighted", "p2c")
#: A gossiped load at or above this says the provider takes no request now (its lease is
#: spent, or its node ejected it): other nodes skip it as if its link were down.
NO_CAPACITY = 1 << 31
#: most times one request may be sent again
MAX_RETRIES = 5
_POLICY_FIELDS = ("policy", "weights", "prefer_local", "outlier", "canary", "deadline_ms", "idempotent", "retries", "forward_principal")


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

    #: errors it answered in a row (outlier ejection); a good answer resets it
    failures: int

    @property
    def target(self) -> Any:
        """The session a request picked for this provider is sent on (itself, or a broker link)."""
        ...

    @property
    def tags(self) -> Mapping[str, str]:
        """Its registration tags (canary routing)."""
        ...

    @property
    def balance_load(self) -> int:
        """Its load as ``p2c`` compares it (see the module docstring)."""
        ...

    @property
    def rtt(self) -> float:
        """Its peak-EWMA round trip, s (0: not measured yet): ``broker.latency`` keeps it,
        ``p2c`` reads it."""
        ...

    @property
    def rtt_at(self) -> float:
        """When ``rtt`` was last sampled (broker clock)."""
        ...

    #: the relay samples a local provider's round trips only once this is set (the registry
    #: sets it when the provider serves a ``p2c`` service)
    measure_rtt: bool


class RemoteServices(Protocol):
    """Services on other nodes that the registry keeps no entry for (``cluster.remote_routes``)."""

    def sole(self, service: str) -> Provider | None:
        """The provider of ``service`` when the registry holds none of it (made from the
        routing table; a bounded number are kept for the next picks), or None when no
        other node has it."""
        ...

    def view(self, service: str) -> list[Provider]:
        """Its providers on other nodes as views show them (made for the caller, not kept)."""
        ...

    def names(self) -> Iterable[str]:
        """Every service on other nodes (repeats allowed)."""
        ...

    def attach(self, service: str) -> None:
        """A local provider now serves ``service``: add its remote providers to the registry,
        so that a pick weighs them against the local one."""
        ...

    def served_by(self, service: str, node: str) -> bool:
        """Whether ``node`` announces ``service``."""
        ...


@dataclass(slots=True)
class ServicePolicy:
    """Per-service settings, from the config file (``[services.<name>]``) or the config
    store (``services/<name>``); both parse them with :meth:`from_obj`."""

    policy: str = "round_robin"
    weights: dict[str, int] = field(default_factory=dict)
    prefer_local: bool = True
    outlier: OutlierPolicy | None = None
    canary: CanaryPolicy | None = None
    #: a request-response unanswered this long (ms) is ended: ERROR to the requester, CANCEL
    #: to the provider (broker.traffic); None: no deadline but the requester's own
    deadline_ms: int | None = None
    #: its request-responses may be sent again (broker.traffic retries), and how many times
    idempotent: bool = False
    retries: int = 0
    #: requests to it carry who asked (``broker.principal``); off, requests pay nothing for it
    forward_principal: bool = False

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
        if self.deadline_ms is not None and (type(self.deadline_ms) is not int or not 1 <= self.deadline_ms <= 86_400_000):
            raise ValueError(f"'deadline_ms' must be an integer from 1 to 86400000 (a day), got {self.deadline_ms!r}")
        if not isinstance(self.idempotent, bool):
            raise ValueError(f"'idempotent' must be true or false, got {self.idempotent!r}")
        if type(self.retries) is not int or not 0 <= self.retries <= MAX_RETRIES:
            raise ValueError(f"'retries' must be an integer from 0 to {MAX_RETRIES}, got {self.retries!r}")
        if not isinstance(self.forward_principal, bool):
            raise ValueError(f"'forward_principal' must be true or false, got {self.forward_principal!r}")
        if self.retries and not self.idempotent:
            raise ValueError("'retries' needs \"idempotent\": true: only idempotent routes may be sent twice")

    @classmethod
    def from_obj(cls, obj: object) -> "ServicePolicy":
        """The one parser of a policy in its JSON/TOML form; raises ValueError naming the field.

        A missing ``policy`` means ``round_robin``, missing ``weights`` none, missing
        ``prefer_local`` true, missing ``outlier`` and ``canary`` off, missing ``deadline_ms``
        none, ``idempotent`` false and ``retries`` 1 when idempotent (else 0) — in the config
        file and the config store alike.
        """
        if not isinstance(obj, Mapping):
            raise ValueError(f"a service policy must be an object, got {type(obj).__name__}")
        unknown = set(obj) - set(_POLICY_FIELDS)
        if unknown:
            raise ValueError(
                f"unknown service policy field(s) {', '.join(sorted(map(str, unknown)))}; "
                f"allowed: {', '.join(_POLICY_FIELDS)}"
            )
        weights = obj.get("weights", {})
        if not isinstance(weights, Mapping):
            raise ValueError("'weights' must be an object of instance -> integer")
        return cls(
            policy=obj.get("policy", "round_robin"),
            weights=dict(weights),
            prefer_local=obj.get("prefer_local", True),
            outlier=OutlierPolicy.from_obj(obj["outlier"]) if "outlier" in obj else None,
            canary=CanaryPolicy.from_obj(obj["canary"]) if "canary" in obj else None,
            deadline_ms=obj.get("deadline_ms"),
            idempotent=obj.get("idempotent", False),
            retries=obj.get("retries", 1 if obj.get("idempotent") is True else 0),
            forward_principal=obj.get("forward_principal", False),
        )


class _Service:
    __slots__ = ("providers", "cursor", "current", "remote", "leased", "only", "outliers", "split")

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
        #: ejection records, made on the first ejection (most services never have one)
        self.outliers: Outliers | None = None
        #: the canary policy and its (canary, stable) split of ``providers``, made on the
        #: first pick after a change: a pick then costs no pass over the tags
        self.split: tuple[CanaryPolicy, list[Provider], list[Provider]] | None = None

    def split_for(self, canary: CanaryPolicy, providers: list[Provider]) -> tuple[list[Provider], list[Provider]]:
        if providers is not self.providers:  # filtered for this pick (links down, leases, ejections)
            return canary.split(providers)
        split = self.split
        if split is None or split[0] is not canary:
            split = self.split = (canary, *canary.split(providers))
        return split[1], split[2]

    def changed(self) -> None:
        self.split = None
        self.remote = sum(1 for p in self.providers if p.is_remote)
        self.leased = sum(1 for p in self.providers if p.lease_enabled)
        simple = len(self.providers) == 1 and not self.remote and not self.leased
        self.only = self.providers[0] if simple else None

    @property
    def spans_choice(self) -> bool:
        """A local provider here has siblings (here or elsewhere), so its load matters to a
        pick, or holds leases, whose state other nodes must honour."""
        return (len(self.providers) > 1 and self.remote < len(self.providers)) or self.leased > 0


class Registry:
    """Service name → providers, with the pick policy of each service."""

    def __init__(self, default_policy: str = "round_robin", seed: int | None = None) -> None:
        self._services: dict[str, _Service] = {}
        self._policies: dict[str, ServicePolicy] = {}
        self.default_policy = ServicePolicy(policy=default_policy)
        self._random = random.Random(seed)
        #: its draw, bound once (p2c draws on every pick)
        self._draw = self._random.random
        #: providers ejected, by service (``rsbroker_ejections_total``)
        self.ejections: collections.Counter[str] = collections.Counter()
        #: requests sent to a service's canary (``rsbroker_canary_requests_total``)
        self.canary_requests: collections.Counter[str] = collections.Counter()
        #: services with a local provider that has siblings: whose loads are worth gossiping.
        #: Kept per change, so the load announcer walks only these (a fleet's one-device
        #: services never enter it).
        self.balanced: set[str] = set()
        #: remote services held outside the registry (set by the cluster side)
        self.remote: RemoteServices | None = None

    # -- membership -------------------------------------------------------------------

    def add(self, service: str, provider: Provider) -> None:
        entry = self._services.get(service)
        if entry is None:
            entry = self._services[service] = _Service()
            if self.remote is not None and not provider.is_remote:
                self.remote.attach(service)
        if provider not in entry.providers:
            entry.providers.append(provider)
            entry.changed()
            self._track(service, entry)
            if not provider.is_remote and self.policy(service).policy == "p2c":
                provider.measure_rtt = True
        else:
            entry.split = None  # registered again: its tags may have changed

    def remove(self, service: str, provider: Provider) -> None:
        entry = self._services.get(service)
        if entry is None or provider not in entry.providers:
            return
        entry.providers.remove(provider)
        if entry.current is not None:
            entry.current.pop(id(provider), None)
        if entry.outliers is not None:
            entry.outliers.forget(provider)
        if entry.providers:
            entry.changed()
        else:
            del self._services[service]
        self._track(service, entry if entry.providers else None)

    def _track(self, service: str, entry: _Service | None) -> None:
        if entry is not None and entry.spans_choice:
            self.balanced.add(service)
        else:
            self.balanced.discard(service)

    def services(self) -> dict[str, list[Provider]]:
        return {name: self.providers(name) for name in self.names()}

    def names(self) -> list[str]:
        """Every service with a provider, here or on another node (no provider lists made)."""
        names = list(self._services)
        if self.remote is not None:
            held = self._services
            names.extend({name for name in self.remote.names() if name not in held})
        return names

    def providers(self, service: str) -> list[Provider]:
        entry = self._services.get(service)
        if entry is not None:
            return list(entry.providers)
        return self.remote.view(service) if self.remote is not None else []

    def served_on(self, service: str, node: str, own: str) -> bool:
        """Whether a provider of ``service`` is on ``node`` (``own`` is this node's id): the
        admin API's node filter, without making the providers of a remote service."""
        entry = self._services.get(service)
        if entry is not None:
            return any(getattr(p, "node", own) == node for p in entry.providers)
        return self.remote is not None and self.remote.served_by(service, node)

    def has_local(self, service: str) -> bool:
        """Whether a provider on this node serves ``service``."""
        entry = self._services.get(service)
        return entry is not None and entry.remote < len(entry.providers)

    # -- policies ---------------------------------------------------------------------

    def set_policy(self, service: str, policy: ServicePolicy | None) -> None:
        if policy is None:
            self._policies.pop(service, None)
        else:
            self._policies[service] = policy
        entry = self._services.get(service)
        if entry is not None and (policy or self.default_policy).outlier is None:
            entry.outliers = None  # outlier ejection turned off: nobody stays out
        if entry is not None and (policy or self.default_policy).policy == "p2c":
            for provider in entry.providers:  # sampled from now on (and for as long as they stay)
                if not provider.is_remote:
                    provider.measure_rtt = True

    def policy(self, service: str) -> ServicePolicy:
        return self._policies.get(service, self.default_policy)

    # -- picking ----------------------------------------------------------------------

    def pick(
        self, service: str, now: float, local_only: bool = False, metadata: bytes = b"", metadata_mime: str = ""
    ) -> tuple[Provider | None, str]:
        """Choose a provider for one request. Returns ``(provider, reason_if_none)``.

        ``metadata`` (in ``metadata_mime``) is read only by a service with a canary ``header``.
        """
        entry = self._services.get(service)
        if entry is None:
            return self._pick_sole(service, local_only)
        if entry.only is not None:
            return entry.only, ""
        providers = entry.providers
        policy = self._policies.get(service, self.default_policy)
        if entry.remote:
            if local_only:
                providers = [p for p in providers if not p.is_remote]
            else:
                providers = [p for p in providers if not p.is_remote or p.available]
            if not providers:
                return None, _none_left(service, local_only)
        if entry.outliers is not None and entry.outliers.records:
            usable = entry.outliers.usable  # if all that are left here are ejected, they serve
            providers = [p for p in providers if usable(p, now)] or providers
        if entry.leased:
            providers = [p for p in providers if _has_lease(p, now)]
            if not providers:
                return None, f"no provider for service '{service}' holds a lease with requests left"
        if policy.canary is not None:  # before prefer_local: a canary on another node is still the canary
            split = entry.split
            if split is not None and split[0] is policy.canary and providers is entry.providers:
                canary, stable = split[1], split[2]  # the common case, without a call
            else:
                canary, stable = entry.split_for(policy.canary, providers)
            if canary and stable:  # never refuse a request for the sake of a canary
                if policy.canary.wants_canary(metadata, metadata_mime, self._random.random):
                    providers = canary
                    self.canary_requests[service] += 1
                else:
                    providers = stable
        if entry.remote and policy.prefer_local and not local_only:
            local = [p for p in providers if not p.is_remote]
            if local:
                providers = local
        if len(providers) == 1:
            chosen = providers[0]
        elif policy.policy == "p2c":
            chosen = p2c(providers, self._draw, now)
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

    def _pick_sole(self, service: str, local_only: bool) -> tuple[Provider | None, str]:
        """A service the registry holds no entry for: the one provider of it on another
        node, if any, by the rules :meth:`pick` applies to a lone remote provider."""
        sole = self.remote.sole(service) if self.remote is not None else None
        if sole is None:
            return None, f"no provider for service '{service}'"
        if local_only or not sole.available:
            return None, _none_left(service, local_only)
        return sole, ""

    # -- outcomes (outlier ejection) ------------------------------------------------------

    def provider_failed(self, service: str, provider: Provider, now: float) -> bool:
        """``provider`` answered a request of ``service`` with an error (or timed out); its
        ``failures`` count the errors in a row. True if that ejects it now."""
        policy = self._policies.get(service, self.default_policy).outlier
        entry = self._services.get(service)
        if policy is None or entry is None or provider not in entry.providers:
            return False
        if entry.outliers is None:
            entry.outliers = Outliers()
        if not entry.outliers.failed(provider, provider.failures, len(entry.providers), policy, now):
            return False
        self.ejections[service] += 1
        return True

    def provider_ok(self, provider: Provider, services: Iterable[str]) -> None:
        """``provider`` (of ``services``) answered well after failing: close any circuit."""
        provider.failures = 0
        for service in services:
            entry = self._services.get(service)
            if entry is not None and entry.outliers is not None:
                entry.outliers.succeeded(provider)

    def ejected(self, service: str, provider: Provider, now: float) -> bool:
        """Whether ``service`` holds ``provider`` out now (views and the load gossip)."""
        entry = self._services.get(service)
        outliers = entry.outliers if entry is not None else None
        record = outliers.records.get(provider) if outliers is not None else None
        return record is not None and now < record.until

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


def _none_left(service: str, local_only: bool) -> str:
    """Why a service whose providers are all remote has none to pick now."""
    where = "on this node" if local_only else "reachable (links to its nodes are down)"
    return f"no provider for service '{service}' {where}"


def _has_lease(provider: Provider, now: float) -> bool:
    if not provider.lease_enabled:
        return True
    return provider.lease_remaining > 0 and now < provider.lease_expires
