"""Durable Raft state: what a node must remember across crashes (Figure 2, "persistent state").

Two implementations of one small interface:
- ``MemoryStorage``: a dict-like stand-in the simulator keeps across simulated crashes.
- ``FileStorage``: files in a data directory:
    ``hardstate``          term + vote (+ commit), replaced atomically when term or vote change
    ``log-<seq>.wal``      append-only records ``len u32 | crc32 u32 | type u8 | payload``
    ``snap-<index>.snap``  ``magic | crc32 u32 | payload``, the newest one is used

Rules:
- ``save`` returns only when its data is on disk (fsync), so the shell may then send
  messages that promise it. Commit-index-only changes are written without fsync: the
  commit index can always be learned again from the leader.
- Recovery truncates a torn tail (a crash in the middle of the last write) and refuses
  a corrupt record followed by valid ones (bit rot, or someone edited the file) with
  ``CorruptionError`` naming the file and offset, instead of silently dropping
  acknowledged entries.
- Snapshots are written to a temporary file, fsynced, renamed, and the directory
  fsynced; only then is the log they cover rewritten (same dance) and old files removed.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

import msgpack

from .messages import Entry, HardState, Snapshot

__all__ = ["CorruptionError", "FileStorage", "MemoryStorage", "Recovered", "Storage"]

_REC_HEADER = struct.Struct(">II")  # length of (type + payload), crc32 of (type + payload)
_REC_ENTRY = 1
_REC_COMMIT = 2
#: A record longer than this is treated as garbage (a flipped bit in a length field).
MAX_RECORD = 256 << 20
_SNAP_MAGIC = b"RSNP\x01"


class CorruptionError(RuntimeError):
    """Durable Raft state is damaged in a way recovery must not paper over."""


@dataclass
class Recovered:
    hard_state: HardState = field(default_factory=HardState)
    snapshot: Snapshot | None = None
    entries: list[Entry] = field(default_factory=list)


class Storage(Protocol):
    def load(self) -> Recovered:
        """What the last run made durable."""

    def save(self, hard_state: HardState | None, entries: list[Entry], snapshot: Snapshot | None) -> None:
        """Persist one Ready: a received snapshot replaces the whole log; entries overwrite from their first index."""

    def compact(self, snapshot: Snapshot, retained: list[Entry]) -> None:
        """Make a locally taken snapshot durable, then keep only ``retained`` (entries after it)."""

    def close(self) -> None:
        """Release files."""


def _splice(log: list[Entry], entries: list[Entry], snap_index: int) -> None:
    """Overwrite ``log`` (contiguous after snap_index) from entries[0].index on."""
    if not entries:
        return
    first = entries[0].index
    if first <= snap_index:
        entries = [e for e in entries if e.index > snap_index]
        if not entries:
            return
        first = entries[0].index
    keep = first - snap_index - 1
    if keep > len(log):
        raise CorruptionError(f"log gap: entry {first} after last index {snap_index + len(log)}")
    del log[keep:]
    log.extend(entries)


class MemoryStorage:
    """Durable state kept in memory; the simulator carries it across simulated crashes."""

    def __init__(self) -> None:
        self.hard_state = HardState()
        self.snapshot: Snapshot | None = None
        self.entries: list[Entry] = []

    def load(self) -> Recovered:
        return Recovered(self.hard_state, self.snapshot, list(self.entries))

    def save(self, hard_state: HardState | None, entries: list[Entry], snapshot: Snapshot | None) -> None:
        if snapshot is not None:
            self.snapshot = snapshot
            self.entries = []
        _splice(self.entries, entries, self.snapshot.index if self.snapshot else 0)
        if hard_state is not None:
            self.hard_state = hard_state

    def compact(self, snapshot: Snapshot, retained: list[Entry]) -> None:
        self.snapshot = snapshot
        self.entries = list(retained)

    def close(self) -> None:
        return None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomically(path: Path, data: bytes, fsync: bool) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        if fsync:
            os.fsync(f.fileno())
    os.replace(tmp, path)
    if fsync:
        _fsync_dir(path.parent)


def _record(rtype: int, payload: bytes) -> bytes:
    body = bytes((rtype,)) + payload
    return _REC_HEADER.pack(len(body), zlib.crc32(body)) + body


def _valid_record_at(buf: bytes, offset: int) -> int | None:
    """End offset of a well-formed record at ``offset``, else None."""
    if offset + _REC_HEADER.size > len(buf):
        return None
    length, crc = _REC_HEADER.unpack_from(buf, offset)
    end: int = offset + _REC_HEADER.size + length
    if length == 0 or length > MAX_RECORD or end > len(buf):
        return None
    if zlib.crc32(buf[offset + _REC_HEADER.size : end]) != crc:
        return None
    return end


class FileStorage:
    """Raft's durable state in one directory; see the module docstring for the layout."""

    def __init__(self, directory: str | Path, fsync: bool = True) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self._seq = 0
        self._file: BinaryIO | None = None
        self._hs = HardState()
        self._snap_index = 0

    # ------------------------------------------------------------------ recovery

    def load(self) -> Recovered:
        for leftover in self.dir.glob("*.tmp"):
            leftover.unlink()
        snapshot = self._load_snapshot()
        self._snap_index = snapshot.index if snapshot else 0
        hs = self._load_hard_state()
        logs = sorted(self.dir.glob("log-*.wal"))
        entries: list[Entry] = []
        commit = hs.commit
        if logs:
            *older, newest = logs
            for path in older:  # superseded by a finished rewrite; the crash came before cleanup
                path.unlink()
            self._seq = int(newest.stem.split("-")[1])
            commit = max(commit, self._replay(newest, entries, snapshot))
        commit = min(max(commit, self._snap_index), self._snap_index + len(entries))
        self._hs = HardState(hs.term, hs.vote, commit)
        self._open_log()
        return Recovered(self._hs, snapshot, entries)

    def _load_snapshot(self) -> Snapshot | None:
        snaps = sorted(self.dir.glob("snap-*.snap"))
        if not snaps:
            return None
        path = snaps[-1]
        blob = path.read_bytes()
        head = len(_SNAP_MAGIC) + 4
        if len(blob) < head or blob[: len(_SNAP_MAGIC)] != _SNAP_MAGIC:
            raise CorruptionError(f"{path}: not a snapshot file (bad magic)")
        (crc,) = struct.unpack_from(">I", blob, len(_SNAP_MAGIC))
        if zlib.crc32(blob[head:]) != crc:
            raise CorruptionError(f"{path}: snapshot checksum mismatch; restore it from a healthy node")
        return Snapshot.from_wire(msgpack.unpackb(blob[head:], raw=False))

    def _load_hard_state(self) -> HardState:
        path = self.dir / "hardstate"
        if not path.exists():
            return HardState()
        blob = path.read_bytes()
        if len(blob) < 4 or zlib.crc32(blob[4:]) != struct.unpack_from(">I", blob)[0]:
            raise CorruptionError(f"{path}: hard state checksum mismatch (term/vote unknown; refusing to start)")
        term, vote, commit = msgpack.unpackb(blob[4:], raw=False)
        return HardState(term, vote, commit)

    def _replay(self, path: Path, entries: list[Entry], snapshot: Snapshot | None) -> int:
        """Read every record of ``path`` into ``entries``; return the last commit record (0 if none).

        If the log's entry at the snapshot's index has another term, the crash came between
        installing a leader's snapshot and rewriting the log: the old entries are not ours to keep.
        """
        buf = path.read_bytes()
        offset = 0
        commit = 0
        diverged = False
        while offset < len(buf):
            end = _valid_record_at(buf, offset)
            if end is None:
                self._handle_bad_tail(path, buf, offset)
                break
            rtype = buf[offset + _REC_HEADER.size]
            payload = buf[offset + _REC_HEADER.size + 1 : end]
            if rtype == _REC_ENTRY:
                entry = Entry.from_wire(msgpack.unpackb(payload, raw=False))
                if snapshot is not None and entry.index == snapshot.index:
                    diverged = entry.term != snapshot.term
                _splice(entries, [entry], self._snap_index)
            elif rtype == _REC_COMMIT:
                (commit,) = struct.unpack(">Q", payload)
            else:
                raise CorruptionError(f"{path}: unknown record type {rtype} at offset {offset}")
            offset = end
        if diverged:
            entries.clear()
        return commit

    def _handle_bad_tail(self, path: Path, buf: bytes, offset: int) -> None:
        for later in range(offset + 1, len(buf) - _REC_HEADER.size):
            if _valid_record_at(buf, later) is not None:
                raise CorruptionError(
                    f"{path}: corrupt record at offset {offset} followed by valid records at offset {later}; "
                    "refusing to drop acknowledged entries (restore this node's data from a healthy node, or "
                    "remove it from the cluster and re-add it empty)"
                )
        with open(path, "r+b") as f:  # a torn final write: cut it off
            f.truncate(offset)
            if self.fsync:
                os.fsync(f.fileno())

    # ------------------------------------------------------------------ writing

    def _log_path(self, seq: int) -> Path:
        return self.dir / f"log-{seq:016d}.wal"

    def _open_log(self) -> None:
        self._file = open(self._log_path(self._seq), "ab")  # noqa: SIM115 - held open for appends until close()

    def save(self, hard_state: HardState | None, entries: list[Entry], snapshot: Snapshot | None) -> None:
        if snapshot is not None:
            self._install(snapshot, [])
        records = [_record(_REC_ENTRY, msgpack.packb(e.to_wire())) for e in entries]
        term_or_vote = hard_state is not None and (hard_state.term, hard_state.vote) != (self._hs.term, self._hs.vote)
        if hard_state is not None and hard_state.commit != self._hs.commit:
            records.append(_record(_REC_COMMIT, struct.pack(">Q", hard_state.commit)))
        if records:
            assert self._file is not None
            self._file.write(b"".join(records))
            self._file.flush()
            if self.fsync and (entries or term_or_vote):
                os.fsync(self._file.fileno())
        if term_or_vote and hard_state is not None:
            blob = msgpack.packb([hard_state.term, hard_state.vote, hard_state.commit])
            _write_atomically(self.dir / "hardstate", struct.pack(">I", zlib.crc32(blob)) + blob, self.fsync)
        if hard_state is not None:
            self._hs = hard_state

    def compact(self, snapshot: Snapshot, retained: list[Entry]) -> None:
        self._install(snapshot, retained)

    def _install(self, snapshot: Snapshot, retained: list[Entry]) -> None:
        blob = msgpack.packb(snapshot.to_wire())
        path = self.dir / f"snap-{snapshot.index:020d}.snap"
        _write_atomically(path, _SNAP_MAGIC + struct.pack(">I", zlib.crc32(blob)) + blob, self.fsync)
        self._snap_index = snapshot.index
        # Rewrite the log with only what the snapshot does not cover, under the next sequence number.
        body = [_record(_REC_ENTRY, msgpack.packb(e.to_wire())) for e in retained if e.index > snapshot.index]
        body.append(_record(_REC_COMMIT, struct.pack(">Q", max(self._hs.commit, snapshot.index))))
        new_seq = self._seq + 1
        _write_atomically(self._log_path(new_seq), b"".join(body), self.fsync)
        if self._file is not None:
            self._file.close()
        old_seq, self._seq = self._seq, new_seq
        self._log_path(old_seq).unlink(missing_ok=True)
        for old in self.dir.glob("snap-*.snap"):
            if old != path:
                old.unlink()
        self._open_log()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
