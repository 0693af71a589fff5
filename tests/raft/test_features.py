"""Behaviour beyond Figure 2: pre-vote, check-quorum, ReadIndex, transfer, snapshots,
learners and membership changes, flow control, proposal forwarding."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from cluster.raft.config import RaftConfig
from cluster.raft.core import ProposalDropped, Raft, Role
from cluster.raft.messages import ConfChange, ConfChangeOp, Entry, EntryType, Message, MsgType

from .helpers import PAPER, Network, drain, new_raft, take_messages

ABC = ["a", "b", "c"]
SAFE = RaftConfig(election_tick=10, heartbeat_tick=1, pre_vote=True, check_quorum=True)


def cluster(config: RaftConfig = PAPER, voters: list[str] = ABC) -> Network:
    net = Network(*[new_raft(n, voters, config, seed=i) for i, n in enumerate(voters)])
    net.campaign(voters[0])
    assert net.cores[voters[0]].role is Role.LEADER
    return net


def test_prevote_does_not_bump_terms_of_a_partitioned_node() -> None:
    net = cluster(SAFE)
    net.isolate("c")
    c = net.cores["c"]
    term = c.term
    for _ in range(10):
        net.tick("c", SAFE.election_tick * 2)
    assert c.term == term and c.role is Role.PRE_CANDIDATE
    net.heal()
    net.tick("a", 1)
    assert net.cores["a"].role is Role.LEADER and net.cores["a"].term == term  # not deposed on return


def test_without_prevote_a_returning_node_disrupts_the_leader() -> None:
    net = cluster(PAPER)
    net.isolate("c")
    net.tick("c", PAPER.election_tick * 2)
    assert net.cores["c"].term > net.cores["a"].term  # the disruption pre-vote prevents


def test_check_quorum_leader_steps_down_without_majority() -> None:
    net = cluster(SAFE)
    net.isolate("a")
    a = net.cores["a"]
    for _ in range(2 * SAFE.election_tick):
        a.tick()
    assert a.role is Role.FOLLOWER


def test_leader_lease_ignores_votes_while_leader_is_heard() -> None:
    net = cluster(SAFE)
    b = net.cores["b"]
    b.step(Message(MsgType.VOTE, "b", "c", term=b.term + 1, index=99, log_term=99))
    assert b.term == net.cores["a"].term and b.vote != "c"


def test_read_index_needs_quorum_acknowledgement() -> None:
    net = cluster(SAFE)
    a = net.cores["a"]
    net.isolate("a")
    a.read_index(b"r1")
    net.run()
    assert net.read_states["a"] == []  # a leader cut off cannot vouch for its commit index
    net.heal()
    a.read_index(b"r2")
    net.run()
    # r2's quorum round also confirms r1, which was queued before it
    assert [(s.context, s.index) for s in net.read_states["a"]] == [(b"r1", a.log.committed), (b"r2", a.log.committed)]


def test_read_index_from_follower_is_forwarded_and_answered() -> None:
    net = cluster(SAFE)
    net.cores["b"].read_index(b"ctx")
    net.run()
    assert [(s.context, s.index) for s in net.read_states["b"]] == [(b"ctx", net.cores["a"].log.committed)]


def test_read_index_waits_for_commit_in_leaders_term() -> None:
    a = new_raft("a", ABC, SAFE)
    a.step(Message(MsgType.HUP, "a", "a"))
    a.step(Message(MsgType.PRE_VOTE_RESP, "a", "b", term=2))
    a.step(Message(MsgType.VOTE_RESP, "a", "b", term=2))
    assert a.role is Role.LEADER and a.log.committed < a.log.last_index()
    a.read_index(b"early")
    drain(a)
    a.step(Message(MsgType.HEARTBEAT_RESP, "a", "b", term=2, context=b"early"))
    assert a.read_states == []
    a.step(Message(MsgType.APP_RESP, "a", "b", term=2, index=a.log.last_index()))  # no-op commits
    a.step(Message(MsgType.HEARTBEAT_RESP, "a", "b", term=2, context=b"early"))
    assert [s.context for s in a.read_states] == [b"early"]


def test_leadership_transfer_to_up_to_date_follower() -> None:
    net = cluster(SAFE)
    net.run(Message(MsgType.TRANSFER_LEADER, "a", "c"))
    assert net.cores["c"].role is Role.LEADER
    assert net.cores["a"].role is Role.FOLLOWER


def test_proposals_dropped_during_transfer() -> None:
    net = cluster(SAFE)
    net.isolate("c")
    a = net.cores["a"]
    a.transfer_leadership("c")
    with pytest.raises(ProposalDropped, match="transferred"):
        a.propose(b"x")


def test_follower_forwards_proposals_to_leader() -> None:
    net = cluster()
    net.cores["b"].propose(b"fwd")
    net.run()
    assert any(e.data == b"fwd" for e in net.cores["a"].log.entries)
    assert net.cores["c"].log.committed == net.cores["a"].log.last_index()


def test_no_leader_known_drops_proposal() -> None:
    r = new_raft("b", ABC)
    with pytest.raises(ProposalDropped, match="no leader"):
        r.propose(b"x")


def test_lagging_follower_receives_snapshot() -> None:
    net = cluster()
    a = net.cores["a"]
    net.isolate("c")
    for i in range(10):
        a.propose(b"%d" % i)
    net.run()
    snap = a.compact(b"state-at-%d" % a.log.applied)
    assert a.log.snap_index == snap.index and a.log.term(snap.index - 1) is None
    net.heal()
    net.tick("a", 3)
    c = net.cores["c"]
    assert c.log.snap_index == snap.index and c.log.snapshot is not None
    assert c.log.snapshot.data == snap.data
    assert c.log.committed == a.log.committed
    assert c.voters == set(ABC)


def test_single_voter_commits_alone() -> None:
    r = new_raft("a", ["a"])
    r.step(Message(MsgType.HUP, "a", "a"))
    assert r.role is Role.LEADER
    r.propose(b"x")
    assert r.log.committed == r.log.last_index()


def _apply_all(net: Network) -> None:
    for _ in range(3):
        net.tick(next(iter(net.cores)), 1)


def test_learner_replicates_but_does_not_vote_or_count() -> None:
    net = cluster(PAPER, ["a", "b"])
    d = Raft("d", PAPER, random.Random(9))
    net.cores["d"] = d
    net.storage["d"] = type(net.storage["a"])()
    a = net.cores["a"]
    a.propose_conf_change(ConfChange(ConfChangeOp.ADD_LEARNER, "d"))
    net.run()
    net.tick("a", 2)
    assert "d" in a.learners and a.prs["d"].learner
    assert d.log.committed == a.log.committed  # it got the log
    assert not d.promotable
    for _ in range(3 * PAPER.election_tick):
        d.tick()
    assert d.role is Role.FOLLOWER  # a learner never campaigns
    net.isolate("b")
    a.propose(b"needs-b")
    net.run()
    assert a.log.committed < a.log.last_index()  # the learner's ack does not count


def test_learner_promotion_and_one_change_at_a_time() -> None:
    net = cluster(PAPER, ["a", "b"])
    net.cores["d"] = Raft("d", PAPER, random.Random(9))
    net.storage["d"] = type(net.storage["a"])()
    a = net.cores["a"]
    a.propose_conf_change(ConfChange(ConfChangeOp.ADD_LEARNER, "d"))
    with pytest.raises(ProposalDropped, match="pending"):
        a.propose_conf_change(ConfChange(ConfChangeOp.ADD_VOTER, "d"))
    net.run()
    a.propose_conf_change(ConfChange(ConfChangeOp.ADD_VOTER, "d"))
    net.run()
    net.tick("a", 2)
    assert a.voters == {"a", "b", "d"} and net.cores["d"].promotable
    assert net.cores["d"].voters == {"a", "b", "d"}


def test_new_leader_refuses_conf_change_until_its_noop_is_applied() -> None:
    a = new_raft("a", ABC)
    a.step(Message(MsgType.HUP, "a", "a"))
    a.step(Message(MsgType.VOTE_RESP, "a", "b", term=2))
    with pytest.raises(ProposalDropped, match="pending"):
        a.propose_conf_change(ConfChange(ConfChangeOp.REMOVE, "c"))


def test_removing_the_leader_makes_it_step_down_and_others_elect() -> None:
    net = cluster()
    a = net.cores["a"]
    a.propose_conf_change(ConfChange(ConfChangeOp.REMOVE, "a"))
    net.run()
    net.tick("a", 2)
    assert a.role is Role.FOLLOWER and not a.promotable
    net.tick("b", 2 * PAPER.election_tick)
    assert any(net.cores[n].role is Role.LEADER for n in "bc")


def test_refuses_to_remove_last_voter() -> None:
    r = new_raft("a", ["a"])
    r.step(Message(MsgType.HUP, "a", "a"))
    drain(r)
    with pytest.raises(ProposalDropped, match="last voter"):
        r.propose_conf_change(ConfChange(ConfChangeOp.REMOVE, "a"))


def test_pipelining_respects_inflight_limit_and_batches() -> None:
    cfg = replace(PAPER, max_inflight_msgs=2, max_entries_per_msg=3)
    net = cluster(cfg)
    a = net.cores["a"]
    drain(a)
    for i in range(20):
        a.propose(b"%d" % i)
    sent = take_messages(a)
    apps = [m for m in sent if m.type is MsgType.APP and m.to == "b"]
    assert len(apps) == 2  # then paused until an ack frees a slot
    assert all(1 <= len(m.entries) <= 3 for m in apps)
    net.run(*sent)
    assert max(len(m.entries) for m in net.sent if m.type is MsgType.APP) == 3  # batched catch-up
    assert net.cores["b"].log.last_index() == a.log.last_index()


def test_stale_leader_steps_down_when_told_a_newer_term() -> None:
    net = cluster(SAFE)
    net.isolate("a")
    for _ in range(4 * SAFE.election_tick):
        net.tick("b")
        net.tick("c")
    assert any(net.cores[n].role is Role.LEADER for n in "bc")
    a = net.cores["a"]
    a.step(Message(MsgType.APP_RESP, "a", "b", term=net.cores["b"].term))
    assert a.role is Role.FOLLOWER


def test_entries_carry_conf_changes() -> None:
    e = Entry(1, 1, EntryType.CONF_CHANGE, ConfChange(ConfChangeOp.ADD_VOTER, "x").encode())
    assert ConfChange.decode(e.data) == ConfChange(ConfChangeOp.ADD_VOTER, "x")


@pytest.mark.parametrize("keep", [0, 3, 5])
def test_leader_repairs_a_follower_that_lost_acknowledged_entries(keep: int) -> None:
    """A follower back with an emptied (keep=0) or cut log catches up without a leader change.

    The leader's match index for it is higher than what it has; rejects at or below
    match look stale to ``maybe_decrease``, so only the heartbeat check can repair it.
    """
    net = cluster(SAFE)
    a = net.cores["a"]
    for data in (b"x", b"y", b"z"):
        a.propose(data)
        net.run()
    acked = a.prs["c"].match
    assert acked == a.log.last_index() > keep
    storage = net.storage["c"]
    storage.entries = [e for e in storage.entries if e.index <= keep]
    if keep == 0:
        storage.hard_state = replace(storage.hard_state, term=0, vote=None, commit=0)
    rec = storage.load()
    c = net.cores["c"] = Raft("c", SAFE, random.Random(5), hard_state=rec.hard_state, entries=rec.entries)
    assert c.log.last_index() == keep
    net.tick("a", SAFE.heartbeat_tick)
    assert a.role is Role.LEADER and a.term == c.term
    assert c.log.entries == a.log.entries and c.log.committed == a.log.committed
    assert a.prs["c"].match == a.log.last_index()
    a.propose(b"after")  # and it keeps up from then on
    net.run()
    assert c.log.committed == a.log.committed == a.log.last_index()


def test_a_healthy_follower_never_rejects_a_heartbeat() -> None:
    """The lost-entries check must not fire on followers that are merely behind or compacted."""
    net = cluster(SAFE)
    a = net.cores["a"]
    for data in (b"x", b"y"):
        a.propose(data)
        net.run()
    for n in ABC:
        net.cores[n].compact(b"")
    net.isolate("c")
    a.propose(b"while c is away")
    net.run()
    net.heal()
    start = len(net.sent)
    net.tick("a", SAFE.heartbeat_tick * 3)
    heartbeat_replies = [m for m in net.sent[start:] if m.type is MsgType.HEARTBEAT_RESP]
    assert heartbeat_replies and not any(m.reject for m in heartbeat_replies)
    assert net.cores["c"].log.committed == a.log.committed
