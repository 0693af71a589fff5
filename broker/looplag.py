"""How far this node's event loop fell behind, and when: the SETUP deadline's excuse.

A node flooded by a connect storm (or starved of CPU) reads its sockets late. The time it
was behind is not its clients' fault: a SETUP that sits unread in the node's own socket
buffer while the deadline counted from accept runs out is the node's lateness, and
closing that client only sends it back into the storm (issue 13: 1,018 of 19,000 devices).

The housekeeping pass, due every ``HOUSEKEEPING_INTERVAL_S``, measures the lateness: a pass
``late`` seconds after it was due means the loop was busy elsewhere for the ``late``
seconds up to it. :class:`LoopLag` keeps those episodes for a window and answers how much
of the time since a given moment the loop was behind. Stalls long enough to be treated as a
pause (``Broker.excuse_stall``, which moves every deadline at once) are not recorded here.

Pure bookkeeping on an explicit clock: no timers, no wall clock.
"""

from __future__ import annotations

import bisect

__all__ = ["LoopLag"]


class LoopLag:
    """Episodes of lateness ``(end, seconds)`` over the last ``window_s`` seconds."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        #: lateness summed since the start, seconds (for the metrics and logs)
        self.total_s = 0.0
        self._ends: list[float] = []
        #: total_s up to and including each episode
        self._totals: list[float] = []
        self._lates: list[float] = []

    def add(self, now: float, late_s: float) -> None:
        """The loop ran ``late_s`` seconds behind, up to ``now`` (clock seconds, increasing)."""
        if late_s <= 0:
            return
        self.total_s += late_s
        self._ends.append(now)
        self._totals.append(self.total_s)
        self._lates.append(late_s)
        old = bisect.bisect_left(self._ends, now - self.window_s)
        if old > len(self._ends) // 2:  # trim in halves: amortized O(1) per episode
            del self._ends[:old], self._totals[:old], self._lates[:old]

    def since(self, start: float) -> float:
        """Seconds the loop was behind after ``start`` (an episode running across ``start``
        counts only its part after it); episodes older than the window are forgotten."""
        first = bisect.bisect_right(self._ends, start)
        if first == len(self._ends):
            return 0.0
        before = self._totals[first - 1] if first else self._totals[0] - self._lates[0]
        whole = self.total_s - before
        # the first episode may have begun before ``start``
        return whole - max(0.0, self._lates[first] - (self._ends[first] - start))
