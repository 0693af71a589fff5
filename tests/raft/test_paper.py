"""One test per rule of Figure 2 of the Raft paper (Ongaro & Ousterhout, 2014).

Each test names the rule it checks; the cores run with pre-vote and check-quorum off
(``PAPER``) so that the behaviour is the paper's, except where a test says otherwise.
"""

from __future__ import annotations

import random

from cluster.raft.config import RaftConfig
from cluster.raft.core import Raft, Role
from cluster.raft.messages import HardState, Message, MsgType

from .helpers import PAPER, Network, drain, entries, new_raft, take_messages

ABC = ["a", "b", "c"]


def follower_with_log(terms: list[int], term: int, node: str = "b", commit: int = 0) -> Raft:
    """A follower of cluster a,b,c whose log holds entries of the given terms (index 1..)."""
    r = Raft(node, PAPER, random.Random(0), hard_state=HardState(term, None, commit), entries=entries(*terms))
    r.voters = set(ABC)
    drain(r)
    return r


def elected(node: str = "a") -> tuple[Network, Raft]:
    cores = [new_raft(n, ABC) for n in ABC]
    net = Network(*cores)
    net.campaign(node)
    return net, net.cores[node]


# ---------------------------------------------------------------------- all servers


def test_all_servers_apply_committed_entries_in_order() -> None:
    """Rules for all servers: if commitIndex > lastApplied, apply log[lastApplied+1]..."""
    net, leader = elected()
    leader.propose(b"x")
    leader.propose(b"y")
    net.run()
    follower = net.cores["b"]
    assert follower.log.applied == follower.log.committed == leader.log.last_index()
    applied = [e.data for e in follower.log.slice(1, follower.log.applied + 1) if e.data and e.type.name == "NORMAL"]
    assert applied == [b"x", b"y"]


def test_all_servers_step_down_on_higher_term() -> None:
    """Rules for all servers: an RPC with term T > currentTerm sets currentTerm = T, becomes follower."""
    _, leader = elected()
    leader.step(Message(MsgType.APP_RESP, "a", "b", term=leader.term + 5))
    assert leader.role is Role.FOLLOWER
    assert leader.term == 7  # elected in term 2
    assert leader.vote is None


# ---------------------------------------------------------------------- followers


def test_follower_responds_to_leader_and_candidate() -> None:
    """Followers: respond to RPCs from candidates and leaders."""
    b = follower_with_log([1], term=1)
    b.step(Message(MsgType.VOTE, "b", "c", term=2, index=1, log_term=1))
    b.step(Message(MsgType.APP, "b", "a", term=2, index=1, log_term=1))
    out = take_messages(b)
    assert [(m.type, m.to) for m in out] == [(MsgType.VOTE_RESP, "c"), (MsgType.APP_RESP, "a")]


def test_follower_becomes_candidate_after_election_timeout() -> None:
    """Followers: if the election timeout elapses without hearing from a leader, become candidate."""
    b = follower_with_log([1], term=1)
    for _ in range(2 * PAPER.election_tick):
        b.tick()
    assert b.role is Role.CANDIDATE


def test_follower_hearing_from_leader_does_not_campaign() -> None:
    """Followers: AppendEntries from the current leader resets the election timer."""
    b = follower_with_log([1], term=1)
    for _ in range(5 * PAPER.election_tick):
        b.tick()
        b.step(Message(MsgType.HEARTBEAT, "b", "a", term=1))
    assert b.role is Role.FOLLOWER and b.lead == "a"


# ---------------------------------------------------------------------- candidates


def test_candidate_increments_term_votes_for_itself_and_requests_votes() -> None:
    """Candidates: on conversion, increment currentTerm, vote for self, send RequestVote to all others."""
    b = follower_with_log([1, 1], term=1)
    b.step(Message(MsgType.HUP, "b", "b"))
    rd = b.ready()
    assert (b.term, b.vote) == (2, "b")
    assert rd.hard_state == HardState(2, "b", 0)  # persisted together with the requests
    votes = sorted((m.to, m.term, m.index, m.log_term) for m in rd.messages if m.type is MsgType.VOTE)
    assert votes == [("a", 2, 2, 1), ("c", 2, 2, 1)]


def test_candidate_with_majority_becomes_leader() -> None:
    """Candidates: if votes received from a majority of servers, become leader."""
    b = follower_with_log([1], term=1)
    b.step(Message(MsgType.HUP, "b", "b"))
    b.step(Message(MsgType.VOTE_RESP, "b", "a", term=2))
    assert b.role is Role.LEADER


def test_candidate_rejected_by_majority_gives_up() -> None:
    b = follower_with_log([1], term=1)
    b.step(Message(MsgType.HUP, "b", "b"))
    b.step(Message(MsgType.VOTE_RESP, "b", "a", term=2, reject=True))
    b.step(Message(MsgType.VOTE_RESP, "b", "c", term=2, reject=True))
    assert b.role is Role.FOLLOWER


def test_candidate_receiving_append_from_new_leader_becomes_follower() -> None:
    """Candidates: if AppendEntries is received from a new leader, convert to follower."""
    b = follower_with_log([1], term=1)
    b.step(Message(MsgType.HUP, "b", "b"))
    b.step(Message(MsgType.APP, "b", "c", term=2, index=1, log_term=1))
    assert (b.role, b.lead, b.term) == (Role.FOLLOWER, "c", 2)


def test_candidate_starts_new_election_after_timeout() -> None:
    """Candidates: if the election timeout elapses, start a new election (with a higher term)."""
    b = follower_with_log([1], term=1)
    b.step(Message(MsgType.HUP, "b", "b"))
    for _ in range(2 * PAPER.election_tick):
        b.tick()
    assert b.role is Role.CANDIDATE and b.term == 3


# ---------------------------------------------------------------------- leaders


def test_leader_sends_heartbeats_when_idle() -> None:
    """Leaders: upon election send empty AppendEntries (heartbeat) and repeat during idle periods."""
    _, leader = elected()
    drain(leader)
    leader.tick()  # heartbeat_tick = 1
    beats = sorted(m.to for m in take_messages(leader) if m.type is MsgType.HEARTBEAT)
    assert beats == ["b", "c"]


def test_leader_appends_client_command_and_replicates_it() -> None:
    """Leaders: a command from a client is appended to the local log and replicated."""
    _, leader = elected()
    last = leader.log.last_index()
    leader.propose(b"cmd")
    rd = leader.ready()
    assert [(e.index, e.term, e.data) for e in rd.entries] == [(last + 1, leader.term, b"cmd")]
    apps = [m for m in rd.messages if m.type is MsgType.APP]
    assert sorted(m.to for m in apps) == ["b", "c"] and all(m.entries[-1].data == b"cmd" for m in apps)


def test_leader_decrements_next_index_on_inconsistency_and_retries() -> None:
    """Leaders: if AppendEntries fails because of log inconsistency, decrement nextIndex and retry."""
    _, leader = elected()
    for i in range(3):
        leader.propose(b"%d" % i)
    drain(leader)
    pr = leader.prs["b"]  # pretend the leader knows nothing about b yet
    pr.match = 0
    pr.become_probe()
    pr.next = leader.log.last_index() + 1
    leader.step(Message(MsgType.APP_RESP, "a", "b", term=leader.term, index=pr.next - 1, reject=True, reject_hint=2))
    retry = [m for m in take_messages(leader) if m.type is MsgType.APP and m.to == "b"]
    assert retry and retry[0].index == 2  # backed off to the follower's last index
    assert pr.next == 3


def test_leader_updates_match_and_next_on_success() -> None:
    """Leaders: if successful, update nextIndex and matchIndex for the follower."""
    net, leader = elected()
    leader.propose(b"x")
    net.run()
    assert leader.prs["b"].match == leader.log.last_index()
    assert leader.prs["b"].next == leader.log.last_index() + 1


def test_leader_commits_entry_replicated_on_majority_of_current_term() -> None:
    """Leaders: N > commitIndex, a majority of matchIndex >= N, log[N].term == currentTerm: commit N."""
    net, leader = elected()
    net.isolate("c")
    leader.propose(b"x")
    net.run()
    assert leader.log.committed == leader.log.last_index()  # a and b are a majority


def test_leader_never_commits_older_term_entry_by_counting() -> None:
    """Leaders: only entries of the current term are committed by counting replicas (Figure 8)."""
    # a leads term 3 with an entry of term 2 at index 2 that it did not commit.
    a = Raft("a", PAPER, random.Random(0), hard_state=HardState(2, "a", 1), entries=entries(1, 2))
    a.voters = set(ABC)
    a.step(Message(MsgType.HUP, "a", "a"))
    a.step(Message(MsgType.VOTE_RESP, "a", "b", term=3))
    assert a.role is Role.LEADER
    drain(a)
    # b acknowledges index 2 (term 2) but not yet the term-3 no-op at index 3.
    a.step(Message(MsgType.APP_RESP, "a", "b", term=3, index=2))
    assert a.log.committed == 1
    a.step(Message(MsgType.APP_RESP, "a", "b", term=3, index=3))
    assert a.log.committed == 3  # committing the no-op commits index 2 indirectly


# ---------------------------------------------------------------------- AppendEntries receiver


def test_append_rejected_when_term_is_stale() -> None:
    """AppendEntries receiver 1: reply false if term < currentTerm (and tell the stale leader our term)."""
    b = follower_with_log([1], term=3)
    b.step(Message(MsgType.APP, "b", "a", term=2, index=1, log_term=1, entries=entries(2, start=2)))
    out = take_messages(b)
    assert b.log.last_index() == 1
    assert [(m.type, m.term) for m in out] == [(MsgType.APP_RESP, 3)]


def test_append_rejected_when_prev_entry_does_not_match() -> None:
    """AppendEntries receiver 2: reply false if log has no entry at prevLogIndex with prevLogTerm."""
    b = follower_with_log([1, 1], term=2)
    b.step(Message(MsgType.APP, "b", "a", term=2, index=2, log_term=2, entries=entries(2, start=3)))
    (resp,) = take_messages(b)
    assert resp.reject and resp.index == 2 and resp.reject_hint == 2
    assert b.log.last_index() == 2


def test_append_deletes_conflicting_entry_and_all_that_follow() -> None:
    """AppendEntries receiver 3: an existing entry that conflicts is deleted with all that follow it."""
    b = follower_with_log([1, 1, 1, 1], term=2)
    b.step(Message(MsgType.APP, "b", "a", term=2, index=1, log_term=1, entries=entries(2, start=2)))
    assert [e.term for e in b.log.entries] == [1, 2]


def test_append_adds_new_entries_and_keeps_matching_ones() -> None:
    """AppendEntries receiver 4: append any new entries not already in the log."""
    b = follower_with_log([1, 1], term=1)
    b.step(Message(MsgType.APP, "b", "a", term=1, index=0, log_term=0, entries=entries(1, 1, 1)))
    assert [(e.index, e.term) for e in b.log.entries] == [(1, 1), (2, 1), (3, 1)]
    (resp,) = take_messages(b)
    assert not resp.reject and resp.index == 3


def test_append_sets_commit_to_min_of_leader_commit_and_last_new_entry() -> None:
    """AppendEntries receiver 5: commitIndex = min(leaderCommit, index of last new entry)."""
    b = follower_with_log([1, 1, 1, 1, 1], term=2)  # entries 3..5 are stale, beyond what the leader sends
    b.step(Message(MsgType.APP, "b", "a", term=2, index=1, log_term=1, entries=entries(1, start=2), commit=5))
    assert b.log.committed == 2


# ---------------------------------------------------------------------- RequestVote receiver


def test_vote_rejected_when_term_is_stale() -> None:
    """RequestVote receiver 1: reply false if term < currentTerm."""
    b = follower_with_log([1], term=3)
    b.step(Message(MsgType.VOTE, "b", "c", term=2, index=5, log_term=2))
    out = take_messages(b)
    assert b.vote is None and not any(m.type is MsgType.VOTE_RESP and not m.reject for m in out)


def test_vote_granted_once_per_term_to_up_to_date_candidate() -> None:
    """RequestVote receiver 2: grant if votedFor is null or candidateId and the log is up to date."""
    b = follower_with_log([1, 2], term=2)
    b.step(Message(MsgType.VOTE, "b", "c", term=3, index=2, log_term=2))
    b.step(Message(MsgType.VOTE, "b", "c", term=3, index=2, log_term=2))  # a retry: same answer
    b.step(Message(MsgType.VOTE, "b", "a", term=3, index=9, log_term=9))  # already voted this term
    grants = [(m.to, m.reject) for m in take_messages(b)]
    assert grants == [("c", False), ("c", False), ("a", True)]
    assert b.hard_state() == HardState(3, "c", 0)


def test_vote_refused_to_candidate_with_stale_log() -> None:
    """RequestVote receiver 2 / 5.4.1: a candidate whose log is behind ours gets no vote."""
    b = follower_with_log([1, 2], term=2)
    b.step(Message(MsgType.VOTE, "b", "c", term=3, index=5, log_term=1))  # longer but older last term
    (resp,) = take_messages(b)
    assert resp.reject and b.vote is None


# ---------------------------------------------------------------------- persistent state


def test_term_and_vote_are_in_the_same_ready_as_the_vote_grant() -> None:
    """Persistent state: currentTerm and votedFor are updated on stable storage before responding."""
    b = follower_with_log([1], term=1)
    b.step(Message(MsgType.VOTE, "b", "c", term=2, index=1, log_term=1))
    rd = b.ready()
    assert rd.hard_state == HardState(2, "c", 0)
    assert [m.type for m in rd.messages] == [MsgType.VOTE_RESP]


def test_config_validate_refuses_contradictions() -> None:
    import pytest

    from cluster.raft.config import ConfigError

    with pytest.raises(ConfigError, match="heartbeat_tick"):
        RaftConfig(election_tick=2, heartbeat_tick=2).validate()
    with pytest.raises(ConfigError, match="max_inflight"):
        RaftConfig(max_inflight_msgs=0).validate()
