"""Who asked: the principal entry the broker adds to requests for services that opted in.

A provider behind the broker cannot see the requester's credentials: the SETUP that carried
them ended at the broker. For a service whose policy says ``"forward_principal": true``
(config file ``[services."<svc>"]`` or config store ``services/<svc>``), the node where the
requester authenticated appends one composite entry, ``message/x.rsbroker.principal.v0``
(:data:`broker.metadata.PRINCIPAL_MIME`), holding the principal's subject in UTF-8; a broker
link carries it to the provider's node unchanged. ``broker.client``'s ``Request.principal``
reads it.

Rules this module keeps:

* **Only the broker writes the entry.** A request or METADATA_PUSH from a client connection
  that carries one itself is refused (INVALID) — on every service, opted in or not, since a
  provider cannot tell a forged entry from a forwarded one. Broker links are trusted: the
  node at their other end applied this rule at its edge and proved the cluster key.
* **The default path pays almost nothing:** the check is one ``bytes.find`` of the metadata
  (``in`` would raise and clear a TypeError inside CPython first: twice the cost), read in
  full only when the MIME type's bytes appear; nothing is added unless the service opted in.
* Anonymous requesters (authentication off, protected mode) have nobody to name: no entry.
* The MIME type is matched exactly, as ``Request.principal`` reads it: an entry spelled in
  other case is some other entry to the broker and to the client alike.
"""

from __future__ import annotations

from typing import Any

from broker import metadata as md
from broker.frames import ErrorCode, FrameError

__all__ = ["MARKER", "forged", "outgoing"]

#: the entry's MIME type as it appears in composite metadata (a custom type is spelled out)
MARKER = md.PRINCIPAL_MIME.encode("ascii")

_REFUSAL = (
    f"request metadata may not carry '{md.PRINCIPAL_MIME}': only the broker sets who asked "
    "(services with forward_principal get it from the requester's authenticated identity)"
)


def forged(metadata: bytes, metadata_mime: str, max_entries: int) -> str:
    """Why a client's request metadata may not pass (it carries a principal entry), or ''.

    Call it when :data:`MARKER` occurs in ``metadata`` (``metadata.find(MARKER) >= 0``): the
    bytes may also sit inside another entry (a routing tag, the content of a custom entry), so
    the entries are read to tell. Bare routing metadata has no entries at all (the broker
    re-encodes it for providers). Metadata that does not read is refused too: the route was
    read from it already, so this never happens unless the two readers disagree.
    """
    if metadata_mime != md.COMPOSITE_MIME:
        return ""
    try:
        for mime, _, _ in md.entry_spans(metadata, ErrorCode.INVALID, max_entries):
            if mime == md.PRINCIPAL_MIME:
                return _REFUSAL
    except FrameError as exc:
        return f"unreadable request metadata: {exc}"
    return ""


def outgoing(session: Any, route: str, metadata: bytes) -> bytes:
    """The composite metadata a request from ``session`` travels to its provider with.

    ``metadata`` itself (the same object) when nothing changes; bare routing metadata
    re-encoded as composite (every provider and link reads composite); plus the principal
    entry when the route's service opted in and the requester is authenticated here (not a
    broker link, whose requests were stamped at their edge).
    """
    if session.metadata_mime == md.ROUTING_MIME:
        metadata = md.for_composite_peer(metadata, md.ROUTING_MIME)
    if session.is_link or md.service_of(route) not in session.broker.forward_principal:
        return metadata
    principal = session.principal
    if principal is None or principal.source == "anonymous":
        return metadata
    return metadata + md.composite_entry(md.PRINCIPAL_MIME, principal.name.encode("utf-8"))
