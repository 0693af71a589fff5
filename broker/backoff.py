"""Full-jitter exponential backoff, the one retry delay of every reconnect and retry loop.

After the n-th consecutive failure (counting from 0) a loop waits a uniform random time in
``[0, min(cap, base·2ⁿ)]`` ("full jitter", AWS Architecture Blog, *Exponential Backoff And
Jitter*): the ceiling doubles so a long outage costs few attempts, and the randomness spreads
the nodes or clients that lost the same peer so that they do not come back in one herd.
Callers own the policy (base and cap); this class owns the arithmetic.
"""

from __future__ import annotations

import asyncio
import random

__all__ = ["Backoff"]

#: Doublings past this change nothing (any cap is reached) and would only grow the float.
_MAX_DOUBLINGS = 30


class Backoff:
    """Delays for consecutive failures: ``next_delay()`` per failure, ``reset()`` on success."""

    def __init__(self, base_s: float, cap_s: float, rng: random.Random | None = None) -> None:
        if not 0 < base_s <= cap_s:
            raise ValueError(f"backoff needs 0 < base_s <= cap_s, got base_s={base_s}, cap_s={cap_s}")
        self.base_s = base_s
        self.cap_s = cap_s
        #: consecutive failures since the last reset
        self.failures = 0
        self._uniform = (rng or random).uniform  # a seeded Random makes the delays replayable

    def ceiling(self) -> float:
        """The longest the next delay may be."""
        return min(self.cap_s, self.base_s * 2 ** min(self.failures, _MAX_DOUBLINGS))

    def next_delay(self) -> float:
        """The delay before the next attempt, in seconds; counts one more failure."""
        delay = self._uniform(0, self.ceiling())
        self.failures += 1
        return delay

    async def wait(self) -> None:
        """Sleep ``next_delay()`` seconds."""
        await asyncio.sleep(self.next_delay())

    def reset(self) -> None:
        """An attempt succeeded: the next failure waits at most ``base_s`` again."""
        self.failures = 0
