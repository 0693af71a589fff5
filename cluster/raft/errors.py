"""Errors the Raft shell raises to its callers (the admin API maps them to HTTP statuses)."""

from __future__ import annotations

from .validation import ValidationError

__all__ = ["MembershipError", "NotLeader", "RaftError", "StorageFull", "Timeout", "ValidationError"]


class RaftError(Exception):
    """Base of every error ``RaftNode`` raises on purpose."""


class NotLeader(RaftError):
    """This operation must run on the leader; ``leader`` is the current one if known (a hint)."""

    def __init__(self, leader: str | None, what: str = "this operation") -> None:
        self.leader = leader
        where = f"the leader is {leader}" if leader else "no leader is known right now"
        super().__init__(f"{what} must run on the leader; {where}")


class Timeout(RaftError, TimeoutError):
    """No answer in time. For writes the outcome is unknown: the entry may still commit."""


class StorageFull(RaftError):
    """The Raft log could not be written: the disk (or quota) is full. Nothing more commits on
    this node until space is freed and it restarts; its message starts with ``storage full``."""


class MembershipError(RaftError):
    """A membership change was refused (e.g. removing the last voter, another change pending)."""
