"""The metadata a client puts in its SETUP and on its requests, for either client library.

* a provider's registration entry (``message/x.rsbroker.register.v0``),
* a bearer token (``message/x.rsocket.authentication.v0``),
* the opt-in to topology pushes (``message/x.rsbroker.topology.v0``),
* the route of a request (``message/x.rsocket.routing.v0``).

:mod:`broker.client` and the rsocket-py helpers (:mod:`broker.client.rsocketpy`) both build
their SETUP here, so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Iterable

from broker import metadata as md
from broker.auth.metadata import encode_bearer
from broker.frames import setup_frame

__all__ = ["registration", "route", "setup_metadata", "client_setup_frame"]


def route(path: str, token: str | None = None) -> bytes:
    """Composite metadata for one request to ``path`` (``service.method``)."""
    out = md.route_metadata(path)
    if token:
        out += md.composite_entry(md.AUTH_MIME, encode_bearer(token))
    return out


def registration(
    services: Iterable[str], instance: str, weight: int = 1, tags: dict[str, str] | None = None
) -> md.Registration:
    return md.Registration(services=tuple(services), instance=instance, weight=weight, tags=dict(tags or {}))


def setup_metadata(reg: md.Registration | None = None, token: str | None = None, topology: bool = False) -> bytes:
    """SETUP metadata: the registration entry, a bearer token, the topology opt-in — each when given."""
    out = b""
    if reg is not None:
        out += md.composite_entry(md.REGISTER_MIME, reg.to_json())
    if token:
        out += md.composite_entry(md.AUTH_MIME, encode_bearer(token))
    if topology:
        out += md.composite_entry(md.TOPOLOGY_MIME, b"{}")
    return out


def client_setup_frame(
    *,
    services: Iterable[str],
    instance: str,
    weight: int,
    tags: dict[str, str] | None,
    token: str | None,
    topology: bool,
    data_mime: str,
    keepalive_s: float,
    max_lifetime_s: float,
) -> bytes:
    """The SETUP frame of a :mod:`broker.client` connection."""
    service_list = list(services)
    reg = registration(service_list, instance, weight, tags) if service_list else None
    metadata = setup_metadata(reg, token, topology)
    return setup_frame(
        keepalive_ms=max(1, int(keepalive_s * 1000)),
        max_lifetime_ms=max(1, int(max_lifetime_s * 1000)),
        metadata_mime=md.COMPOSITE_MIME,
        data_mime=data_mime,
        metadata=metadata or None,
    )
