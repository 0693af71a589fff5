"""FileStorage: round trips, torn writes, flipped bits, snapshots and compaction, fsync."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cluster.raft.messages import Entry, HardState, Snapshot
from cluster.raft.storage import CorruptionError, FileStorage, MemoryStorage


def ents(lo: int, hi: int, term: int = 1) -> list[Entry]:
    return [Entry(term, i, data=b"v%d" % i) for i in range(lo, hi + 1)]


def snap(index: int, term: int = 1) -> Snapshot:
    return Snapshot(index, term, ("a", "b", "c"), (), b"state@%d" % index)


def reopen(path: Path) -> tuple[FileStorage, list[Entry]]:
    st = FileStorage(path)
    rec = st.load()
    return st, rec.entries


def the_log(path: Path) -> Path:
    (log,) = path.glob("log-*.wal")
    return log


def test_round_trip_of_entries_hard_state_and_overwrites(tmp_path: Path) -> None:
    st = FileStorage(tmp_path)
    st.load()
    st.save(HardState(1, "a", 0), ents(1, 5), None)
    st.save(HardState(2, "b", 3), [Entry(2, 4, data=b"new4")], None)  # overwrites 4 and drops 5
    st.close()
    st2 = FileStorage(tmp_path)
    rec = st2.load()
    assert rec.hard_state == HardState(2, "b", 3)
    assert [(e.index, e.term, e.data) for e in rec.entries] == [
        (1, 1, b"v1"),
        (2, 1, b"v2"),
        (3, 1, b"v3"),
        (4, 2, b"new4"),
    ]
    st2.save(None, [Entry(2, 5)], None)  # appending after recovery works
    st2.close()
    assert reopen(tmp_path)[1][-1] == Entry(2, 5)


def test_every_torn_tail_recovers_a_prefix(tmp_path: Path) -> None:
    st = FileStorage(tmp_path)
    st.load()
    for i in range(1, 6):
        st.save(HardState(1, None, 0), [Entry(1, i, data=b"x" * i)], None)
    st.close()
    log = the_log(tmp_path)
    full = log.read_bytes()
    for cut in range(len(full)):
        log.write_bytes(full[:cut])
        st, entries = reopen(tmp_path)
        st.close()
        assert entries == ents_prefix(entries)
        assert len(log.read_bytes()) <= cut  # the torn part was cut off
    log.write_bytes(full + b"\0" * 100)  # a crash after the file grew but before data landed
    st, entries = reopen(tmp_path)
    st.close()
    assert len(entries) == 5


def ents_prefix(entries: list[Entry]) -> list[Entry]:
    return [Entry(1, i, data=b"x" * i) for i in range(1, len(entries) + 1)]


def test_flipped_bit_in_the_middle_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    st = FileStorage(tmp_path)
    st.load()
    st.save(HardState(1, None, 0), ents(1, 9), None)
    last_record_at = the_log(tmp_path).stat().st_size
    st.save(None, ents(10, 10), None)
    st.close()
    log = the_log(tmp_path)
    full = bytearray(log.read_bytes())
    for offset in range(last_record_at):  # every byte of every record but the last
        damaged = bytearray(full)
        damaged[offset] ^= 0x10
        log.write_bytes(bytes(damaged))
        with pytest.raises(CorruptionError, match=r"corrupt record at offset \d+ followed by valid records"):
            FileStorage(tmp_path).load()
    log.write_bytes(bytes(full))
    assert len(reopen(tmp_path)[1]) == 10  # the undamaged file still loads


def test_flipped_bit_in_the_last_record_is_a_torn_write(tmp_path: Path) -> None:
    st = FileStorage(tmp_path)
    st.load()
    st.save(HardState(1, None, 0), ents(1, 3), None)
    st.close()
    log = the_log(tmp_path)
    damaged = bytearray(log.read_bytes())
    damaged[-1] ^= 0x01
    log.write_bytes(bytes(damaged))
    st, entries = reopen(tmp_path)
    assert [e.index for e in entries] == [1, 2]


def test_compaction_keeps_snapshot_and_tail_only(tmp_path: Path) -> None:
    st = FileStorage(tmp_path)
    st.load()
    st.save(HardState(1, "a", 8), ents(1, 10), None)
    st.compact(snap(8), ents(9, 10))
    st.save(None, ents(11, 12), None)
    st.close()
    assert len(list(tmp_path.glob("log-*.wal"))) == 1
    assert len(list(tmp_path.glob("snap-*.snap"))) == 1
    rec = FileStorage(tmp_path).load()
    assert rec.snapshot == snap(8)
    assert [e.index for e in rec.entries] == [9, 10, 11, 12]
    assert rec.hard_state.commit == 8


def test_snapshot_from_leader_replaces_the_log(tmp_path: Path) -> None:
    st = FileStorage(tmp_path)
    st.load()
    st.save(HardState(1, "a", 2), ents(1, 5), None)
    st.save(HardState(3, "a", 20), [Entry(3, 21)], snap(20, term=3))
    st.close()
    rec = FileStorage(tmp_path).load()
    assert rec.snapshot == snap(20, term=3)
    assert rec.entries == [Entry(3, 21)]


def test_crash_between_snapshot_install_and_log_rewrite(tmp_path: Path) -> None:
    """The old log survives next to a newer leader snapshot: its diverging entries must go."""
    st = FileStorage(tmp_path)
    st.load()
    st.save(HardState(2, "a", 1), ents(1, 6, term=1), None)
    st.close()
    blob_dir = tmp_path / "other"
    other = FileStorage(blob_dir)
    other.load()
    other.save(None, [], snap(4, term=2))  # produce a valid snapshot file
    other.close()
    for f in blob_dir.glob("snap-*.snap"):
        os.replace(f, tmp_path / f.name)
    rec = FileStorage(tmp_path).load()
    assert rec.snapshot == snap(4, term=2)
    assert rec.entries == []  # entries 5, 6 followed another entry 4


def test_leftovers_of_an_interrupted_compaction_are_ignored(tmp_path: Path) -> None:
    st = FileStorage(tmp_path)
    st.load()
    st.save(HardState(1, "a", 3), ents(1, 4), None)
    st.close()
    (tmp_path / "snap-00000000000000000009.snap.tmp").write_bytes(b"half a snapshot")
    (tmp_path / "log-9999999999999999.wal.tmp").write_bytes(b"half a log")
    rec = FileStorage(tmp_path).load()
    assert [e.index for e in rec.entries] == [1, 2, 3, 4] and rec.snapshot is None
    assert not list(tmp_path.glob("*.tmp"))


def test_corrupt_snapshot_and_hard_state_are_refused(tmp_path: Path) -> None:
    st = FileStorage(tmp_path)
    st.load()
    st.save(HardState(1, "a", 3), ents(1, 4), None)
    st.compact(snap(3), ents(4, 4))
    st.close()
    (snap_file,) = tmp_path.glob("snap-*.snap")
    data = bytearray(snap_file.read_bytes())
    data[-3] ^= 0xFF
    snap_file.write_bytes(bytes(data))
    with pytest.raises(CorruptionError, match="snapshot checksum mismatch"):
        FileStorage(tmp_path).load()
    data[-3] ^= 0xFF
    snap_file.write_bytes(bytes(data))
    hs = tmp_path / "hardstate"
    hs.write_bytes(hs.read_bytes()[:-1] + b"\x00")
    with pytest.raises(CorruptionError, match="hard state"):
        FileStorage(tmp_path).load()


def test_fsync_before_save_returns_but_not_for_commit_only_updates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real(fd))[1])
    st = FileStorage(tmp_path)
    st.load()
    st.save(HardState(1, None, 0), ents(1, 2), None)
    assert calls, "entries must be fsynced before save returns"
    calls.clear()
    st.save(HardState(1, None, 2), [], None)
    assert calls == []  # the commit index can be relearned from the leader
    st.save(HardState(2, "b", 2), [], None)
    assert len(calls) >= 2  # the vote: log record and hardstate file (and its directory)
    st.close()


def test_memory_storage_mirrors_file_semantics() -> None:
    st = MemoryStorage()
    st.save(HardState(1, "a", 0), ents(1, 5), None)
    st.save(None, [Entry(2, 3)], None)
    assert [e.index for e in st.load().entries] == [1, 2, 3]
    st.compact(snap(2), [Entry(2, 3)])
    rec = st.load()
    assert rec.snapshot == snap(2) and rec.entries == [Entry(2, 3)]
