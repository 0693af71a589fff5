"""Bounds every client is held to, and the maxima gossip can always carry.

Rules of this module:

* Each limit has one name, the name of its setting (``max_fragments`` ↔ ``--max-fragments``
  ↔ ``RSBROKER_MAX_FRAGMENTS``). The error a peer gets names it, and
  ``rsbroker_limit_hits_total{limit=<name>}`` counts it (``Broker.limit_hit``).
* The registration name maxima below are ceilings, not defaults only: a routing entry
  (``cluster.swim.messages.Route``: owner, service, instance, tags) built from the largest
  names allowed here must fit one gossip packet (1400 bytes, sealed), or peers would drop
  the packet and the node with it. Settings may lower them, never raise them; the cluster
  package may import these constants to size its own checks.
"""

from __future__ import annotations

from dataclasses import dataclass

from broker.frames import ErrorCode, FrameError

#: Largest service name a provider may register, UTF-8 bytes: also the routing tag maximum.
GOSSIP_MAX_SERVICE_BYTES = 255
#: Largest instance name, UTF-8 bytes.
GOSSIP_MAX_INSTANCE_BYTES = 128
#: Most tags on one registration, and the largest tag key and value, UTF-8 bytes.
GOSSIP_MAX_TAGS = 8
GOSSIP_MAX_TAG_KEY_BYTES = 32
GOSSIP_MAX_TAG_VALUE_BYTES = 64


class LimitExceeded(FrameError):
    """A peer went past a configured limit; ``limit`` is the setting's name."""

    def __init__(self, limit: str, message: str, code: ErrorCode = ErrorCode.CONNECTION_ERROR) -> None:
        super().__init__(message, code)
        self.limit = limit


def exceeded(limit: str, value: int | float, unit: str, what: str, code: ErrorCode) -> LimitExceeded:
    """The error for ``what`` going past ``limit`` = ``value``: '<what> exceeds <limit> (<value> <unit>)'."""
    shown = f"{value:g}" if isinstance(value, float) else str(value)
    return LimitExceeded(limit, f"{what} exceeds {limit} ({shown}{' ' + unit if unit else ''})", code)


def _short(name: str) -> str:
    """A name quoted for an error message, cut short: the peer sent it, it may be huge."""
    return repr(name) if len(name) <= 40 else repr(name[:40]) + "…"


@dataclass(frozen=True, slots=True)
class NameLimits:
    """What one registration may hold (see the module note for the ceilings)."""

    max_services: int = 256
    max_service_name_bytes: int = GOSSIP_MAX_SERVICE_BYTES
    max_instance_name_bytes: int = GOSSIP_MAX_INSTANCE_BYTES
    max_tags: int = GOSSIP_MAX_TAGS
    max_tag_key_bytes: int = GOSSIP_MAX_TAG_KEY_BYTES
    max_tag_value_bytes: int = GOSSIP_MAX_TAG_VALUE_BYTES

    def check(self, services: list[str], instance: str, tags: dict[str, str], code: ErrorCode) -> None:
        """Raise LimitExceeded for the first name past its limit."""
        if len(services) > self.max_services:
            raise exceeded("max_services", self.max_services, "", f"registration of {len(services)} services", code)
        for service in services:
            if len(service.encode()) > self.max_service_name_bytes:
                raise exceeded("max_service_name_bytes", self.max_service_name_bytes, "bytes", f"service name {_short(service)}", code)
        if len(instance.encode()) > self.max_instance_name_bytes:
            raise exceeded("max_instance_name_bytes", self.max_instance_name_bytes, "bytes", f"instance name {_short(instance)}", code)
        if len(tags) > self.max_tags:
            raise exceeded("max_tags", self.max_tags, "", f"registration of {len(tags)} tags", code)
        for key, value in tags.items():
            if len(key.encode()) > self.max_tag_key_bytes:
                raise exceeded("max_tag_key_bytes", self.max_tag_key_bytes, "bytes", f"tag key {_short(key)}", code)
            if len(value.encode()) > self.max_tag_value_bytes:
                raise exceeded("max_tag_value_bytes", self.max_tag_value_bytes, "bytes", f"value of tag {_short(key)}", code)


class SetupRate:
    """How many SETUPs a node accepts per second, and when a refused client should come back.

    A token bucket of ``per_s`` tokens (a second's worth of burst), refilled continuously.
    A refused client is told to retry at the next free slot after those already promised
    to clients refused before it, so a storm of refusals comes back spread at the rate the
    node accepts, not as one herd a second later. ``per_s`` of 0 turns the limit off.
    Sans-IO: the caller passes its clock.
    """

    def __init__(self, per_s: int) -> None:
        self.per_s = per_s
        self._tokens = float(per_s)
        self._at: float | None = None
        #: the latest retry time promised to a refused client (clock seconds)
        self._promised = 0.0

    def retry_after_ms(self, now: float) -> int:
        """0 to accept a SETUP now, else the milliseconds the client should wait."""
        if self.per_s <= 0:
            return 0
        if self._at is not None:
            self._tokens = min(float(self.per_s), self._tokens + (now - self._at) * self.per_s)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0
        self._promised = max(self._promised, now + (1.0 - self._tokens) / self.per_s) + 1.0 / self.per_s
        return max(1, int((self._promised - now) * 1000 + 0.999))
