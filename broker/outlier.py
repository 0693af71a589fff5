"""Outlier ejection of providers (circuit breaking), as Envoy's outlier detection does it.

Rules of this module:

* A provider is judged by the node it is connected to, the only node that sees its answers
  first-hand: ``consecutive_errors`` APPLICATION_ERRORs (or timeouts at the service's own
  ``deadline_ms``, reported by ``broker.traffic``) in a row eject it from its service for
  ``base_ejection_ms`` × the number of times it was ejected, capped at ``max_ejection_ms``.
  A request timed out by another node (its edge) arrives here as a plain CANCEL and does not
  count; a requester's own shorter deadline never counts (it could eject anyone). Other nodes see an
  ejected provider as one that takes no requests (its gossiped load says so) and send
  that service's requests to the other providers.
* ``max_ejection_percent`` bounds how many providers of a service are out at once, and
  one provider always stays: a service whose every provider fails keeps answering errors
  rather than REJECTED for all.
* Half-open: when its interval is over, an ejected provider gets one probe at a time
  (it is picked only while it has no open stream). One error ejects it again for longer;
  one success closes the circuit. A provider that stays healthy for as long as its last
  ejection lasted starts again from one ejection.
* Sans-IO: the clock is passed in; the caller counts consecutive errors on the provider
  (a success on the relay's fast path resets that counter with one attribute test).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["OutlierPolicy", "Ejection", "Outliers"]


@dataclass(frozen=True, slots=True)
class OutlierPolicy:
    """The ``outlier`` object of a service policy (config file and config store alike)."""

    #: errors in a row that eject a provider
    consecutive_errors: int = 5
    #: first ejection lasts this long (ms); the n-th lasts n times as long
    base_ejection_ms: int = 30_000
    #: no ejection lasts longer (ms), as Envoy's max_ejection_time
    max_ejection_ms: int = 300_000
    #: at most this share of a service's providers is ejected at once (at least one may be,
    #: unless it is 0: no ejections)
    max_ejection_percent: int = 10

    FIELDS = ("consecutive_errors", "base_ejection_ms", "max_ejection_ms", "max_ejection_percent")

    @classmethod
    def from_obj(cls, obj: object) -> "OutlierPolicy":
        """Parse ``{"consecutive_errors": 5, ...}``; ValueError names the field."""
        if not isinstance(obj, Mapping):
            raise ValueError(f"'outlier' must be an object, got {type(obj).__name__}")
        unknown = set(obj) - set(cls.FIELDS)
        if unknown:
            raise ValueError(
                f"unknown 'outlier' field(s) {', '.join(sorted(map(str, unknown)))}; allowed: {', '.join(cls.FIELDS)}"
            )
        values: dict[str, Any] = {}
        for name in cls.FIELDS:
            if name not in obj:
                continue
            value = obj[name]
            percent = name == "max_ejection_percent"
            if type(value) is not int or not (0 <= value <= 100 if percent else value >= 1):
                bound = "from 0 to 100" if percent else ">= 1"
                raise ValueError(f"'outlier.{name}' must be an integer {bound}, got {value!r}")
            values[name] = value
        policy = cls(**values)
        if policy.max_ejection_ms < policy.base_ejection_ms:
            raise ValueError("'outlier.max_ejection_ms' must not be less than 'outlier.base_ejection_ms'")
        return policy


class Ejection:
    """What one service remembers of one provider it ejected."""

    __slots__ = ("count", "until", "probing")

    def __init__(self) -> None:
        #: ejections so far (the multiplier of the interval)
        self.count = 0
        #: ejected until this time (broker clock, s)
        self.until = 0.0
        #: the interval is over and a probe decides
        self.probing = False


class Outliers:
    """The ejection records of one service, by provider."""

    __slots__ = ("records",)

    def __init__(self) -> None:
        self.records: dict[Any, Ejection] = {}

    def usable(self, provider: Any, now: float) -> bool:
        """Whether ``provider`` may take a request now (half-open: one probe at a time)."""
        record = self.records.get(provider)
        if record is None:
            return True
        if now < record.until:
            return False
        record.probing = True
        return provider.outstanding == 0

    def ejected_now(self, now: float) -> int:
        return sum(1 for r in self.records.values() if now < r.until)

    def failed(self, provider: Any, errors: int, providers: int, policy: OutlierPolicy, now: float) -> bool:
        """``provider`` failed for the ``errors``-th time in a row; True if that ejects it."""
        record = self.records.get(provider)
        if record is not None and now < record.until:
            return False  # still out (a request it had before its ejection ended badly)
        probing = record is not None and record.probing
        if record is not None and not probing and now >= record.until + _interval(record.count, policy):
            record.count = 0  # healthy for as long as it was last out: start over
        if not probing and errors < policy.consecutive_errors:
            return False
        percent = policy.max_ejection_percent
        allowed = min(providers - 1, max(1, providers * percent // 100)) if percent else 0
        if self.ejected_now(now) >= allowed:
            return False
        if record is None:
            record = self.records[provider] = Ejection()
        record.count += 1
        record.until = now + _interval(record.count, policy)
        record.probing = False
        return True

    def succeeded(self, provider: Any) -> None:
        """A probe (or any answer after the interval) succeeded: the circuit closes."""
        record = self.records.get(provider)
        if record is not None and record.probing:
            record.probing = False

    def forget(self, provider: Any) -> None:
        self.records.pop(provider, None)


def _interval(count: int, policy: OutlierPolicy) -> float:
    """Seconds the ``count``-th ejection lasts."""
    return min(policy.base_ejection_ms * count, policy.max_ejection_ms) / 1000.0
