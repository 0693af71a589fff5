"""The leader's bookkeeping of each follower: how much it has, what to send next.

Three states, as in etcd-io/raft's tracker:
- PROBE: we do not know where the follower's log ends; send one AppendEntries, wait.
- REPLICATE: the follower is in sync; stream entries optimistically (pipelining),
  at most ``max_inflight`` messages unacknowledged (flow control).
- SNAPSHOT: the entries it needs are compacted; a snapshot is on its way.
"""

from __future__ import annotations

import enum
from collections import deque

__all__ = ["Progress", "ProgressState"]


class ProgressState(enum.Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


class Progress:
    __slots__ = (
        "inflight",
        "learner",
        "match",
        "max_inflight",
        "next",
        "pending_snapshot",
        "probe_sent",
        "recent_active",
        "state",
    )

    def __init__(self, next_index: int, max_inflight: int, learner: bool = False) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.probe_sent = False
        #: Last index of each AppendEntries in flight, oldest first.
        self.inflight: deque[int] = deque()
        self.max_inflight = max_inflight
        #: Heard from since the last check-quorum round.
        self.recent_active = False
        self.pending_snapshot = 0
        self.learner = learner

    def _reset(self, state: ProgressState) -> None:
        self.state = state
        self.probe_sent = False
        self.inflight.clear()
        self.pending_snapshot = 0

    def become_probe(self) -> None:
        self._reset(ProgressState.PROBE)
        self.next = self.match + 1

    def become_replicate(self) -> None:
        self._reset(ProgressState.REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, snapshot_index: int) -> None:
        self._reset(ProgressState.SNAPSHOT)
        self.pending_snapshot = snapshot_index

    def maybe_update(self, index: int) -> bool:
        """An ack for ``index`` arrived; True if it taught us something new."""
        updated = index > self.match
        if updated:
            self.match = index
            self.probe_sent = False
        self.next = max(self.next, index + 1)
        while self.inflight and self.inflight[0] <= index:
            self.inflight.popleft()
        return updated

    def maybe_decrease(self, rejected: int, hint: int) -> bool:
        """A reject of the AppendEntries after ``rejected``; False if the reject is stale."""
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, hint + 1), self.match + 1, 1)
        self.probe_sent = False
        return True

    def lost_entries(self, follower_last: int) -> None:
        """The follower no longer has entries we counted as matched (it lost its disk, or part of it).

        Raft assumes acknowledged entries are durable; a follower restarted with an emptied
        or truncated data directory breaks that, and would otherwise stay behind for as long
        as this leader lives: ``maybe_decrease`` rightly treats rejects at or below ``match``
        as stale. Forget ``match`` entirely (the follower's remaining tail may even be
        from older terms, so no part of it can count towards a commit until an ack proves
        it) and probe from the follower's last index; rejects walk back from there.
        """
        self.match = 0
        self.become_probe()
        self.next = follower_last + 1

    def sent(self, last_index: int, n_entries: int) -> None:
        """Record an AppendEntries just sent, ending at ``last_index``."""
        if self.state is ProgressState.REPLICATE:
            if n_entries:
                self.next = last_index + 1
                self.inflight.append(last_index)
        else:
            self.probe_sent = True

    def is_paused(self) -> bool:
        if self.state is ProgressState.PROBE:
            return self.probe_sent
        if self.state is ProgressState.REPLICATE:
            return len(self.inflight) >= self.max_inflight
        return True

    def as_dict(self) -> dict[str, object]:
        return {"match": self.match, "next": self.next, "state": self.state.value, "learner": self.learner}
