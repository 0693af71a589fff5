"""Piggyback queue: what to gossip next, and how often (memberlist's TransmitLimitedQueue).

Each broadcast is sent at most ``retransmit_limit(N)`` times; the least-sent go first
(newest first among equals), so fresh news spreads before old news is repeated. A new
broadcast about the same thing (same key: a member's name, a routing entry's key)
replaces the old one, which is stale by definition. No I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Hashable

from .messages import Message, wire_size

__all__ = ["BroadcastQueue"]


@dataclass(slots=True)
class _Item:
    key: Hashable
    message: Message
    size: int
    order: int
    transmits: int = 0


class BroadcastQueue:
    """Keyed, transmit-limited broadcasts; ``limit`` maps the cluster size to the retransmit limit."""

    def __init__(self, limit: Callable[[int], int]) -> None:
        self._limit = limit
        self._items: dict[Hashable, _Item] = {}
        self._order = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def queue(self, key: Hashable, message: Message) -> None:
        """Add ``message``, replacing any queued broadcast with the same key."""
        self._order += 1
        self._items[key] = _Item(key, message, wire_size(message), self._order)

    def drop(self, key: Hashable) -> None:
        """Forget the broadcast with this key, if any."""
        self._items.pop(key, None)

    def take(
        self, budget: int, per_message_overhead: int, num_nodes: int, spill: bool = False,
    ) -> tuple[list[Message], int]:
        """Messages that fit in ``budget`` bytes, counted as sent once; and the bytes used.

        With ``spill``, messages too big for any datagram (``size > budget``) are returned
        as well, outside the byte count: the caller sends those over TCP. Without it they
        wait for a gossip round, as they cannot ride on a ping or an ack.
        """
        if not self._items or budget <= 0:
            return [], 0
        limit = self._limit(num_nodes)
        chosen: list[Message] = []
        used = 0
        for item in sorted(self._items.values(), key=lambda i: (i.transmits, -i.order)):
            cost = item.size + per_message_overhead
            if used + cost > budget and not (spill and item.size > budget):
                continue
            if item.size <= budget:
                used += cost
            chosen.append(item.message)
            item.transmits += 1
            if item.transmits >= limit:
                del self._items[item.key]
        return chosen, used
