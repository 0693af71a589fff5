"""The core's view of the replicated log: a snapshot prefix, then entries in memory.

Invariants (checked by the simulator's log-matching check):
- ``entries[i].index == snap_index + 1 + i``; the log is contiguous after the snapshot.
- ``applied <= committed <= last_index()``; committed entries are never truncated.
- ``stable`` is the last index known to be on disk; entries after it are handed to the
  shell in the next Ready and become stable in ``Raft.advance``.

This module owns no I/O; durable storage replays into it on restart.
"""

from __future__ import annotations

from .messages import Entry, Snapshot

__all__ = ["LogInvariantError", "RaftLog"]


class LogInvariantError(RuntimeError):
    """The log was asked to do something that would break Raft's safety (a bug, never input)."""


class RaftLog:
    """Entries after the last snapshot, the commit and apply cursors, and the stable mark."""

    __slots__ = ("applied", "committed", "entries", "pending_snapshot", "snap_index", "snap_term", "snapshot", "stable")

    def __init__(
        self, snapshot: Snapshot | None = None, entries: list[Entry] | None = None, committed: int = 0
    ) -> None:
        self.snapshot = snapshot
        self.snap_index = snapshot.index if snapshot else 0
        self.snap_term = snapshot.term if snapshot else 0
        self.entries: list[Entry] = [e for e in (entries or []) if e.index > self.snap_index]
        for offset, entry in enumerate(self.entries):
            if entry.index != self.snap_index + 1 + offset:
                raise LogInvariantError(f"log gap at index {entry.index}, expected {self.snap_index + 1 + offset}")
        self.committed = min(max(committed, self.snap_index), self.last_index())
        self.applied = self.snap_index
        self.stable = self.last_index()
        #: A snapshot received from the leader that the shell has not yet persisted/applied.
        self.pending_snapshot: Snapshot | None = None

    def last_index(self) -> int:
        return self.snap_index + len(self.entries)

    def last_term(self) -> int:
        return self.entries[-1].term if self.entries else self.snap_term

    def term(self, index: int) -> int | None:
        """Term of the entry at ``index``; None if compacted away or beyond the end."""
        if index == self.snap_index:
            return self.snap_term
        offset = index - self.snap_index - 1
        if offset < 0 or offset >= len(self.entries):
            return None
        return self.entries[offset].term

    def match_term(self, index: int, term: int) -> bool:
        return self.term(index) == term

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Election restriction (5.4.1): is a candidate's log at least as up to date as ours?"""
        mine = self.last_term()
        return last_term > mine or (last_term == mine and last_index >= self.last_index())

    def slice(self, lo: int, hi: int) -> list[Entry]:
        """Entries with lo <= index < hi; the caller ensures lo > snap_index."""
        base = self.snap_index + 1
        return self.entries[lo - base : hi - base]

    def entries_from(self, lo: int, max_count: int, max_bytes: int) -> list[Entry] | None:
        """Up to max_count entries from ``lo`` within max_bytes (at least one); None if compacted."""
        if lo <= self.snap_index:
            return None
        batch = self.slice(lo, min(lo + max_count, self.last_index() + 1))
        size = 0
        for n, entry in enumerate(batch):
            size += len(entry.data)
            if size > max_bytes and n > 0:
                return batch[:n]
        return batch

    def append(self, entries: list[Entry]) -> None:
        """Leader append: entries continue the log at last_index()+1."""
        if entries and entries[0].index != self.last_index() + 1:
            raise LogInvariantError(f"append at {entries[0].index} after last index {self.last_index()}")
        self.entries.extend(entries)

    def maybe_append(self, index: int, log_term: int, committed: int, entries: list[Entry]) -> int | None:
        """Follower side of AppendEntries (Figure 2, receiver rules 2-5).

        Returns the index of the last new entry, or None when our log has no entry at
        ``index`` with ``log_term`` (the leader must back off).
        """
        if not self.match_term(index, log_term):
            return None
        last_new = index + len(entries)
        for entry in entries:
            if entry.index <= self.snap_index:
                continue
            existing = self.term(entry.index)
            if existing == entry.term:
                continue
            if existing is not None:  # conflict: delete it and all that follow (rule 3)
                if entry.index <= self.committed:
                    raise LogInvariantError(f"conflict at committed index {entry.index}")
                del self.entries[entry.index - self.snap_index - 1 :]
                self.stable = min(self.stable, entry.index - 1)
            self.append([e for e in entries if e.index >= entry.index])  # rule 4
            break
        self.commit_to(min(committed, last_new))  # rule 5
        return last_new

    def commit_to(self, index: int) -> bool:
        """Raise the commit index (never lower it); True if it moved."""
        if index > self.committed:
            if index > self.last_index():
                raise LogInvariantError(f"commit {index} beyond last index {self.last_index()}")
            self.committed = index
            return True
        return False

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the whole log by a snapshot from the leader (InstallSnapshot rules 6-8)."""
        self.snapshot = snapshot
        self.snap_index = snapshot.index
        self.snap_term = snapshot.term
        self.entries = []
        self.committed = snapshot.index
        self.stable = snapshot.index
        self.pending_snapshot = snapshot

    def compact(self, snapshot: Snapshot) -> None:
        """Drop entries covered by a locally taken snapshot (at or below ``applied``)."""
        if snapshot.index > self.applied:
            raise LogInvariantError(f"snapshot at {snapshot.index} beyond applied {self.applied}")
        if snapshot.index <= self.snap_index:
            return
        del self.entries[: snapshot.index - self.snap_index]
        self.snapshot = snapshot
        self.snap_index = snapshot.index
        self.snap_term = snapshot.term

    def unstable(self) -> list[Entry]:
        return self.entries[self.stable - self.snap_index :] if self.stable < self.last_index() else []

    def next_committed(self) -> list[Entry]:
        """Committed entries not yet applied (none while a received snapshot is pending)."""
        if self.pending_snapshot is not None or self.committed <= self.applied:
            return []
        return self.slice(self.applied + 1, self.committed + 1)
