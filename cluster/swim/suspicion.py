"""Lifeguard dynamic suspicion (LHA-Suspicion): the timeout shrinks as others agree.

A suspicion starts with the maximum timeout. Each independent confirmation (a suspect
message about the same member from a different node) brings the deadline closer,
logarithmically, down to the minimum once ``k`` confirmations are in:

    timeout(c) = max(min, max - (max - min) * log(c + 1) / log(k + 1))

A lone accuser with a bad link therefore waits long enough for the accused to refute;
a real failure seen by many is declared at the minimum. (memberlist suspicion.go.)
Pure arithmetic over an explicit clock.
"""

from __future__ import annotations

import math

__all__ = ["Suspicion"]


class Suspicion:
    """The timer of one suspected member, as a deadline on the caller's clock."""

    def __init__(self, accuser: str, k: int, min_s: float, max_s: float, start: float) -> None:
        self.k = k
        self.min_s = min_s
        self.max_s = max_s if k >= 1 else min_s
        self.start = start
        self._confirmers = {accuser}
        self.deadline = start + self.max_s

    @property
    def confirmations(self) -> int:
        """Independent confirmations received (the first accuser does not count)."""
        return len(self._confirmers) - 1

    def timeout(self) -> float:
        """Total suspicion time given the confirmations so far."""
        if self.k < 1:
            return self.min_s
        frac = math.log(self.confirmations + 1) / math.log(self.k + 1)
        return max(self.min_s, self.max_s - frac * (self.max_s - self.min_s))

    def confirm(self, accuser: str) -> bool:
        """Count a confirmation from ``accuser``; True if it was new (and moved the deadline)."""
        if self.confirmations >= self.k or accuser in self._confirmers:
            return False
        self._confirmers.add(accuser)
        self.deadline = self.start + self.timeout()
        return True
