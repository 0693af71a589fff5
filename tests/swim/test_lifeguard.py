"""Lifeguard (Dadgar et al., 2018), one test per component of the paper.

1. LHA-Probe: "a member that misses nacks raises its local health multiplier and scales
   its probe interval and timeout by it"; successful probes lower it.
2. LHA-Suspicion: "the suspicion timeout starts at Max and decreases logarithmically with
   each independent confirmation, down to Min after K confirmations".
3. Buddy system: "a member probing a suspect piggybacks the suspicion on the ping, so the
   suspect learns of it at once and can refute".
"""

from __future__ import annotations

import math

from cluster.swim.awareness import Awareness
from cluster.swim.messages import Ack, Alive, IndirectPing, MemberState, Nack, Ping, Suspect
from cluster.swim.suspicion import Suspicion

from .helpers import CFG, addr, changes, make, messages_to, sends


# ---- 1. LHA-Probe ----------------------------------------------------------------------

def test_awareness_scales_and_saturates() -> None:
    a = Awareness(max_multiplier=8)
    assert a.scale(0.5) == 0.5
    assert a.apply(3) == 3 and a.scale(0.5) == 2.0
    assert a.apply(100) == 7  # saturates at max - 1
    assert a.apply(-100) == 0


def _probe_to_failure(swim, nacks: int) -> tuple[float, list[object]]:
    """Run one probe of a silent target; helpers answer ``nacks`` nacks. Returns the time
    the probe failed and the outputs of that tick (which start the next probe)."""
    while True:
        t = swim.next_deadline()
        out = swim.tick(t)
        if any(isinstance(m, Ping) for s in sends(out) for m in s.messages):
            break
    ping = next(m for s in sends(out) for m in s.messages if isinstance(m, Ping))
    out = swim.tick(t + CFG.probe_timeout_s)  # direct ack missed: ask helpers
    helpers = [s.addr for s in sends(out) if any(isinstance(m, IndirectPing) for m in s.messages)]
    assert len(helpers) == CFG.indirect_checks
    for helper in helpers[:nacks]:
        swim.receive(helper, [Nack(ping.seq)], t + CFG.probe_timeout_s + 0.1)
    end = t + CFG.probe_interval_s
    return end, swim.tick(end)


def _kinds(outputs: list[object]) -> set[type]:
    return {type(m) for s in sends(outputs) for m in s.messages}


def test_missed_nacks_raise_health_score_and_stretch_probing() -> None:
    swim = make(5)
    end, out = _probe_to_failure(swim, nacks=0)
    assert swim.awareness.score == CFG.indirect_checks  # every expected nack was missed
    assert Ping in _kinds(out)  # the next probe started as the last one failed
    scale = CFG.indirect_checks + 1
    # Its direct timeout is stretched: no indirect probe before probe_timeout * (score + 1).
    assert IndirectPing not in _kinds(swim.tick(end + CFG.probe_timeout_s * scale - 0.01))
    assert IndirectPing in _kinds(swim.tick(end + CFG.probe_timeout_s * scale))
    # And so is its interval: no new probe before probe_interval * (score + 1).
    later = swim.tick(end + CFG.probe_interval_s * scale - 0.01)
    assert Ping not in _kinds(later)


def test_received_nacks_mean_the_target_not_us_is_the_problem() -> None:
    swim = make(5)
    _probe_to_failure(swim, nacks=CFG.indirect_checks)
    assert swim.awareness.score == 0


def test_successful_probe_lowers_health_score() -> None:
    swim = make(3)
    swim.awareness.apply(4)
    t = swim.next_deadline()
    out = swim.tick(t)
    send = next(s for s in sends(out) if any(isinstance(m, Ping) for m in s.messages))
    ping = next(m for m in send.messages if isinstance(m, Ping))
    swim.receive(send.addr, [Ack(ping.seq)], t + 0.01)
    assert swim.awareness.score == 3


def test_being_accused_raises_health_score() -> None:
    swim = make(3)
    swim.receive(addr(1), [Suspect(0, "n0", "n1")], 1.0)
    assert swim.awareness.score == 1 and swim.incarnation == 1


# ---- 2. LHA-Suspicion -------------------------------------------------------------------

def test_suspicion_timeout_shrinks_logarithmically_with_confirmations() -> None:
    s = Suspicion("a", k=3, min_s=2.0, max_s=12.0, start=100.0)
    assert s.deadline == 112.0
    deadlines = [s.deadline]
    for who in ("b", "c", "d"):
        assert s.confirm(who)
        deadlines.append(s.deadline)
    expected = [100 + max(2.0, 12.0 - 10.0 * math.log(c + 1) / math.log(4)) for c in range(4)]
    assert deadlines == expected
    assert deadlines[-1] == 102.0
    assert not s.confirm("e")  # beyond k: no effect


def test_confirmations_must_be_independent() -> None:
    s = Suspicion("a", k=2, min_s=1.0, max_s=6.0, start=0.0)
    assert not s.confirm("a")  # the accuser again
    assert s.confirm("b")
    assert not s.confirm("b")  # the same confirmer again
    assert s.confirmations == 1


def test_core_declares_dead_at_max_alone_and_at_min_when_confirmed() -> None:
    n = 10
    lone, confirmed = make(n), make(n)
    for swim in (lone, confirmed):
        swim.receive(addr(1), [Suspect(0, "n5", "n1")], 0.0)
        assert swim.member("n5").state == MemberState.SUSPECT
    k = CFG.suspicion_confirmations(n + 1)
    for i in range(k):
        confirmed.receive(addr(2 + i), [Suspect(0, "n5", f"n{2 + i}")], 0.1)
    min_s = CFG.suspicion_min_s(n + 1)
    max_s = min_s * CFG.suspicion_max_timeout_mult

    def dead_at(swim) -> float:
        """Tick until n5 is declared dead; every probe is answered (n5 too: an ack does not
        lift a suspicion, only a refutation does), so no confirmation comes from us."""
        while True:
            t = swim.next_deadline()
            out = swim.tick(t)
            for s in sends(out):
                for m in s.messages:
                    if isinstance(m, Ping):
                        swim.receive(s.addr, [Ack(m.seq)], t)
            if any(c.member.node == "n5" and c.member.state == MemberState.DEAD and c.declared for c in changes(out)):
                return t

    assert math.isclose(dead_at(confirmed), min_s)
    assert math.isclose(dead_at(lone), max_s)


# ---- 3. Buddy system ---------------------------------------------------------------------

def test_probe_of_a_suspect_carries_the_suspicion() -> None:
    swim = make(1)  # one peer: every probe goes to n1
    swim.receive(addr(1), [], 0.0)
    swim.receive(addr(2), [Suspect(0, "n1", "n9")], 0.0)
    out = swim.tick(swim.next_deadline())
    to_suspect = messages_to(out, addr(1))
    assert any(isinstance(m, Ping) for m in to_suspect)
    assert Suspect(0, "n1", "n0") in to_suspect


def test_suspect_refutes_at_once_when_buddy_tells_it() -> None:
    suspect = make(2, name="n0")
    out = suspect.receive(addr(1), [Ping(7, "n0", "n1"), Suspect(0, "n0", "n1")], 1.0)
    reply = messages_to(out, addr(1))
    assert Ack(7) in reply
    alive = [m for m in reply if isinstance(m, Alive) and m.node == "n0"]
    assert alive and alive[0].inc == 1  # the refutation rides the ack


# ---- the three together, in the simulator -------------------------------------------------

def _accusations_by_slow_node(config, seed: int) -> tuple[int, int]:
    """n0's links are slower than a probe interval both ways (an overloaded host): how
    many times n0 suspects a healthy peer in 2 minutes, and how many false verdicts."""
    from cluster.swim.core import MemberChanged
    from cluster.swim.sim import Link, Simulator

    sim = Simulator(config, seed)
    sim.start(10)
    slow = Link(delay_s=0.55, jitter_s=0.05)
    for other in sim.nodes:
        if other != "n0":
            sim.set_link("n0", other, slow)
            sim.set_link(other, "n0", slow)
    counts = [0, 0]

    def listen(o) -> None:
        e = o.event
        if isinstance(e, MemberChanged) and o.observer == "n0" and e.member.state == MemberState.SUSPECT:
            counts[0] += 1
        if isinstance(e, MemberChanged) and e.declared:
            counts[1] += 1

    sim.listeners.append(listen)
    sim.run_for(120)
    return counts[0], counts[1]


def test_slow_node_stops_accusing_healthy_peers() -> None:
    """Lifeguard's headline claim: the slow member, not its healthy peers, backs off."""
    without = CFG.replace(awareness_max_multiplier=1, suspicion_max_timeout_mult=1)
    for seed in (1, 2):
        with_lifeguard, false_with = _accusations_by_slow_node(CFG, seed)
        plain, _ = _accusations_by_slow_node(without, seed)
        assert false_with == 0
        assert with_lifeguard * 10 < plain, (with_lifeguard, plain)
