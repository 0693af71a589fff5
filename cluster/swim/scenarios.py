"""Measured scenarios on the simulator: the figures issue 5 asks for.

* detection: crash one node, time until each running node marks it dead (one sample per
  observer and trial); the victim is restarted between trials.
* convergence: one node announces a new service entry, time until each other node holds it.
* false deaths: a steady run with loss (and optionally one node paused like SIGSTOP);
  every suspicion timer that declares a node dead while that node is not crashed is a
  false verdict. Reported per node-hour of observed time.
* bytes per node per second: everything sent in the steady run (sealed datagram sizes
  and push-pull exchanges), divided by nodes and seconds; the steady run starts
  ``WARMUP_S`` after the cluster formed, so the join wave is not counted.

All times are virtual seconds of one seeded run: the same arguments give the same numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from cluster.routing_table import RoutesChanged, ServiceEntry

from .config import profile
from .core import MemberChanged
from .messages import MemberState
from .sim import Link, Observed, Simulator

__all__ = ["Scenario", "percentile", "run"]

#: Virtual seconds between forming the cluster and the steady window.
WARMUP_S = 30.0


def percentile(samples: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None without samples."""
    if not samples:
        return None
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]


def _summary(samples: list[float]) -> dict[str, Any]:
    def r(x: float | None) -> float | None:
        return None if x is None else round(x, 3)
    return {"median": r(percentile(samples, 50)), "p99": r(percentile(samples, 99)),
            "max": r(max(samples) if samples else None), "samples": len(samples)}


@dataclass(frozen=True)
class Scenario:
    """Parameters of one measured run."""

    nodes: int
    loss: float = 0.0
    seed: int = 1
    profile: str = "lan"
    steady_s: float = 60.0
    trials: int = 3
    pause_s: float = 0.0
    delay_ms: float = 0.5
    jitter_ms: float = 0.5


def run(sc: Scenario) -> dict[str, Any]:
    """Run the scenario and return its figures as a JSON-ready dict."""
    if sc.nodes < 2:
        raise ValueError("a gossip scenario needs at least 2 nodes")
    sim = Simulator(profile(sc.profile), sc.seed,
                    link=Link(loss=sc.loss, delay_s=sc.delay_ms / 1000, jitter_s=sc.jitter_ms / 1000))
    sim.start(sc.nodes, settle_s=300.0)
    formed = sim.converged()

    false_dead, bytes_per_node_s = _steady(sim, sc)
    convergence = _convergence(sim, sc)
    detection = _detection(sim, sc)
    node_hours = sc.nodes * sc.steady_s / 3600.0
    return {
        "nodes": sc.nodes, "loss": sc.loss, "seed": sc.seed, "profile": sc.profile,
        "pause_s": sc.pause_s, "steady_s": sc.steady_s, "trials": sc.trials, "formed": formed,
        "detection_s": _summary(detection),
        "convergence_s": _summary(convergence),
        "false_dead": false_dead,
        "false_dead_per_node_hour": round(false_dead / node_hours, 3),
        "bytes_per_node_s": round(bytes_per_node_s, 1),
    }


def _steady(sim: Simulator, sc: Scenario) -> tuple[int, float]:
    """Run ``steady_s`` without crashes (one pause if asked); count false verdicts and bytes."""
    verdicts: list[str] = []  # node declared dead, once per declaring observer

    def listen(o: Observed) -> None:
        e = o.event
        if isinstance(e, MemberChanged) and e.declared and e.member.state == MemberState.DEAD:
            verdicts.append(e.member.node)

    # Let the join wave's retransmits die out first: bytes are a steady-state figure.
    sim.run_for(WARMUP_S)
    sim.listeners.append(listen)
    start, sent_before = sim.now, sum(sim.bytes_sent.values())
    if sc.pause_s > 0:
        victim = sim.rng.choice(sorted(sim.nodes))
        sim.at(start + min(5.0, sc.steady_s / 4), lambda: sim.pause(victim))
        sim.at(start + min(5.0, sc.steady_s / 4) + sc.pause_s, lambda: sim.resume(victim))
    sim.run_until(start + sc.steady_s)
    sent = sum(sim.bytes_sent.values()) - sent_before
    sim.listeners.remove(listen)
    false_dead = sum(1 for node in verdicts if sim.nodes[node].status != "crashed")
    sim.run_until_true(sim.converged, 120.0)
    return false_dead, sent / sc.nodes / sc.steady_s


def _convergence(sim: Simulator, sc: Scenario) -> list[float]:
    """Each trial: a random node announces a new service; time until each other node has it."""
    samples: list[float] = []
    for trial in range(sc.trials):
        owner = sim.rng.choice(sorted(n.name for n in sim.up()))
        service = f"com.example.svc{trial}"
        learned: dict[str, float] = {}
        t0 = sim.now

        def listen(o: Observed) -> None:
            e = o.event
            if (isinstance(e, RoutesChanged) and e.node == owner and service in e.services
                    and o.observer not in learned and sim.nodes[o.observer].table.knows(owner, service, "i1")):
                learned[o.observer] = o.at - t0

        sim.listeners.append(listen)
        entries = sim.nodes[owner].table.local_entries() + [ServiceEntry(service, "i1", 1, {}, 0)]
        sim.announce(owner, entries)
        others = [n.name for n in sim.up() if n.name != owner]
        sim.run_until_true(lambda: all(n in learned for n in others), 60.0, step_s=0.01)
        sim.listeners.remove(listen)
        samples.extend(learned[n] for n in others if n in learned)
    return samples


def _detection(sim: Simulator, sc: Scenario) -> list[float]:
    """Each trial: crash a random node; time until each running node marks it dead."""
    samples: list[float] = []
    for _ in range(sc.trials):
        victim = sim.rng.choice(sorted(n.name for n in sim.up()))
        seen: dict[str, float] = {}
        t0 = sim.now

        def listen(o: Observed) -> None:
            e = o.event
            if (isinstance(e, MemberChanged) and e.member.node == victim and e.member.state == MemberState.DEAD
                    and o.observer not in seen):
                seen[o.observer] = o.at - t0

        sim.listeners.append(listen)
        sim.crash(victim)
        others = [n.name for n in sim.up()]
        sim.run_until_true(lambda: all(n in seen for n in others), 300.0)
        sim.listeners.remove(listen)
        samples.extend(seen[n] for n in others if n in seen)
        sim.restart(victim, join=[sim.rng.choice(others)])
        sim.run_until_true(sim.converged, 120.0)
    return samples
