"""The linearizability checker and log-matching check against known-good and known-bad inputs."""

from __future__ import annotations

from cluster.raft.checker import INF, KVOp, SafetyMonitor, check_linearizable, check_log_matching
from cluster.raft.messages import Entry


def put(client: int, key: str, value: object, call: float, ret: float = INF) -> KVOp:
    return KVOp(client, "put", key, value, call, ret)


def get(client: int, key: str, value: object, call: float, ret: float) -> KVOp:
    return KVOp(client, "get", key, value, call, ret)


def test_sequential_history_is_linearizable() -> None:
    h = [put(1, "k", 1, 0, 1), get(2, "k", 1, 2, 3), put(1, "k", 2, 4, 5), get(2, "k", 2, 6, 7)]
    assert check_linearizable(h) == (True, None)


def test_stale_read_after_completed_write_is_not() -> None:
    h = [put(1, "k", 1, 0, 1), put(1, "k", 2, 2, 3), get(2, "k", 1, 4, 5)]
    assert check_linearizable(h) == (False, "k")


def test_concurrent_write_may_be_seen_or_not() -> None:
    write = put(1, "k", 1, 0, 10)
    assert check_linearizable([write, get(2, "k", None, 1, 2)])[0]
    assert check_linearizable([write, get(2, "k", 1, 1, 2)])[0]


def test_reads_cannot_go_back_in_time() -> None:
    """Once a read saw the concurrent write, a later read may not miss it."""
    h = [put(1, "k", 1, 0, 10), get(2, "k", 1, 1, 2), get(3, "k", None, 3, 4)]
    assert check_linearizable(h) == (False, "k")


def test_unfinished_write_may_take_effect_late_or_never() -> None:
    pending = put(1, "k", 7, 0)  # the client timed out: ret = inf
    assert check_linearizable([pending, get(2, "k", None, 5, 6)])[0]
    assert check_linearizable([pending, get(2, "k", None, 5, 6), get(2, "k", 7, 8, 9)])[0]
    assert not check_linearizable([pending, get(2, "k", 7, 5, 6), get(2, "k", None, 8, 9)])[0]


def test_value_never_written_is_caught() -> None:
    assert check_linearizable([get(1, "k", 42, 0, 1)]) == (False, "k")


def test_deletes_and_keys_are_independent() -> None:
    h = [
        put(1, "a", 1, 0, 1),
        KVOp(1, "delete", "a", None, 2, 3),
        get(2, "a", None, 4, 5),
        put(3, "b", 1, 0, 1),
        get(2, "b", 1, 4, 5),
    ]
    assert check_linearizable(h) == (True, None)
    assert check_linearizable(h + [get(4, "a", 1, 6, 7)]) == (False, "a")


def test_zero_length_operations_are_ordered_by_their_own_call() -> None:
    h = [put(1, "k", 1, 0, 0), get(2, "k", 1, 0, 0)]
    assert check_linearizable(h)[0]


def test_many_concurrent_operations_stay_fast() -> None:
    h = [put(i, "k", i, 0, 100) for i in range(12)] + [get(99, "k", 11, 101, 102)]
    assert check_linearizable(h)[0]
    assert not check_linearizable(h + [get(99, "k", 3, 103, 104)])[0]


def test_log_matching_detects_divergent_prefix() -> None:
    good = [Entry(1, 1), Entry(1, 2), Entry(2, 3)]
    assert check_log_matching({"a": (0, good), "b": (0, good[:2])}) == []
    bad = [Entry(1, 1, data=b"other"), Entry(1, 2), Entry(2, 3)]
    assert check_log_matching({"a": (0, good), "b": (0, bad)})
    assert check_log_matching({"a": (0, good), "b": (1, good[1:])}) == []


def test_monitor_flags_two_leaders_in_a_term_and_divergent_applies() -> None:
    m = SafetyMonitor()
    m.on_leader(3, "a", lambda i: None)
    m.on_leader(3, "b", lambda i: None)
    m.on_apply("a", Entry(1, 1, data=b"x"))
    m.on_apply("b", Entry(1, 1, data=b"y"))
    m.on_leader(4, "c", lambda i: 0)  # its log has term 0 at index 1: misses a committed entry
    assert [v.split(":")[0] for v in m.violations] == ["election safety", "state machine safety", "leader completeness"]
