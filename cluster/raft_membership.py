"""Which gossip members the Raft leader should add to (or promote in) the config store's group.

Pure bookkeeping, no I/O: ``ClusterRuntime`` feeds it the Raft membership and the gossip
member list once per sync round and acts on the answer.

Rules:

* A node that is ``alive`` in gossip and not a Raft voter is added (as a learner, then
  promoted once caught up): a new node, a learner left behind by an earlier attempt,
  or a removed node that came back.
* A node removed from the Raft group (``DELETE /api/v1/raft/members/{id}``) is not
  re-added while gossip still holds the *same life* of it: right after a crash gossip
  may report a dead node ``alive`` for seconds, and re-adding it would leave a learner
  that never catches up. It is re-added once it comes back: gossip saw it gone (dead,
  left, forgotten) and then alive again, or it announces a higher incarnation.
  Refusals are logged once per removed node.
* Every node keeps this record (removals reach all of them through the log), so a new
  leader knows about removals it saw applied before it took over.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["RaftMembership"]

log = logging.getLogger("rsbroker.cluster")

_PRESENT = ("alive", "suspect")


@dataclass(slots=True)
class _Removed:
    """A node that left the Raft group, and the gossip life it was removed in."""

    incarnation: int
    gone: bool  # gossip has seen it dead, left or forgotten since the removal
    told: bool = False  # the refusal to re-add it has been logged


class RaftMembership:
    """Remembers removals and answers which members to add; one per node."""

    def __init__(self, self_id: str) -> None:
        self.self_id = self_id
        self._members: set[str] | None = None
        self._removed: dict[str, _Removed] = {}

    def observe(self, raft_members: Iterable[str], gossip: Iterable[Mapping[str, Any]]) -> None:
        """Record this round's Raft membership; a member that disappeared was removed."""
        members = set(raft_members)
        view = {m["node_id"]: m for m in gossip}
        if self._members is not None:
            for node in self._members - members - {self.self_id}:
                if node not in self._removed:
                    self.removed(node, view.values())
        for node in members:
            self._removed.pop(node, None)  # added again: forget the removal
        for node, removed in self._removed.items():
            member = view.get(node)
            if member is None or member["state"] not in _PRESENT:
                removed.gone = True
        self._members = members

    def removed(self, node: str, gossip: Iterable[Mapping[str, Any]]) -> None:
        """``node`` was removed from the Raft group in gossip's current life of it.

        The node that carries out a removal says so at once; the others notice it in
        ``observe`` (a poll can miss a member that was added and removed between rounds).
        """
        member = next((m for m in gossip if m["node_id"] == node), None)
        present = member is not None and member["state"] in _PRESENT
        self._removed[node] = _Removed(int(member["incarnation"]) if member else -1, gone=not present)

    def to_add(self, voters: Iterable[str], gossip: Iterable[Mapping[str, Any]]) -> list[str]:
        """Alive gossip members that should become Raft voters, in a stable order."""
        voting = set(voters)
        out = []
        for member in sorted(gossip, key=lambda m: m["node_id"]):
            node = member["node_id"]
            if node == self.self_id or node in voting or member["state"] != "alive":
                continue
            removed = self._removed.get(node)
            if removed is not None and not removed.gone and int(member["incarnation"]) <= removed.incarnation:
                if not removed.told:
                    removed.told = True
                    log.warning(
                        "node %s was removed from the config store's Raft group and gossip still holds it "
                        "alive (incarnation %d); it is added again once it restarts",
                        node,
                        removed.incarnation,
                    )
                continue
            out.append(node)
        return out
