"""Metadata that names one route to a bare-routing reader and another to a composite reader.

Used by the route-integrity tests (issue 11 §2) on one node and across broker links.
"""

from __future__ import annotations

from broker import metadata as md

__all__ = ["cache_colliding_metadata", "confused_metadata"]


def confused_metadata(allowed: str, executed: str) -> bytes:
    """Bytes whose routing reading names ``allowed`` and whose composite reading names ``executed``.

    Routing reading: tag ``allowed``, then one tag covering the rest. Composite reading: the
    length byte of ``allowed`` is taken for a custom MIME type's length, so the first entry's
    type is ``allowed`` plus one byte, with empty content; the second entry is a routing entry
    (custom MIME spelling, so every byte stays valid UTF-8 for the routing reading) naming
    ``executed``.
    """
    mime = md.ROUTING_MIME.encode()
    tags = md.routing(executed)
    second = bytes((len(mime) - 1,)) + mime + len(tags).to_bytes(3, "big") + tags
    rest = b"\x00\x00\x00" + second
    raw = allowed.encode()
    assert len(rest) < 0x80 and len(raw) < 0x80
    return bytes((len(raw),)) + raw + bytes((len(rest),)) + rest


def cache_colliding_metadata(allowed: str, executed: str) -> tuple[bytes, bytes]:
    """``(tags, composite)``: bare routing tags naming ``allowed``, and composite metadata naming
    ``executed`` that is the same bytes behind one ``R``.

    A route cache keyed by ``b"R" + tags`` for bare routing and by the bytes themselves for
    composite metadata would answer the composite request with the route checked for the tags.
    Composite reading: ``R`` (0x52) is the length byte of an 83-byte custom MIME type spanning the
    tags' first bytes, with empty content, then a routing entry (custom MIME spelling) naming
    ``executed``; routing reading: tag ``allowed``, then one tag covering the rest.
    """
    mime = md.ROUTING_MIME.encode()
    routing = md.routing(executed)
    second = bytes((len(mime) - 1,)) + mime + len(routing).to_bytes(3, "big") + routing
    raw = allowed.encode()
    rest = b"a" * (81 - len(raw)) + b"\x00\x00\x00" + second  # the MIME type ends 83 bytes in
    assert len(raw) < 81 and len(rest) < 0x80
    tags = bytes((len(raw),)) + raw + bytes((len(rest),)) + rest
    return tags, b"R" + tags
