"""Simulator properties over many seeds (each run is deterministic, in virtual time).

* Eventual agreement: after random faults (loss, one-way and two-way partitions, a crash,
  a pause) heal and crashed nodes restart, every node sees exactly the running nodes
  alive, and every node holds every running node's routing entries and no others.
* No false verdicts: without loss and without pauses, only crashed nodes are declared dead.
* Incarnations never go backwards, in any observer's view.
"""

from __future__ import annotations

import pytest

from cluster.routing_table import ServiceEntry
from cluster.swim.config import profile
from cluster.swim.core import MemberChanged
from cluster.swim.messages import MemberState
from cluster.swim.sim import Link, Observed, Simulator

CFG = profile("local")


class IncarnationWatch:
    """Listener asserting that each observer's view of each member's incarnation only grows."""

    def __init__(self) -> None:
        self.seen: dict[tuple[str, str], int] = {}
        self.violations: list[tuple[str, str, int, int]] = []

    def __call__(self, o: Observed) -> None:
        e = o.event
        if isinstance(e, MemberChanged):
            key = (o.observer, e.member.node)
            before = self.seen.get(key, -1)
            if e.previous is not None and e.member.incarnation < before:
                self.violations.append((o.observer, e.member.node, before, e.member.incarnation))
            self.seen[key] = max(before, e.member.incarnation)


def routes_agree(sim: Simulator) -> bool:
    running = {n.name for n in sim.up()}
    for node in sim.up():
        for owner in running - {node.name}:
            if not node.table.knows(owner, f"svc.{owner}", "i"):
                return False
        for crashed in set(sim.nodes) - running:
            if node.table.services_of(crashed):
                return False
    return True


def announce_all(sim: Simulator) -> None:
    for node in sim.up():
        sim.announce(node.name, [ServiceEntry(f"svc.{node.name}", "i")])


@pytest.mark.parametrize("seed", range(12))
def test_eventual_agreement_after_faults_heal(seed: int) -> None:
    sim = Simulator(CFG, seed, link=Link(delay_s=0.001, jitter_s=0.002))
    watch = IncarnationWatch()
    sim.listeners.append(watch)
    n = 4 + seed % 5
    sim.start(n)
    announce_all(sim)
    names = sorted(sim.nodes)
    rng = sim.rng
    victim, sleeper = rng.sample(names, 2)
    rest = [x for x in names if x not in (victim, sleeper)]
    # Faults, one after another, overlapping a little.
    sim.default_link.loss = rng.choice([0.05, 0.2, 0.4])
    sim.run_for(rng.uniform(2, 8))
    half = rng.sample(names, len(names) // 2)
    sim.partition(half, [x for x in names if x not in half], one_way=rng.random() < 0.5)
    sim.run_for(rng.uniform(1, 8))
    sim.crash(victim)
    sim.pause(sleeper)
    sim.run_for(rng.uniform(1, 5))
    sim.resume(sleeper)
    sim.heal()
    sim.default_link.loss = 0.0
    sim.run_for(10)
    sim.restart(victim, join=[rng.choice(rest)])
    announce_all(sim)
    assert sim.run_until_true(lambda: sim.converged() and routes_agree(sim), 120.0), (
        seed, {x.name: sorted(x.swim.names_in(MemberState.ALIVE)) for x in sim.up()})
    assert watch.violations == []


@pytest.mark.parametrize("seed", range(8))
def test_only_crashed_nodes_are_declared_dead_without_loss_or_pause(seed: int) -> None:
    sim = Simulator(profile("failover"), 100 + seed, link=Link(delay_s=0.0005, jitter_s=0.005))
    watch = IncarnationWatch()
    sim.listeners.append(watch)
    verdicts: list[str] = []
    sim.listeners.append(lambda o: verdicts.append(o.event.member.node)
                         if isinstance(o.event, MemberChanged) and o.event.declared else None)
    sim.start(12)
    crashed = sim.rng.sample(sorted(sim.nodes), 2)
    sim.run_for(5)
    sim.crash(crashed[0])
    sim.run_for(10)
    sim.crash(crashed[1])
    sim.run_for(5)
    sim.restart(crashed[0], join=[next(x for x in sorted(sim.nodes) if x not in crashed)])
    sim.run_for(40)
    assert set(verdicts) <= set(crashed), verdicts
    assert set(verdicts) == set(crashed)  # and both were detected
    assert sim.converged()
    assert watch.violations == []


def test_same_seed_same_run() -> None:
    def trace(seed: int) -> list[tuple[float, str, str, str]]:
        sim = Simulator(CFG, seed, link=Link(loss=0.1), record=True)
        sim.start(6)
        sim.crash("n3")
        sim.run_for(20)
        return [(round(o.at, 6), o.observer, o.event.member.node, o.event.member.state.name)
                for o in sim.events if isinstance(o.event, MemberChanged)]

    assert trace(5) == trace(5)
    assert trace(5) != trace(6)


def test_paused_node_is_buffered_and_refutes_on_resume() -> None:
    sim = Simulator(CFG, 3)
    sim.start(5)
    sim.pause("n2")
    sim.run_for(30)  # long enough to be declared dead
    assert sim.state_of("n0", "n2") == MemberState.DEAD
    sim.resume("n2")
    assert sim.run_until_true(sim.converged, 30.0)
    assert sim.nodes["n2"].swim.incarnation >= 1
