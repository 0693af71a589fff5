"""SWIM membership rules of the sans-IO core (memberlist state.go semantics)."""

from __future__ import annotations

import random

import pytest

from cluster.swim.config import profile
from cluster.swim.core import TRANSITIONS, NameConflict, PushPullTo, Swim
from cluster.swim.messages import (
    Ack, Alive, Dead, IndirectPing, MemberRecord, MemberState, Nack, Ping, PushPull, Route, Suspect, wire_size,
)

from .helpers import CFG, addr, changes, make, messages_to, run, run_answered, sends


def test_unknown_alive_joins_and_is_regossiped() -> None:
    swim = make(1)
    out = swim.receive(addr(1), [Alive(3, "n7", *addr(7), {"tcp": "x"})], 1.0)
    assert [(c.member.node, c.previous, c.member.state) for c in changes(out)] == [("n7", None, MemberState.ALIVE)]
    assert swim.member("n7").incarnation == 3 and swim.member("n7").meta == {"tcp": "x"}
    gossip = run(swim, 1.0 + CFG.gossip_interval_s * 2, start=1.0)
    assert any(isinstance(m, Alive) and m.node == "n7" for s in sends(gossip) for m in s.messages)


def test_old_news_is_ignored() -> None:
    swim = make(2)
    swim.receive(addr(1), [Alive(5, "n2", *addr(2), {})], 1.0)
    out = swim.receive(addr(1), [Alive(4, "n2", *addr(2), {}), Suspect(3, "n2", "n1"), Dead(4, "n2", "n1")], 2.0)
    assert changes(out) == [] and swim.member("n2").state == MemberState.ALIVE


def test_suspect_then_refuted_by_higher_incarnation() -> None:
    swim = make(3)
    out = swim.receive(addr(1), [Suspect(0, "n2", "n1")], 1.0)
    assert changes(out)[0].member.state == MemberState.SUSPECT
    out = swim.receive(addr(2), [Alive(1, "n2", *addr(2), {})], 1.5)
    assert [(c.previous, c.member.state) for c in changes(out)] == [(MemberState.SUSPECT, MemberState.ALIVE)]
    later = run_answered(swim, 100.0, 1.5)
    assert not any(c.member.node == "n2" and c.member.state != MemberState.ALIVE for c in changes(later))


def test_we_refute_accusations_with_a_higher_incarnation() -> None:
    swim = make(2)
    swim.receive(addr(1), [Dead(4, "n0", "n1")], 1.0)
    assert swim.incarnation == 5
    assert swim.member("n0").state == MemberState.ALIVE
    out = swim.receive(addr(1), [Ping(1, "n0", "n1")], 1.1)
    assert Alive(5, "n0", *addr(0), {}) in messages_to(out, addr(1))


def test_stale_accusation_is_answered_with_the_newer_alive() -> None:
    swim = make(2)
    swim.receive(addr(1), [Alive(2, "n2", *addr(2), {})], 1.0)
    out = swim.receive(addr(1), [Suspect(1, "n2", "n1")], 2.0)
    assert Alive(2, "n2", *addr(2), {}) in messages_to(out, addr(1))


def test_graceful_leave_is_left_and_not_refuted() -> None:
    swim = make(2)
    out = swim.receive(addr(1), [Dead(0, "n1", "n1")], 1.0)
    assert changes(out)[0].member.state == MemberState.LEFT
    leaver = make(2)
    out = leaver.leave(1.0)
    assert leaver.member("n0").state == MemberState.LEFT and leaver.leaving
    assert leaver.leave_pending()
    leaver.receive(addr(1), [Dead(0, "n0", "n1")], 1.1)
    assert leaver.incarnation == 0  # a leaving node does not refute
    gossip = run(leaver, 5.0, 1.0)
    assert any(m == Dead(0, "n0", "n0") for s in sends(gossip) for m in s.messages)
    assert not leaver.leave_pending()  # sent its retransmit limit
    assert not any(isinstance(m, Ping) for s in sends(gossip) for m in s.messages)  # stopped probing


def test_restarted_node_rejoins_with_a_higher_incarnation() -> None:
    old_view = make(2)
    old_view.receive(addr(1), [Dead(6, "n2", "n1")], 1.0)
    assert old_view.member("n2").state == MemberState.DEAD
    restarted = Swim("n2", addr(2), config=CFG, rng=random.Random(2), now=50.0)
    # Its alive at incarnation 0 is older than what the cluster knows: ignored ...
    old_view.receive(addr(2), [Alive(0, "n2", *addr(2), {})], 50.0)
    assert old_view.member("n2").state == MemberState.DEAD
    # ... until the join push-pull tells it about its last life, which it refutes.
    restarted.merge_remote_state(old_view.local_state(), 50.1)
    assert restarted.incarnation == 7
    old_view.merge_remote_state(restarted.local_state(join=True), 50.2)
    assert old_view.member("n2").state == MemberState.ALIVE and old_view.member("n2").incarnation == 7


def test_name_conflict_keeps_the_first_address() -> None:
    swim = make(2)
    out = swim.receive(addr(9), [Alive(9, "n1", *addr(9), {})], 1.0)
    assert [o for o in out if isinstance(o, NameConflict)] == [NameConflict("n1", addr(1), addr(9))]
    assert swim.member("n1").addr == addr(1)
    out = swim.receive(addr(9), [Alive(9, "n0", *addr(9), {})], 1.0)
    assert any(isinstance(o, NameConflict) and o.node == "n0" for o in out)
    assert swim.incarnation == 10  # we keep our name by refuting


def test_dead_name_can_be_reclaimed_after_the_configured_time() -> None:
    cfg = CFG.replace(dead_node_reclaim_s=10.0)
    swim = make(2, config=cfg)
    swim.receive(addr(1), [Dead(0, "n2", "n1")], 1.0)
    swim.receive(addr(9), [Alive(0, "n2", *addr(9), {})], 5.0)
    assert swim.member("n2").addr == addr(2)  # too early
    swim.receive(addr(9), [Alive(0, "n2", *addr(9), {})], 12.0)
    assert swim.member("n2").addr == addr(9) and swim.member("n2").state == MemberState.ALIVE


def test_ping_for_another_name_is_not_answered() -> None:
    swim = make(1)
    assert sends(swim.receive(addr(1), [Ping(1, "someone-else", "n1")], 1.0)) == []
    assert Ack(2) in messages_to(swim.receive(addr(1), [Ping(2, "n0", "n1")], 1.0), addr(1))


def test_indirect_probe_relays_ack_or_nacks_in_time() -> None:
    swim = make(3)
    out = swim.receive(addr(1), [IndirectPing(40, "n2", *addr(2), True, "n1")], 1.0)
    ping = next(m for m in messages_to(out, addr(2)) if isinstance(m, Ping))
    assert ping.target == "n2"
    out = swim.receive(addr(2), [Ack(ping.seq)], 1.1)
    assert Ack(40) in messages_to(out, addr(1))
    out = swim.receive(addr(1), [IndirectPing(41, "n2", *addr(2), True, "n1")], 2.0)
    out = run(swim, 2.0 + CFG.probe_timeout_s, 2.0)
    assert Nack(41) in messages_to(out, addr(1))


def test_packets_respect_the_datagram_budget_and_big_messages_go_by_tcp() -> None:
    swim = make(60)
    for i in range(100, 160):
        swim.receive(addr(1), [Alive(1, f"x{i}", *addr(i % 250), {"k": "v" * 100})], 1.0)
    huge = Route("n1", 1, 1, "svc", "i", 1, {f"t{i}": "v" * 200 for i in range(30)}, 0, False)
    assert wire_size(huge) > swim.budget
    swim.delegate = None
    out = swim.receive(addr(1), [Ping(1, "n0", "n1")], 2.0)
    for s in sends(out + run(swim, 4.0, 2.0)):
        if not s.reliable:
            assert sum(wire_size(m) for m in s.messages) <= swim.budget
    from cluster.swim.core import _Out  # the packer is the unit under test here
    o = _Out()
    swim._pack_and_send(addr(1), [huge, Ack(1)], o)
    assert [(s.reliable, len(s.messages)) for s in o.items] == [(True, 1), (False, 1)]


def test_push_pull_is_scheduled_and_state_merges() -> None:
    swim = make(3)
    out = run(swim, CFG.push_pull_interval_s + 1)
    assert any(isinstance(o, PushPullTo) for o in out)
    remote = PushPull("n1", False, (MemberRecord("n8", *addr(8), 2, MemberState.ALIVE, {}),
                                    MemberRecord("n2", *addr(2), 0, MemberState.DEAD, {})), ())
    swim.merge_remote_state(remote, 40.0)
    assert swim.member("n8").state == MemberState.ALIVE
    # A remote "dead" is only suspected here: the accused gets its chance to refute.
    assert swim.member("n2").state in (MemberState.SUSPECT, MemberState.DEAD)


def test_retransmit_limit_grows_with_log_n() -> None:
    assert [CFG.retransmit_limit(n) for n in (1, 9, 10, 99, 100, 1000)] == [4, 4, 8, 8, 12, 16]


def test_transition_table_forbids_resurrection_without_alive() -> None:
    assert (MemberState.DEAD, MemberState.SUSPECT) not in TRANSITIONS
    assert (MemberState.LEFT, MemberState.DEAD) not in TRANSITIONS
    swim = make(2)
    swim.receive(addr(1), [Dead(0, "n2", "n1")], 1.0)
    out = swim.receive(addr(1), [Suspect(0, "n2", "n1"), Dead(1, "n2", "n1")], 2.0)
    assert changes(out) == [] and swim.member("n2").state == MemberState.DEAD


def test_metadata_over_the_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="meta_max_bytes"):
        Swim("n0", addr(0), config=CFG, rng=random.Random(1), now=0, meta={"k": "v" * 600})
    swim = make(1)
    swim.receive(addr(1), [Alive(0, "n5", *addr(5), {"k": "v" * 600})], 1.0)
    assert swim.member("n5") is None


def test_profiles_validate_and_contradictions_are_refused() -> None:
    for name in ("lan", "wan", "local", "failover"):
        assert profile(name).validate()
    with pytest.raises(ValueError, match="probe_timeout_s"):
        CFG.replace(probe_timeout_s=2.0)
    with pytest.raises(ValueError, match="unknown gossip profile"):
        profile("lna")


def test_routing_delegate_greets_new_members_and_push_pulls_with_revived_ones() -> None:
    from cluster.routing_table import RoutingTable, ServiceEntry
    from cluster.swim.messages import RouteBatch

    table = RoutingTable("n0", 1, CFG)
    table.set_local([ServiceEntry("device.1", "d1")], 0.0)
    swim = Swim("n0", addr(0), config=CFG, rng=random.Random(1), now=0.0, delegate=table)
    out = swim.receive(addr(1), [Alive(0, "n1", *addr(1), {})], 1.0)
    [greeting] = [s for s in sends(out) if s.addr == addr(1)]
    assert greeting.reliable and isinstance(greeting.messages[0], RouteBatch)
    assert greeting.messages[0].groups[0].complete and greeting.messages[0].groups[0].items[0][1] == "device.1"
    swim.receive(addr(1), [Dead(0, "n1", "n2")], 2.0)
    out = swim.receive(addr(1), [Alive(1, "n1", *addr(1), {})], 3.0)
    assert PushPullTo(addr(1)) in out  # back from the dead: digests settle what either side missed
    assert not any(isinstance(m, RouteBatch) for s in sends(out) for m in s.messages)
