"""Which gossip members the Raft leader adds: the pure rules of ``cluster.raft_membership``."""

from __future__ import annotations

from typing import Any

from cluster.raft_membership import RaftMembership


def gossip(**states: tuple[str, int]) -> list[dict[str, Any]]:
    return [{"node_id": n, "state": s, "incarnation": inc} for n, (s, inc) in states.items()]


def test_new_alive_members_and_learners_are_added_dead_ones_are_not() -> None:
    sync = RaftMembership("n1")
    view = gossip(n1=("alive", 0), n2=("alive", 0), n3=("dead", 0), n4=("suspect", 0))
    sync.observe(["n1", "n2"], view)
    assert sync.to_add(["n1"], view) == ["n2"]  # n2 is a learner: promote it
    assert sync.to_add(["n1", "n2"], view) == []


def test_a_node_removed_right_after_it_died_is_not_readded_while_gossip_holds_it_alive() -> None:
    sync = RaftMembership("n1")
    alive = gossip(n1=("alive", 0), n2=("alive", 0), n3=("alive", 3))
    sync.observe(["n1", "n2", "n3"], alive)
    sync.observe(["n1", "n2"], alive)  # DELETE /api/v1/raft/members/n3; gossip lags the crash
    assert sync.to_add(["n1", "n2"], alive) == []
    suspect = gossip(n1=("alive", 0), n2=("alive", 0), n3=("suspect", 3))
    sync.observe(["n1", "n2"], suspect)
    assert sync.to_add(["n1", "n2"], alive) == []  # suspicion refuted: still the same life


def test_a_removed_node_that_comes_back_is_added_again() -> None:
    sync = RaftMembership("n1")
    alive = gossip(n1=("alive", 0), n3=("alive", 3))
    sync.observe(["n1", "n3"], alive)
    sync.observe(["n1"], alive)
    sync.observe(["n1"], gossip(n1=("alive", 0), n3=("dead", 3)))
    assert sync.to_add(["n1"], alive) == ["n3"]  # seen gone, alive again: a restart


def test_a_removed_node_with_a_higher_incarnation_is_added_again() -> None:
    sync = RaftMembership("n1")
    sync.observe(["n1", "n3"], gossip(n1=("alive", 0), n3=("alive", 3)))
    sync.observe(["n1"], gossip(n1=("alive", 0), n3=("alive", 3)))
    assert sync.to_add(["n1"], gossip(n1=("alive", 0), n3=("alive", 4))) == ["n3"]


def test_once_readded_a_removal_is_forgotten() -> None:
    sync = RaftMembership("n1")
    alive = gossip(n1=("alive", 0), n3=("alive", 3))
    sync.observe(["n1", "n3"], alive)
    sync.observe(["n1"], alive)
    sync.observe(["n1", "n3"], gossip(n1=("alive", 0), n3=("alive", 4)))
    assert sync.to_add(["n1"], alive) == ["n3"]  # a learner again: promote it


def test_a_removal_reported_directly_holds_even_if_no_round_saw_the_member() -> None:
    sync = RaftMembership("n1")
    alive = gossip(n1=("alive", 0), n3=("alive", 3))
    sync.observe(["n1"], alive)  # n3 is added and removed between two rounds
    sync.removed("n3", alive)
    sync.observe(["n1"], alive)
    assert sync.to_add(["n1"], alive) == []
