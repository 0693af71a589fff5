"""Packets: compound envelope, sealing, replay protection, drop counters.

A packet (one UDP datagram, or one length-prefixed message on the TCP channel) is
``Keyring.seal(msgpack([version, ts_ms, packet_id, [message, ...]]), aad=b"gossip")``
- or the msgpack bytes alone when the cluster runs without a key. Several messages
travel in one packet (compound packing): a ping plus the gossip that rides on it.

Versions (rolling upgrades): ``version`` is the sender's wire version, :data:`WIRE_VERSION`.
Every version keeps the first four envelope fields as they are; a newer one may only
append fields (which older nodes ignore) and message types (which older nodes skip).
So a receiver accepts any version from 1 up, and reads a packet message by message: a
message of an unknown type, or one that does not decode, is skipped and counted
(``dropped_message_unknown``, ``dropped_message_malformed``) and the rest of the packet
is used - one bad or new message never costs a node its probes and acks.

Replays: AES-GCM proves who sealed a packet, not when. Each envelope carries the sender's
wall-clock time and a random 64-bit id; a packet further than ``max_clock_skew_s`` from
our clock, or whose id we saw within twice that window, is dropped. Nodes of one cluster
must therefore keep their clocks within that skew (NTP does far better).

Every packet that is dropped is counted by reason in :attr:`PacketCodec.stats`; nothing
is dropped silently. This module does no I/O and reads no clock: callers pass ``wall``.
"""

from __future__ import annotations

import collections
from typing import Callable, Sequence

import msgpack

from cluster.crypto import OVERHEAD as SEAL_OVERHEAD
from cluster.crypto import DecryptError, Keyring

from .messages import DecodeError, Message, PushPull, UnknownMessage, decode_message

__all__ = ["ENVELOPE_OVERHEAD", "Dropped", "PacketCodec", "ReplayGuard", "GOSSIP_AAD"]

#: Wire version this node sends. APPEND-ONLY: a new version may add envelope fields at
#: the end and new message types, never change the meaning of existing ones.
#: 1: [version, ts_ms, packet_id, messages]; receivers skip unknown messages.
#: 2: adds ROUTE_BATCH (type 10) and route digests as push-pull's sixth field.
WIRE_VERSION = 2
#: Associated data binding sealed gossip to its channel (see cluster.crypto).
GOSSIP_AAD = b"gossip"
#: Worst-case bytes the envelope adds around its messages: array header, version,
#: uint64 timestamp, uint64 id, array-of-messages header (array16).
ENVELOPE_OVERHEAD = 1 + 1 + 9 + 9 + 3
#: Largest plaintext accepted from a TCP frame: a full push-pull of a big cluster.
MAX_FRAME = 32 * 1024 * 1024
_UNPACK_LIMITS = dict(max_str_len=1 << 16, max_bin_len=1 << 16, max_array_len=1 << 20, max_map_len=1 << 10)


class Dropped(Exception):
    """A packet was refused; ``reason`` is the counter that was incremented."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class ReplayGuard:
    """Remembers packet ids for ``2 * skew`` seconds and refuses stale timestamps."""

    def __init__(self, skew_s: float) -> None:
        self._skew_ms = int(skew_s * 1000)
        self._seen: set[int] = set()
        self._expiry: collections.deque[tuple[float, int]] = collections.deque()

    def check(self, packet_id: int, ts_ms: int, wall: float) -> None:
        """Raise Dropped('stale'|'replay') or remember the id."""
        now_ms = int(wall * 1000)
        if abs(ts_ms - now_ms) > self._skew_ms:
            raise Dropped("stale", f"timestamp {ts_ms - now_ms} ms off")
        while self._expiry and self._expiry[0][0] <= now_ms:
            self._seen.discard(self._expiry.popleft()[1])
        if packet_id in self._seen:
            raise Dropped("replay")
        self._seen.add(packet_id)
        self._expiry.append((now_ms + 2 * self._skew_ms, packet_id))


class PacketCodec:
    """Seals outgoing message lists into packets and opens incoming ones."""

    def __init__(
        self,
        keyring: Keyring | None,
        *,
        max_clock_skew_s: float,
        rand64: Callable[[], int],
        aad: bytes = GOSSIP_AAD,
    ) -> None:
        self._keyring = keyring
        self._aad = aad
        self._rand64 = rand64
        self._guard = ReplayGuard(max_clock_skew_s)
        self.stats: collections.Counter[str] = collections.Counter()

    def set_keyring(self, keyring: Keyring) -> None:
        """Rotate keys live: seal with the new primary, open with any key of the new ring."""
        if self._keyring is None:
            raise ValueError("an unsealed codec cannot start sealing: restart the node with a key")
        self._keyring = keyring

    @property
    def overhead(self) -> int:
        """Bytes a packet adds around its messages (envelope, plus the seal when keyed)."""
        return ENVELOPE_OVERHEAD + (SEAL_OVERHEAD if self._keyring else 0)

    def seal(self, messages: Sequence[Message], wall: float) -> bytes:
        """One packet holding ``messages`` in order."""
        plain = msgpack.packb(
            [WIRE_VERSION, int(wall * 1000), self._rand64(), [m.to_wire() for m in messages]]
        )
        data = self._keyring.seal(plain, self._aad) if self._keyring else plain
        self.stats["packets_out"] += 1
        self.stats["bytes_out"] += len(data)
        return data

    def open(self, data: bytes, wall: float) -> list[Message]:
        """The messages of one packet; raises Dropped (already counted) if it is refused."""
        try:
            messages = self._open(data, wall)
        except Dropped as drop:
            self.stats[f"dropped_{drop.reason}"] += 1
            raise
        self.stats["packets_in"] += 1
        self.stats["bytes_in"] += len(data)
        return messages

    def _open(self, data: bytes, wall: float) -> list[Message]:
        if len(data) > MAX_FRAME:
            raise Dropped("oversize", f"{len(data)} bytes")
        if self._keyring:
            try:
                plain = self._keyring.open(data, self._aad)
            except DecryptError as exc:
                raise Dropped("decrypt", str(exc)) from None
        else:
            plain = data
        try:
            envelope = msgpack.unpackb(plain, raw=False, strict_map_key=True, **_UNPACK_LIMITS)
        except Exception as exc:  # msgpack raises several types on garbage; all mean "not ours"
            raise Dropped("decode", f"not msgpack ({type(exc).__name__})") from None
        if (
            type(envelope) is not list or len(envelope) < 4 or type(envelope[0]) is not int or envelope[0] < 1
            or type(envelope[1]) is not int or type(envelope[2]) is not int or type(envelope[3]) is not list
        ):
            raise Dropped("decode", "bad envelope")
        self._guard.check(envelope[2], envelope[1], wall)
        return [m for m in map(self._message, envelope[3]) if m is not None]

    def _message(self, obj: object) -> Message | None:
        """One message of a packet, or None (counted) when it is unknown or unreadable."""
        try:
            msg = decode_message(obj)
        except UnknownMessage:
            self.stats["dropped_message_unknown"] += 1
            return None
        except DecodeError:
            self.stats["dropped_message_malformed"] += 1
            return None
        if isinstance(msg, PushPull) and msg.skipped:
            self.stats["dropped_message_malformed"] += msg.skipped
        return msg
