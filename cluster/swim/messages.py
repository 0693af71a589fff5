"""Gossip messages and their wire form (msgpack arrays), with a strict decoder.

Rules of this module:

* Message type numbers are APPEND-ONLY. Never renumber or reuse one: nodes of different
  versions share a cluster during a rolling upgrade, and an old node must skip what it
  does not know instead of misreading it (:class:`UnknownMessage`; the packet codec skips
  that one message and keeps the rest of the packet).
* A message is ``[type, field, field, ...]``. The decoder checks every field's type and
  bound and raises :class:`DecodeError` - and only that - on anything else. Nothing
  taken from the network is trusted before it passed here. Fields are append-only too:
  a newer release may add fields at the end of a message, and decoders ignore fields
  past the ones they know.
* A push-pull is read item by item: a member record or route that does not decode is
  left out (and counted in :attr:`PushPull.skipped`), never the whole state.
* Names a node announces must be names every node decodes: :data:`MAX_ROUTE_NAME` bounds
  the service and instance of a route, and the routing table refuses to announce more.
* No I/O, no clock. Sealing and packet envelopes live in :mod:`cluster.swim.wire`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Callable, Union

import msgpack

__all__ = [
    "Ack", "Alive", "Dead", "DecodeError", "IndirectPing", "MemberRecord", "Message", "MsgType",
    "Nack", "Ping", "PushPull", "Route", "RouteBatch", "RouteDigest", "RouteGroup", "Suspect", "UnknownMessage",
    "decode_message", "decode_route_item", "encode", "wire_size",
]

MAX_NAME = 128
#: Longest service or instance name a route carries (characters; decoders of every
#: release accept 256). Registration caps service names at 255 UTF-8 bytes
#: (``broker/limits.py``, relay side) so whatever a provider may register, gossip carries.
MAX_ROUTE_NAME = 256
MAX_HOST = 255
MAX_TAGS = 32
MAX_TAG_TEXT = 256
MAX_MEMBERS = 65536
MAX_ROUTES = 1 << 20
U64 = 1 << 64


class DecodeError(ValueError):
    """Bytes or structures that are not a valid gossip message."""


class UnknownMessage(DecodeError):
    """A well-formed message of a type this release does not know (a newer node sent it)."""


class MsgType(enum.IntEnum):
    """Wire type numbers. APPEND-ONLY: never change or reuse a number."""

    PING = 1
    INDIRECT_PING = 2
    ACK = 3
    NACK = 4
    SUSPECT = 5
    ALIVE = 6
    DEAD = 7
    PUSH_PULL = 8
    ROUTE = 9
    #: Many routing entries in one message, grouped by owner (issue 13: fleet-size tables).
    ROUTE_BATCH = 10


class MemberState(enum.IntEnum):
    """A member's state as this node believes it. APPEND-ONLY numbers (they travel in push-pull)."""

    ALIVE = 0
    SUSPECT = 1
    DEAD = 2
    LEFT = 3


# ---- field checkers: each returns the (possibly converted) value or raises DecodeError ----

def _uint(v: Any) -> int:
    if type(v) is not int or not 0 <= v < U64:
        raise DecodeError(f"expected unsigned int, got {type(v).__name__}")
    return v


def _port(v: Any) -> int:
    if type(v) is not int or not 0 < v < 65536:
        raise DecodeError("expected a port number")
    return v


def _bool(v: Any) -> bool:
    if type(v) is not bool:
        raise DecodeError(f"expected bool, got {type(v).__name__}")
    return v


def _text(limit: int) -> Callable[[Any], str]:
    def check(v: Any) -> str:
        if type(v) is not str or len(v) > limit:
            raise DecodeError(f"expected text of at most {limit} characters")
        return v
    return check


_name = _text(MAX_NAME)
_host = _text(MAX_HOST)
_route_name = _text(MAX_ROUTE_NAME)


def _nonempty_name(v: Any) -> str:
    if not _name(v):
        raise DecodeError("empty node name")
    return v


def _tags(v: Any) -> dict[str, str]:
    if type(v) is not dict or len(v) > MAX_TAGS:
        raise DecodeError(f"expected a map of at most {MAX_TAGS} text entries")
    for key, value in v.items():
        if type(key) is not str or type(value) is not str or len(key) > MAX_TAG_TEXT or len(value) > MAX_TAG_TEXT:
            raise DecodeError("tags and metadata must map text to text")
    return v


def _fields(obj: Any, count: int) -> list[Any]:
    """The first ``count`` fields of a message; later fields (a newer release's) are ignored."""
    if type(obj) is not list or len(obj) < count:
        raise DecodeError(f"expected {count} fields")
    return obj


# ---- messages ----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Ping:
    """Are you there? ``target`` names the intended member so that a node now living at
    that address under another name does not answer for it."""

    seq: int
    target: str
    source: str
    TYPE = MsgType.PING

    def to_wire(self) -> list[Any]:
        return [self.TYPE, self.seq, self.target, self.source]

    @classmethod
    def from_wire(cls, f: list[Any]) -> "Ping":
        _fields(f, 4)
        return cls(_uint(f[1]), _name(f[2]), _name(f[3]))


@dataclass(frozen=True, slots=True)
class IndirectPing:
    """Please probe ``target`` at ``host:port`` for me and relay the ack (and, when ``nack``,
    tell me if you got none: Lifeguard uses the missing nacks to judge our own health)."""

    seq: int
    target: str
    host: str
    port: int
    nack: bool
    source: str
    TYPE = MsgType.INDIRECT_PING

    def to_wire(self) -> list[Any]:
        return [self.TYPE, self.seq, self.target, self.host, self.port, self.nack, self.source]

    @classmethod
    def from_wire(cls, f: list[Any]) -> "IndirectPing":
        _fields(f, 7)
        return cls(_uint(f[1]), _nonempty_name(f[2]), _host(f[3]), _port(f[4]), _bool(f[5]), _name(f[6]))


@dataclass(frozen=True, slots=True)
class Ack:
    """Answer to a ping with the same sequence number."""

    seq: int
    TYPE = MsgType.ACK

    def to_wire(self) -> list[Any]:
        return [self.TYPE, self.seq]

    @classmethod
    def from_wire(cls, f: list[Any]) -> "Ack":
        _fields(f, 2)
        return cls(_uint(f[1]))


@dataclass(frozen=True, slots=True)
class Nack:
    """From an indirect prober: I am here, but the target did not answer me."""

    seq: int
    TYPE = MsgType.NACK

    def to_wire(self) -> list[Any]:
        return [self.TYPE, self.seq]

    @classmethod
    def from_wire(cls, f: list[Any]) -> "Nack":
        _fields(f, 2)
        return cls(_uint(f[1]))


@dataclass(frozen=True, slots=True)
class Suspect:
    """``source`` suspects ``node`` at incarnation ``inc``."""

    inc: int
    node: str
    source: str
    TYPE = MsgType.SUSPECT

    def to_wire(self) -> list[Any]:
        return [self.TYPE, self.inc, self.node, self.source]

    @classmethod
    def from_wire(cls, f: list[Any]) -> "Suspect":
        _fields(f, 4)
        return cls(_uint(f[1]), _nonempty_name(f[2]), _nonempty_name(f[3]))


@dataclass(frozen=True, slots=True)
class Alive:
    """``node`` is alive at ``host:port`` with incarnation ``inc`` and metadata ``meta``."""

    inc: int
    node: str
    host: str
    port: int
    meta: dict[str, str] = field(default_factory=dict)
    TYPE = MsgType.ALIVE

    def to_wire(self) -> list[Any]:
        return [self.TYPE, self.inc, self.node, self.host, self.port, self.meta]

    @classmethod
    def from_wire(cls, f: list[Any]) -> "Alive":
        _fields(f, 6)
        return cls(_uint(f[1]), _nonempty_name(f[2]), _host(f[3]), _port(f[4]), _tags(f[5]))


@dataclass(frozen=True, slots=True)
class Dead:
    """``source`` declares ``node`` dead at ``inc``; ``source == node`` means a graceful leave."""

    inc: int
    node: str
    source: str
    TYPE = MsgType.DEAD

    def to_wire(self) -> list[Any]:
        return [self.TYPE, self.inc, self.node, self.source]

    @classmethod
    def from_wire(cls, f: list[Any]) -> "Dead":
        _fields(f, 4)
        return cls(_uint(f[1]), _nonempty_name(f[2]), _nonempty_name(f[3]))


@dataclass(frozen=True, slots=True)
class Route:
    """One routing entry owned by node ``owner``: a provider instance of ``service``.

    Versioned by ``(epoch, seq)``: ``epoch`` identifies the owner's boot (it grows across
    restarts), ``seq`` counts the owner's changes within a boot. ``removed`` marks a tombstone.
    """

    owner: str
    epoch: int
    seq: int
    service: str
    instance: str
    weight: int
    tags: dict[str, str]
    load: int
    removed: bool
    TYPE = MsgType.ROUTE

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.owner, self.service, self.instance)

    @property
    def version(self) -> tuple[int, int]:
        return (self.epoch, self.seq)

    def to_wire(self) -> list[Any]:
        return [self.TYPE, self.owner, self.epoch, self.seq, self.service, self.instance,
                self.weight, self.tags, self.load, self.removed]

    @classmethod
    def from_wire(cls, f: list[Any]) -> "Route":
        _fields(f, 10)
        if f[0] != MsgType.ROUTE:
            raise DecodeError("expected a route")
        return cls(_nonempty_name(f[1]), _uint(f[2]), _uint(f[3]), _route_name(f[4]),
                   _route_name(f[5]), _uint(f[6]), _tags(f[7]), _uint(f[8]), _bool(f[9]))


@dataclass(frozen=True, slots=True)
class MemberRecord:
    """One member as the sender of a push-pull knows it."""

    node: str
    host: str
    port: int
    inc: int
    state: MemberState
    meta: dict[str, str]

    def to_wire(self) -> list[Any]:
        return [self.node, self.host, self.port, self.inc, int(self.state), self.meta]

    @classmethod
    def from_wire(cls, f: Any) -> "MemberRecord":
        _fields(f, 6)
        state = f[4]
        if type(state) is not int or state not in MemberState._value2member_map_:
            raise DecodeError("unknown member state")
        return cls(_nonempty_name(f[0]), _host(f[1]), _port(f[2]), _uint(f[3]), MemberState(state), _tags(f[5]))


@dataclass(frozen=True, slots=True)
class RouteDigest:
    """What the sender holds of one owner's routing entries: the owner's boot ``epoch``,
    the highest change ``seq`` applied, how many live entries, and the XOR of a mix of their
    sequence numbers. Equal (count, mix) mean equal entry sets, so push-pull sends an
    owner's entries only when they differ, and only those newer than ``seq`` when the peer
    is merely behind (Scuttlebutt reconciliation)."""

    owner: str
    epoch: int
    seq: int
    count: int
    mix: int

    def to_wire(self) -> list[Any]:
        return [self.owner, self.epoch, self.seq, self.count, self.mix]

    @classmethod
    def from_wire(cls, f: Any) -> "RouteDigest":
        _fields(f, 5)
        return cls(_nonempty_name(f[0]), _uint(f[1]), _uint(f[2]), _uint(f[3]), _uint(f[4]))


@dataclass(frozen=True, slots=True)
class PushPull:
    """Full state of the sender (anti-entropy), sent over TCP. Routes whose owner is the
    sender are its complete set: anything of that owner missing from them is gone.

    Nodes of issue 13 send ``digests`` instead of ``routes`` (an optional sixth field; a
    five-field push-pull is the older full dump) and answer the peer's digests with a
    :class:`RouteBatch` of the owners whose entries differ."""

    source: str
    join: bool
    members: tuple[MemberRecord, ...]
    routes: tuple[Route, ...]
    digests: tuple[RouteDigest, ...] = ()
    #: member records, routes and digests of the received state that did not decode (not on the wire)
    skipped: int = field(default=0, compare=False)
    TYPE = MsgType.PUSH_PULL

    def to_wire(self) -> list[Any]:
        return [self.TYPE, self.source, self.join, [m.to_wire() for m in self.members],
                [r.to_wire() for r in self.routes], [d.to_wire() for d in self.digests]]

    @classmethod
    def from_wire(cls, f: list[Any]) -> "PushPull":
        _fields(f, 5)
        members, routes = f[3], f[4]
        digests = f[5] if len(f) > 5 else []
        if type(members) is not list or len(members) > MAX_MEMBERS:
            raise DecodeError("bad member list")
        if type(routes) is not list or len(routes) > MAX_ROUTES:
            raise DecodeError("bad route list")
        if type(digests) is not list or len(digests) > MAX_MEMBERS:
            raise DecodeError("bad digest list")
        good_members, bad_members = _each(MemberRecord.from_wire, members)
        good_routes, bad_routes = _each(Route.from_wire, routes)
        good_digests, bad_digests = _each(RouteDigest.from_wire, digests)
        return cls(_nonempty_name(f[1]), _bool(f[2]), good_members, good_routes, good_digests,
                   bad_members + bad_routes + bad_digests)


def _each(decode: Callable[[Any], Any], items: list[Any]) -> tuple[tuple[Any, ...], int]:
    """Decode every item that decodes; the count of those that did not."""
    good = []
    for item in items:
        try:
            good.append(decode(item))
        except DecodeError:
            continue
    return tuple(good), len(items) - len(good)


#: One entry of a :class:`RouteGroup`: ``(seq, service, instance, weight, load, tags, removed)``.
RouteItem = tuple[int, str, str, int, int, dict, bool]


@dataclass(frozen=True, slots=True)
class RouteGroup:
    """Entries of one owner at one boot ``epoch`` (owner and epoch said once, not per entry).
    ``complete``: the owner's complete set as of its change ``upto``, honoured only from the
    owner itself (the batch's source): an entry of it missing here, at or below ``upto``, is
    gone; a newer one (a delta that overtook this group) stays."""

    owner: str
    epoch: int
    complete: bool
    upto: int
    items: tuple[RouteItem, ...]

    def to_wire(self) -> list[Any]:
        return [self.owner, self.epoch, self.complete, self.upto, [list(i) for i in self.items]]

    @classmethod
    def from_wire(cls, f: Any) -> "RouteGroup":
        _fields(f, 5)
        items = f[4]
        if type(items) is not list or len(items) > MAX_ROUTES:
            raise DecodeError("bad route items")
        return cls(_nonempty_name(f[0]), _uint(f[1]), _bool(f[2]), _uint(f[3]), tuple(decode_route_item(i) for i in items))


def decode_route_item(f: Any) -> RouteItem:
    """One :data:`RouteItem` from the wire (:class:`DecodeError` if it is not one)."""
    _fields(f, 7)
    return (_uint(f[0]), _route_name(f[1]), _route_name(f[2]), _uint(f[3]), _uint(f[4]),
            _tags(f[5]), _bool(f[6]))


@dataclass(frozen=True, slots=True)
class RouteBatch:
    """Many routing entries from ``source``, grouped by owner: an owner's batched deltas
    (sent straight to every member), its complete set, or a push-pull answer."""

    source: str
    groups: tuple[RouteGroup, ...]
    TYPE = MsgType.ROUTE_BATCH

    def to_wire(self) -> list[Any]:
        return [self.TYPE, self.source, [g.to_wire() for g in self.groups]]

    @classmethod
    def from_wire(cls, f: list[Any]) -> "RouteBatch":
        _fields(f, 3)
        groups = f[2]
        if type(groups) is not list or len(groups) > MAX_MEMBERS:
            raise DecodeError("bad route groups")
        return cls(_nonempty_name(f[1]), tuple(RouteGroup.from_wire(g) for g in groups))


Message = Union[Ping, IndirectPing, Ack, Nack, Suspect, Alive, Dead, Route, PushPull, RouteBatch]

_DECODERS: dict[int, Callable[[list[Any]], Message]] = {
    MsgType.PING: Ping.from_wire,
    MsgType.INDIRECT_PING: IndirectPing.from_wire,
    MsgType.ACK: Ack.from_wire,
    MsgType.NACK: Nack.from_wire,
    MsgType.SUSPECT: Suspect.from_wire,
    MsgType.ALIVE: Alive.from_wire,
    MsgType.DEAD: Dead.from_wire,
    MsgType.PUSH_PULL: PushPull.from_wire,
    MsgType.ROUTE: Route.from_wire,
    MsgType.ROUTE_BATCH: RouteBatch.from_wire,
}


def decode_message(obj: Any) -> Message:
    """Turn one decoded msgpack array into a message; DecodeError on anything unexpected."""
    if type(obj) is not list or not obj or type(obj[0]) is not int:
        raise DecodeError("a message is a non-empty array starting with its type")
    decoder = _DECODERS.get(obj[0])
    if decoder is None:
        raise UnknownMessage(f"unknown message type {obj[0]}")
    return decoder(obj)


def encode(msg: Message) -> bytes:
    """msgpack bytes of one message (exactly what it adds to a compound packet)."""
    return msgpack.packb(msg.to_wire())


def wire_size(msg: Message) -> int:
    """Bytes ``msg`` takes inside a packet."""
    return len(encode(msg))
