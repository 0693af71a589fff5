"""Metadata that names one route to a bare-routing reader and another to a composite reader.

Used by the route-integrity tests (issue 11 §2) on one node and across broker links.
"""

from __future__ import annotations

from broker import metadata as md

__all__ = ["confused_metadata"]


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
