"""The fleet scenario on the simulator: many device services, each on one node, over gossip.

Issue 13: every node must route to every device. ``run_fleet`` starts ``nodes`` simulated
nodes, gives each ``routes / nodes`` device services (``device.<n>``, one instance each,
as devices connect to any node), and measures:

* ``converge_s``: virtual seconds until every node's table holds every route;
* ``bytes_per_node_s``: bytes sent per node per second while converging, and in a steady
  window afterwards (digest-only push-pulls, no route resent);
* ``cpu_s``: process CPU time of the whole simulation of the convergence (all nodes run
  in this one process, so it is the sum over nodes);
* ``bytes_per_route``: tracemalloc of one node's table holding every remote route,
  without the service-name strings (``table``) and those strings alone (``strings``);
* ``one_change``: entries applied and serialized, summed over all nodes, for one device
  that moves from one node to another once everything converged (instrumented counters:
  O(change) means this stays the same whatever ``routes`` is), and how long (virtual)
  every node took to route it to its new node.

All times are virtual seconds of one seeded run, except ``cpu_s``.
"""

from __future__ import annotations

import sys
import time
import tracemalloc
from typing import Any

import msgpack

from cluster.routing_table import RoutingTable, ServiceEntry

from .config import profile
from .messages import RouteBatch, decode_message
from .sim import Link, Simulator

__all__ = ["device", "run_fleet", "table_complete", "work"]

#: Virtual seconds of the steady window measured after convergence.
STEADY_S = 30.0


def device(n: int) -> ServiceEntry:
    """The entry a device registers: its own service, its own instance name."""
    return ServiceEntry(f"device.{n:07d}", f"dev-{n}")


def table_complete(sim: Simulator, owners: dict[str, int]) -> bool:
    """Every running node holds every other node's announced count of routes."""
    for node in sim.up():
        for owner, count in owners.items():
            if owner != node.name and node.table.count(owner) != count:
                return False
    return True


def work(sim: Simulator) -> int:
    """Entries applied plus serialized so far, summed over every node's table."""
    return sum(n.table.stats["entries_applied"] + n.table.stats["entries_serialized"] for n in sim.nodes.values())


def run_fleet(nodes: int, routes: int, *, seed: int = 1, profile_name: str = "lan", loss: float = 0.0,
              measure_memory: bool = True) -> dict[str, Any]:
    """Run the scenario; figures as a JSON-ready dict."""
    if nodes < 2 or routes < nodes:
        raise ValueError("the fleet scenario needs at least 2 nodes and one route per node")
    sim = Simulator(profile(profile_name), seed, link=Link(loss=loss))
    sim.start(nodes, settle_s=300.0)
    names = sorted(sim.nodes)
    per_node: dict[str, list[ServiceEntry]] = {name: [] for name in names}
    for n in range(routes):
        per_node[names[n % nodes]].append(device(n))
    owners = {name: len(entries) for name, entries in per_node.items()}

    cpu0, t0, bytes0 = time.process_time(), sim.now, sum(sim.bytes_sent.values())
    for name, entries in per_node.items():
        sim.announce(name, entries)
    converged = sim.run_until_true(lambda: table_complete(sim, owners), 600.0, step_s=0.05)
    converge_s, cpu_s = sim.now - t0, time.process_time() - cpu0
    converge_bytes = sum(sim.bytes_sent.values()) - bytes0

    steady0, bytes1 = sim.now, sum(sim.bytes_sent.values())
    sim.run_for(STEADY_S)
    steady_bytes = sum(sim.bytes_sent.values()) - bytes1

    figures: dict[str, Any] = {
        "nodes": nodes, "routes": routes, "seed": seed, "profile": profile_name, "loss": loss,
        "converged": converged and table_complete(sim, owners),
        "converge_s": round(converge_s, 3),
        "cpu_s": round(cpu_s, 2),
        "bytes_per_node_s_converging": round(converge_bytes / nodes / max(converge_s, 1e-9), 1),
        "bytes_per_node_s_steady": round(steady_bytes / nodes / (sim.now - steady0), 1),
        "one_change": move_one(sim, names[0], names[1], per_node),
    }
    if measure_memory:
        figures["bytes_per_route"] = memory_per_route(sim, names[0])
    return figures


def move_one(sim: Simulator, old: str, new: str, per_node: dict[str, list[ServiceEntry]]) -> dict[str, Any]:
    """A device reconnects from ``old`` to ``new``: both announce, as their relays would."""
    moved = per_node[old][0]
    before, t0 = work(sim), sim.now
    sim.nodes[new].table.set_local_service(moved.service, [moved], sim.now)
    sim.nodes[old].table.set_local_service(moved.service, [], sim.now)

    def moved_everywhere() -> bool:
        for node in sim.up():
            holders = {e.node for e in node.table.lookup(moved.service)}
            expected = set() if node.name == new else {new}
            if holders != expected:
                return False
        return True

    done = sim.run_until_true(moved_everywhere, 60.0, step_s=0.01)
    return {"moved": done, "seconds": round(sim.now - t0, 3), "entries_touched": work(sim) - before}


def memory_per_route(sim: Simulator, name: str) -> dict[str, float]:
    """Bytes one table takes per remote route: the other nodes' complete sets are encoded,
    then decoded and applied to a fresh table under tracemalloc. ``table`` is its own
    structure (a device's instance name is inside its packed entry), ``strings`` the
    service-name strings it keeps (a real node's registry shares them, when it holds the
    service at all)."""
    wires = [msgpack.packb(m.to_wire()) for n in sim.nodes.values() if n.name != name for m in n.table.greeting()]
    table = RoutingTable(name, 1, sim.config)
    tracemalloc.start()
    try:
        for wire in wires:
            batch = decode_message(msgpack.unpackb(wire))
            assert isinstance(batch, RouteBatch)
            table.on_batch(batch, sim.now)
            del batch
        total, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    routes = sum(table.count(n.name) for n in sim.nodes.values() if n.name != name)
    strings = sum(sys.getsizeof(service) for service in table.remote_services())
    return {"table": round((total - strings) / routes, 1), "strings": round(strings / routes, 1)}
