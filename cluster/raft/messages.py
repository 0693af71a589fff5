"""Raft's vocabulary: message types, log entries, hard state, snapshots, and their wire form.

Rules of this module:
- ``MsgType`` and ``EntryType`` numbers go on the wire and into log files. They are
  append-only: never renumber or reuse a value, only add new ones at the end.
- Nothing here does I/O. ``Message.to_wire``/``Message.from_wire`` turn a message into
  plain msgpack-able lists and back; ``from_wire`` accepts untrusted input and raises
  only ``WireError``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import msgpack

__all__ = [
    "ConfChange",
    "ConfChangeOp",
    "Entry",
    "EntryType",
    "HardState",
    "Message",
    "MsgType",
    "ReadState",
    "Snapshot",
    "WireError",
    "decode_message",
    "encode_message",
]


class WireError(ValueError):
    """Bytes from the network (or a file) do not decode to a valid Raft object."""


class MsgType(enum.IntEnum):
    """Every message the core steps or emits. Append-only: the numbers are on the wire.

    Local messages (HUP, BEAT, CHECK_QUORUM) are only ever stepped by the node itself and
    never travel; they are numbered here so that one ``step`` handles everything.
    """

    HUP = 1  # local: election timeout fired, start a (pre-)campaign
    BEAT = 2  # local: leader's heartbeat timer fired
    PROP = 3  # client proposal; a follower forwards it to the leader
    APP = 4  # AppendEntries
    APP_RESP = 5
    VOTE = 6  # RequestVote
    VOTE_RESP = 7
    PRE_VOTE = 8  # pre-vote (thesis 9.6): would you vote for me, without bumping terms?
    PRE_VOTE_RESP = 9
    SNAP = 10  # InstallSnapshot
    HEARTBEAT = 11
    HEARTBEAT_RESP = 12
    TRANSFER_LEADER = 13  # "make `frm` the leader"; followers forward it to the leader
    TIMEOUT_NOW = 14  # leader to transferee: campaign now, ignoring leases
    READ_INDEX = 15  # ReadIndex request (forwarded by followers to the leader)
    READ_INDEX_RESP = 16
    CHECK_QUORUM = 17  # local: leader checks it heard from a majority this election timeout


#: Message types that never travel between nodes.
LOCAL_TYPES = frozenset({MsgType.HUP, MsgType.BEAT, MsgType.CHECK_QUORUM})


class EntryType(enum.IntEnum):
    """Kinds of log entry. Append-only: the numbers are in log files."""

    NORMAL = 1  # opaque application command (empty data = leader's no-op)
    CONF_CHANGE = 2  # a single-server membership change, data = ConfChange.encode()


class ConfChangeOp(enum.IntEnum):
    """Single-server membership changes. Append-only: the numbers are in log files."""

    ADD_LEARNER = 1  # receives the log, does not vote or count for commit
    ADD_VOTER = 2  # add a voter, or promote a learner
    REMOVE = 3


@dataclass(frozen=True, slots=True)
class ConfChange:
    """One membership change; carried in the data of a CONF_CHANGE entry."""

    op: ConfChangeOp
    node_id: str

    def encode(self) -> bytes:
        return bytes(msgpack.packb([int(self.op), self.node_id]))

    @classmethod
    def decode(cls, data: bytes) -> ConfChange:
        try:
            op, node_id = msgpack.unpackb(data)
            if not isinstance(node_id, str):
                raise TypeError("node id must be a string")
            return cls(ConfChangeOp(op), node_id)
        except Exception as exc:  # noqa: BLE001 - untrusted input: any failure means "invalid"
            raise WireError(f"bad conf change: {exc}") from None


@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry. ``index`` starts at 1; ``term`` is the leader's term when it was appended."""

    term: int
    index: int
    type: EntryType = EntryType.NORMAL
    data: bytes = b""

    def to_wire(self) -> list[Any]:
        return [self.term, self.index, int(self.type), self.data]

    @classmethod
    def from_wire(cls, obj: Any) -> Entry:
        term, index, etype, data = obj
        if not (_is_uint(term) and _is_uint(index) and isinstance(data, bytes)):
            raise WireError("bad entry fields")
        return cls(term, index, EntryType(etype), data)


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be on disk before any message that depends on it is sent (Figure 2, "persistent state")."""

    term: int = 0
    vote: str | None = None
    commit: int = 0


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The state machine as of ``index`` (inclusive), plus the membership at that point."""

    index: int
    term: int
    voters: tuple[str, ...]
    learners: tuple[str, ...]
    data: bytes

    def to_wire(self) -> list[Any]:
        return [self.index, self.term, list(self.voters), list(self.learners), self.data]

    @classmethod
    def from_wire(cls, obj: Any) -> Snapshot:
        index, term, voters, learners, data = obj
        if not (_is_uint(index) and _is_uint(term) and isinstance(data, bytes)):
            raise WireError("bad snapshot fields")
        if not all(isinstance(v, str) for v in [*voters, *learners]):
            raise WireError("bad snapshot membership")
        return cls(index, term, tuple(voters), tuple(learners), data)


@dataclass(frozen=True, slots=True)
class ReadState:
    """A ReadIndex answer: once ``index`` is applied, reading the state machine is linearizable."""

    index: int
    context: bytes


@dataclass(slots=True)
class Message:
    """One Raft message, in the shape of etcd's raftpb.Message: one struct, fields used per type.

    ``index``/``log_term``: the entry preceding ``entries`` (APP), the candidate's last entry
    (VOTE), the acknowledged/rejected index (APP_RESP), the read index (READ_INDEX_RESP),
    the leader's match index for the follower and its term (HEARTBEAT; 0 claims nothing),
    the match index the follower no longer has (rejected HEARTBEAT_RESP).
    ``reject_hint``: on a rejected APP_RESP or HEARTBEAT_RESP, the follower's last index, so
    the leader can skip back in one step. ``context``: ReadIndex request ids, or b"transfer" on a
    campaign forced by leadership transfer.
    """

    type: MsgType
    to: str
    frm: str
    term: int = 0
    log_term: int = 0
    index: int = 0
    entries: list[Entry] = field(default_factory=list)
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    context: bytes = b""
    snapshot: Snapshot | None = None

    def to_wire(self) -> list[Any]:
        return [
            int(self.type),
            self.to,
            self.frm,
            self.term,
            self.log_term,
            self.index,
            [e.to_wire() for e in self.entries],
            self.commit,
            self.reject,
            self.reject_hint,
            self.context,
            None if self.snapshot is None else self.snapshot.to_wire(),
        ]

    @classmethod
    def from_wire(cls, obj: Any) -> Message:
        try:
            (mtype, to, frm, term, log_term, index, entries, commit, reject, hint, context, snap) = obj
            msg = cls(
                MsgType(mtype),
                to,
                frm,
                term,
                log_term,
                index,
                [Entry.from_wire(e) for e in entries],
                commit,
                reject,
                hint,
                context,
                None if snap is None else Snapshot.from_wire(snap),
            )
        except WireError:
            raise
        except Exception as exc:  # noqa: BLE001 - untrusted input: any failure means "invalid"
            raise WireError(f"malformed raft message: {exc!r}") from None
        if msg.type in LOCAL_TYPES:
            raise WireError(f"local message type {msg.type.name} must not travel")
        if not (isinstance(to, str) and isinstance(frm, str) and isinstance(reject, bool)):
            raise WireError("bad raft message addressing")
        if not all(_is_uint(v) for v in (term, log_term, index, commit, hint)):
            raise WireError("raft message counters must be non-negative integers")
        if not isinstance(context, bytes):
            raise WireError("raft message context must be bytes")
        return msg


def _is_uint(value: Any) -> bool:
    return type(value) is int and value >= 0


def encode_message(msg: Message) -> bytes:
    """Message -> msgpack bytes (the plaintext that the transport seals)."""
    return bytes(msgpack.packb(msg.to_wire(), use_bin_type=True))


def decode_message(data: bytes) -> Message:
    """msgpack bytes -> Message; any malformed input raises WireError and nothing else."""
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True, max_bin_len=1 << 30)
    except Exception as exc:  # noqa: BLE001 - untrusted input: any failure means "invalid"
        raise WireError(f"not msgpack: {exc!r}") from None
    return Message.from_wire(obj)
