"""Composite metadata, routing tags and the registration entry.

Readers take bytes from the network and raise :class:`~broker.frames.FrameError`
(code INVALID for a request's metadata, INVALID_SETUP when called for a SETUP) with a
specific message; builders produce what rsocket clients and the broker itself send.

Wire formats (RSocket extensions):
* composite metadata: entries of ``mime | u24 length | bytes`` where ``mime`` is one byte
  ``0x80 | id`` for a well-known type or ``len-1`` followed by that many ASCII bytes;
* routing (``message/x.rsocket.routing.v0``): tags of ``u8 length | UTF-8 bytes``;
* registration (``message/x.rsbroker.register.v0``): UTF-8 JSON, see :class:`Registration`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Iterator

from broker.frames import ErrorCode, FrameError
from broker.limits import NameLimits, exceeded

COMPOSITE_MIME = "message/x.rsocket.composite-metadata.v0"
ROUTING_MIME = "message/x.rsocket.routing.v0"
AUTH_MIME = "message/x.rsocket.authentication.v0"
REGISTER_MIME = "message/x.rsbroker.register.v0"
TOPOLOGY_MIME = "message/x.rsbroker.topology.v0"
#: SETUP entry that marks a connection as a broker-to-broker link (JSON: node id and proof)
LINK_MIME = "message/x.rsbroker.link.v0"
#: a requester's deadline for one request: ASCII decimal milliseconds from its arrival
DEADLINE_MIME = "message/x.rsbroker.deadline.v0"
#: who asked (UTF-8 subject of the requester's authenticated principal), set by the broker
#: on requests to services whose policy has ``forward_principal``; never taken from a client
PRINCIPAL_MIME = "message/x.rsbroker.principal.v0"

#: Well-known MIME ids used by the composite metadata extension (subset the broker needs).
WELL_KNOWN: dict[int, str] = {
    0x00: "application/avro",
    0x01: "application/cbor",
    0x02: "application/graphql",
    0x03: "application/gzip",
    0x04: "application/javascript",
    0x05: "application/json",
    0x06: "application/octet-stream",
    0x07: "application/pdf",
    0x08: "application/vnd.apache.thrift.binary",
    0x09: "application/vnd.google.protobuf",
    0x0A: "application/xml",
    0x0B: "application/zip",
    0x0C: "audio/aac",
    0x0D: "audio/mp3",
    0x0E: "audio/mp4",
    0x0F: "audio/mpeg3",
    0x10: "audio/mpeg",
    0x11: "audio/ogg",
    0x12: "audio/opus",
    0x13: "audio/vorbis",
    0x14: "image/bmp",
    0x15: "image/gif",
    0x16: "image/heic-sequence",
    0x17: "image/heic",
    0x18: "image/heif-sequence",
    0x19: "image/heif",
    0x1A: "image/jpeg",
    0x1B: "image/png",
    0x1C: "image/tiff",
    0x1D: "multipart/mixed",
    0x1E: "text/css",
    0x1F: "text/csv",
    0x20: "text/html",
    0x21: "text/plain",
    0x22: "text/xml",
    0x23: "video/H264",
    0x24: "video/H265",
    0x25: "video/VP8",
    0x26: "application/x-hessian",
    0x27: "application/x-java-object",
    0x28: "application/cloudevents+json",
    0x29: "application/x-capnp",
    0x2A: "application/x-flatbuffers",
    0x7A: "message/x.rsocket.mime-type.v0",
    0x7B: "message/x.rsocket.accept-mime-types.v0",
    0x7C: AUTH_MIME,
    0x7D: "message/x.rsocket.tracing-zipkin.v0",
    0x7E: ROUTING_MIME,
    0x7F: COMPOSITE_MIME,
}
_WELL_KNOWN_IDS = {mime: ident for ident, mime in WELL_KNOWN.items()}


#: Default bound on composite entries read from one piece of metadata (``max_metadata_entries``):
#: routing, authentication, tracing and a few MIME hints are what real clients send.
MAX_ENTRIES = 64


def iter_composite(
    metadata: bytes, code: ErrorCode = ErrorCode.INVALID, max_entries: int = MAX_ENTRIES
) -> Iterator[tuple[str, bytes]]:
    """Yield ``(mime, content)`` for each entry of composite metadata (see :func:`entry_spans`)."""
    for mime, start, end in entry_spans(metadata, code, max_entries):
        yield mime, metadata[start:end]


def entry_spans(
    metadata: bytes, code: ErrorCode = ErrorCode.INVALID, max_entries: int = MAX_ENTRIES
) -> Iterator[tuple[str, int, int]]:
    """Yield ``(mime, start, end)`` for each entry of composite metadata: where its content lies.

    Linear in the metadata's length; more than ``max_entries`` entries raise LimitExceeded
    before the next one is read, so empty entries (4 bytes each) cannot make a peer's
    metadata cost a million iterations.
    """
    pos, end = 0, len(metadata)
    count = 0
    while pos < end:
        count += 1
        if count > max_entries:
            raise exceeded("max_metadata_entries", max_entries, "", "composite metadata entry count", code)
        first = metadata[pos]
        pos += 1
        if first & 0x80:
            ident = first & 0x7F
            mime = WELL_KNOWN.get(ident, f"well-known/0x{ident:02x}")
        else:
            mlen = first + 1
            if pos + mlen > end:
                raise FrameError(f"composite metadata MIME type of {mlen} bytes runs past the metadata", code)
            try:
                mime = metadata[pos : pos + mlen].decode("ascii")
            except UnicodeDecodeError:
                raise FrameError("composite metadata MIME type is not ASCII", code) from None
            pos += mlen
        if end - pos < 3:
            raise FrameError(f"composite metadata entry '{mime}' has no length", code)
        length = (metadata[pos] << 16) | (metadata[pos + 1] << 8) | metadata[pos + 2]
        pos += 3
        if pos + length > end:
            raise FrameError(f"composite metadata entry '{mime}' of {length} bytes runs past the metadata", code)
        yield mime, pos, pos + length
        pos += length


def parse_routing(tags: bytes, code: ErrorCode = ErrorCode.INVALID) -> list[str]:
    """Decode routing tags."""
    out: list[str] = []
    pos, end = 0, len(tags)
    while pos < end:
        length = tags[pos]
        pos += 1
        if pos + length > end:
            raise FrameError(f"routing tag of {length} bytes runs past the metadata", code)
        try:
            out.append(tags[pos : pos + length].decode("utf-8"))
        except UnicodeDecodeError:
            raise FrameError("routing tag is not UTF-8", code) from None
        pos += length
    return out


def route_of(metadata: bytes, metadata_mime: str, max_entries: int = MAX_ENTRIES) -> str | None:
    """The route (first routing tag) of a request's metadata, or None when it has none.

    Composite metadata with more than one routing entry is refused: readers differ on
    which one counts (rsocket-py takes the first, Spring's extractor keeps the last), and
    the route the broker checks must be the one every provider runs.
    """
    routing = metadata if metadata_mime == ROUTING_MIME else routing_entry(metadata, max_entries)[0]
    return first_route_tag(routing) if routing is not None else None


def first_route_tag(routing: bytes) -> str | None:
    """The route named by a routing entry's content (its first tag), or None when it has no tag."""
    tags = parse_routing(routing)
    return tags[0] if tags else None


def routing_entry(
    metadata: bytes, max_entries: int = MAX_ENTRIES, also: str = ""
) -> tuple[bytes | None, tuple[int, int] | None]:
    """Content of the one routing entry of composite metadata, and where the first ``also``
    entry's content lies (``(start, end)``) or None.

    One pass over the whole metadata, checking every entry as :func:`route_of` does, and a
    second routing entry is refused: the route the broker checks must be the one every
    provider runs.
    """
    routing: bytes | None = None
    extra: tuple[int, int] | None = None
    count = 0
    for mime, start, end in entry_spans(metadata, ErrorCode.INVALID, max_entries):
        if mime == ROUTING_MIME:
            count += 1
            routing = metadata[start:end] if count == 1 else routing
        elif mime == also and extra is None:
            extra = (start, end)
    if count > 1:
        raise FrameError(f"request metadata has {count} routing entries; exactly one is allowed")
    return routing, extra


def for_composite_peer(metadata: bytes, metadata_mime: str) -> bytes:
    """``metadata`` as a peer that reads composite metadata must get it to read the same route.

    Bare routing tags (``metadata_mime`` is the routing MIME type) become one composite
    routing entry holding the same tags; composite metadata is returned as it is. Every
    provider and every broker link reads composite metadata (registration needs it), so
    this is the only conversion the relay makes.
    """
    if metadata_mime == ROUTING_MIME:
        return composite_entry(ROUTING_MIME, metadata)
    return metadata


def service_of(route: str) -> str:
    """``com.acme.greeter.hello`` → ``com.acme.greeter``; a route without a dot is its own service."""
    dot = route.rfind(".")
    return route[:dot] if dot > 0 else route


def find_entry(
    metadata: bytes, mime: str, code: ErrorCode = ErrorCode.INVALID, max_entries: int = MAX_ENTRIES
) -> bytes | None:
    """Content of the first composite entry of type ``mime``, or None."""
    for entry_mime, content in iter_composite(metadata, code, max_entries):
        if entry_mime == mime:
            return content
    return None


@dataclass(frozen=True, slots=True)
class Registration:
    """What a provider announces: the services it serves and how to weigh it."""

    services: tuple[str, ...]
    instance: str
    weight: int = 1
    tags: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(
        cls,
        raw: bytes,
        default_instance: str,
        code: ErrorCode = ErrorCode.INVALID_SETUP,
        limits: NameLimits = NameLimits(),
    ) -> "Registration":
        """Validate a registration entry; every problem gets its own message, and names
        past ``limits`` (which gossip could not carry) raise LimitExceeded."""
        try:
            obj = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise FrameError(f"registration entry is not UTF-8 JSON: {exc}", code) from None
        except RecursionError:
            # json.loads recurses per nesting level; a peer must not reach past the stack
            raise FrameError("registration entry is not UTF-8 JSON: nested too deeply", code) from None
        if not isinstance(obj, dict):
            raise FrameError("registration entry must be a JSON object", code)
        services = obj.get("services", [])
        if not isinstance(services, list) or not all(isinstance(s, str) and s.strip() for s in services):
            raise FrameError("registration 'services' must be a list of non-empty strings", code)
        instance = obj.get("instance", default_instance)
        if not isinstance(instance, str) or not instance:
            raise FrameError("registration 'instance' must be a non-empty string", code)
        weight = obj.get("weight", 1)
        if not isinstance(weight, int) or isinstance(weight, bool) or not 0 < weight <= 1_000_000:
            raise FrameError("registration 'weight' must be an integer from 1 to 1000000", code)
        tags = obj.get("tags", {})
        if not isinstance(tags, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
            raise FrameError("registration 'tags' must be an object of string values", code)
        limits.check(services, instance, tags, code)
        return cls(services=tuple(dict.fromkeys(services)), instance=instance, weight=weight, tags=dict(tags))

    def to_json(self) -> bytes:
        return json.dumps(
            {"services": list(self.services), "instance": self.instance, "weight": self.weight, "tags": self.tags}
        ).encode()


# ---------------------------------------------------------------------------------------
# Builders


def composite_entry(mime: str, content: bytes) -> bytes:
    """One composite metadata entry, using the well-known id where there is one."""
    ident = _WELL_KNOWN_IDS.get(mime)
    if ident is not None:
        head = bytes((0x80 | ident,))
    else:
        raw = mime.encode("ascii")
        if not 1 <= len(raw) <= 128:
            raise ValueError("a custom MIME type must be 1 to 128 ASCII bytes")
        head = bytes((len(raw) - 1,)) + raw
    return head + len(content).to_bytes(3, "big") + content


def routing(*tags: str) -> bytes:
    out = bytearray()
    for tag in tags:
        raw = tag.encode("utf-8")
        if len(raw) > 255:
            raise ValueError("a routing tag is at most 255 bytes")
        out += bytes((len(raw),)) + raw
    return bytes(out)


def route_metadata(route: str) -> bytes:
    """Composite metadata holding just a route, what a requester puts on each request."""
    return composite_entry(ROUTING_MIME, routing(route))

