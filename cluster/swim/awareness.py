"""Lifeguard local health awareness (LHA-Probe): am I the slow one?

A node that misses nacks from its indirect probers, or has to refute accusations, is
more likely overloaded itself than surrounded by dead peers. Its health score rises, and
its probe interval and probe timeout are scaled by ``score + 1`` so that it accuses
others more slowly. Successful probes lower the score. (memberlist awareness.go.)
"""

from __future__ import annotations

__all__ = ["Awareness"]


class Awareness:
    """A saturating health score in ``[0, max_multiplier - 1]``; 0 is healthy."""

    def __init__(self, max_multiplier: int) -> None:
        self._max = max_multiplier
        self.score = 0

    def apply(self, delta: int) -> int:
        """Move the score by ``delta`` (clamped); returns the new score."""
        self.score = min(self._max - 1, max(0, self.score + delta))
        return self.score

    def scale(self, timeout_s: float) -> float:
        """``timeout_s`` stretched by the current score."""
        return timeout_s * (self.score + 1)
