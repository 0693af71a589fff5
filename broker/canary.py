"""Canary routing: a share of a service's requests, or the requests that carry a tag, go to
the providers whose registration tags match.

Rules of this module:

* Providers are split by their registration tags (``{"version": "2"}`` in the provider's
  ``message/x.rsbroker.register.v0`` entry): those that carry every tag of the policy are
  the canary, the others the stable set. A request goes to exactly one of the two sets,
  then the service's load-balancing policy picks within it.
* A request whose tags include every entry of ``header`` goes to the canary, always (the
  deterministic path). Request tags come from a composite metadata entry
  ``message/x.rsbroker.tags.v0`` holding a JSON object of strings, or from routing tags
  after the route written ``key=value``. Unreadable tags are no tags: they can only send
  a request to the stable set, never refuse it.
* Otherwise ``percent`` % of the requests go to the canary, drawn at random per request.
  The node the request enters decides; a request forwarded over a broker link is decided
  again by the far node among its own providers (exact for the tag path, which the far
  node reads from the same metadata; for the percentage it is exact when every node
  holds canary and stable providers, or when a service's canary sits on the entry nodes).
* With no canary provider, or no stable one, nothing is split: requests are never refused
  for the sake of a canary.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from broker import metadata as md
from broker.frames import FrameError

__all__ = ["TAGS_MIME", "CanaryPolicy", "request_tags"]

#: Composite metadata entry carrying a request's tags (JSON object of strings).
TAGS_MIME = "message/x.rsbroker.tags.v0"
#: Header matches remembered per metadata (clients repeat the same bytes); cleared when full.
_MATCH_CACHE_SIZE = 1024
_MATCH_CACHE_MAX_KEY = 512


def _text_map(obj: object, name: str) -> dict[str, str]:
    if not isinstance(obj, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in obj.items()):
        raise ValueError(f"'canary.{name}' must be an object of string values, got {obj!r}")
    return dict(obj)


@dataclass(frozen=True, slots=True)
class CanaryPolicy:
    """The ``canary`` object of a service policy (config file and config store alike)."""

    tags: dict[str, str]
    percent: float = 0.0
    header: dict[str, str] = field(default_factory=dict)
    _matches: dict[bytes, bool] = field(default_factory=dict, compare=False, repr=False)

    FIELDS = ("tags", "percent", "header")

    @classmethod
    def from_obj(cls, obj: object) -> "CanaryPolicy":
        """Parse ``{"tags": {...}, "percent": 10, "header": {...}}``; ValueError names the field."""
        if not isinstance(obj, Mapping):
            raise ValueError(f"'canary' must be an object, got {type(obj).__name__}")
        unknown = set(obj) - set(cls.FIELDS)
        if unknown:
            raise ValueError(f"unknown 'canary' field(s) {', '.join(sorted(map(str, unknown)))}; allowed: tags, percent, header")
        tags = _text_map(obj.get("tags"), "tags")
        if not tags:
            raise ValueError("'canary.tags' must name at least one registration tag")
        percent = obj.get("percent", 0)
        if type(percent) not in (int, float) or not 0 <= percent <= 100:
            raise ValueError(f"'canary.percent' must be a number from 0 to 100, got {percent!r}")
        header = _text_map(obj.get("header", {}), "header")
        if not percent and not header:
            raise ValueError("'canary' needs a 'percent' above 0 or a 'header' to select requests")
        return cls(tags=tags, percent=float(percent), header=header)

    def is_canary(self, provider_tags: Mapping[str, str]) -> bool:
        tags = self.tags
        return all(provider_tags.get(k) == v for k, v in tags.items())

    def wants_canary(self, metadata: bytes, metadata_mime: str, draw: Callable[[], float]) -> bool:
        """Whether this request goes to the canary: by its tags, else by a draw."""
        if self.header:
            hit = self._matches.get(metadata)  # the common case, without a call
            if hit or (hit is None and self._header_matches(metadata, metadata_mime)):
                return True
        return self.percent > 0 and draw() * 100.0 < self.percent

    def split(self, providers: Sequence[Any]) -> tuple[list[Any], list[Any]]:
        """``(canary, stable)`` providers; the registry keeps it per membership change."""
        canary: list[Any] = []
        stable: list[Any] = []
        for p in providers:
            (canary if self.is_canary(p.tags) else stable).append(p)
        return canary, stable

    def _header_matches(self, metadata: bytes, metadata_mime: str) -> bool:
        cache = self._matches
        cacheable = len(metadata) <= _MATCH_CACHE_MAX_KEY
        if cacheable:
            hit = cache.get(metadata)
            if hit is not None:
                return hit
        tags = request_tags(metadata, metadata_mime)
        matched = all(tags.get(k) == v for k, v in self.header.items())
        if cacheable:
            if len(cache) >= _MATCH_CACHE_SIZE:
                cache.clear()
            cache[metadata] = matched
        return matched


def request_tags(metadata: bytes, metadata_mime: str) -> dict[str, str]:
    """A request's tags: the ``message/x.rsbroker.tags.v0`` entry, then ``key=value``
    routing tags after the route (these win). Unreadable tags are no tags."""
    out: dict[str, str] = {}
    try:
        if metadata_mime == md.ROUTING_MIME:
            routing = md.parse_routing(metadata)
        else:
            routing = []
            for mime, content in md.iter_composite(metadata):
                if mime == TAGS_MIME:
                    obj = json.loads(bytes(content).decode("utf-8"))
                    if isinstance(obj, dict):
                        out.update((k, v) for k, v in obj.items() if isinstance(k, str) and isinstance(v, str))
                elif mime == md.ROUTING_MIME and not routing:
                    routing = md.parse_routing(bytes(content))
    except (FrameError, ValueError, UnicodeDecodeError, RecursionError):
        return {}
    for tag in routing[1:]:
        key, sep, value = tag.partition("=")
        if sep:
            out[key] = value
    return out
