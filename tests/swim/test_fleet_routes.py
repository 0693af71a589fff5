"""Issue 13 on the simulator: fleet-size routing tables converge, one change costs O(change)
(instrumented counters, not time), unchanged tables are not resent, a device moves between
nodes within a gossip round or two, and missed batches are repaired by digest push-pull."""

from __future__ import annotations

import pytest

from cluster.swim.config import profile
from cluster.swim.fleet import device, move_one, run_fleet, table_complete, work
from cluster.swim.sim import Simulator

LAN = profile("lan")


def spread(sim: Simulator, routes: int) -> dict[str, list]:
    names = sorted(sim.nodes)
    per_node: dict[str, list] = {name: [] for name in names}
    for n in range(routes):
        per_node[names[n % len(names)]].append(device(n))
    for name, entries in per_node.items():
        sim.announce(name, entries)
    return per_node


def counts(per_node: dict[str, list]) -> dict[str, int]:
    return {name: len(entries) for name, entries in per_node.items()}


@pytest.fixture(scope="module")
def small() -> dict:
    return run_fleet(5, 1_000, measure_memory=False)


@pytest.fixture(scope="module")
def large() -> dict:
    return run_fleet(5, 5_000)


def test_5000_device_routes_over_5_nodes_converge_everywhere(large: dict) -> None:
    assert large["converged"] is True
    # Batches of up to 8192 entries go out once per gossip round: a few rounds, not minutes.
    assert large["converge_s"] <= 5 * LAN.gossip_interval_s
    # the table's own structure per remote route, the device's instance name included (one
    # packed bytes per entry; a tuple, an int and a str took ~180 before)
    assert large["bytes_per_route"]["table"] < 120


def test_one_change_costs_the_same_work_whatever_the_table_size(small: dict, large: dict) -> None:
    # A device moving from one node to another: two entries change (a removal, an
    # announcement), each applied once by every other node and serialized once by its owner.
    assert small["one_change"]["moved"] and large["one_change"]["moved"]
    assert small["one_change"]["entries_touched"] == large["one_change"]["entries_touched"] == 2 * (1 + 4)


def test_a_moved_device_is_routed_to_its_new_node_within_two_gossip_rounds(large: dict) -> None:
    # No node keeps routing to the old node (or to none) longer than this: far below the
    # failure-detection time (seconds), and virtual time, so a busy machine cannot miss it.
    assert large["one_change"]["seconds"] <= 2 * LAN.gossip_interval_s + 0.05


def test_unchanged_tables_are_not_resent_by_push_pull() -> None:
    sim = Simulator(profile("local"), seed=5)
    sim.start(4)
    owners = counts(spread(sim, 2_000))
    assert sim.run_until_true(lambda: table_complete(sim, owners), 30.0)
    before = work(sim)
    sim.run_for(3 * sim.config.push_pull_interval_s)  # several push-pulls by every node
    assert work(sim) == before  # digests matched: no entry serialized or applied


def test_a_batch_lost_to_a_partition_is_repaired_by_digest_push_pull() -> None:
    sim = Simulator(profile("local"), seed=9)
    sim.start(4)
    owners = counts(spread(sim, 400))
    assert sim.run_until_true(lambda: table_complete(sim, owners), 30.0)
    sim.partition(["n0"], ["n3"], one_way=True)  # n0's direct batches do not reach n3
    sim.announce("n0", [device(n) for n in range(10_000, 10_050)])
    sim.run_for(0.5)
    assert sim.nodes["n3"].table.count("n0") == owners["n0"]  # missed
    sim.heal()
    owners["n0"] = 50
    assert sim.run_until_true(lambda: table_complete(sim, owners), 4 * sim.config.push_pull_interval_s)


def test_a_node_that_joins_late_gets_every_route_and_a_dead_node_takes_its_own() -> None:
    sim = Simulator(profile("local"), seed=3)
    sim.start(3)
    per_node = spread(sim, 900)
    owners = counts(per_node)
    assert sim.run_until_true(lambda: table_complete(sim, owners), 30.0)
    sim.add_node("n3", join=["n1"])
    owners["n3"] = 0
    assert sim.run_until_true(lambda: table_complete(sim, owners), 10.0)
    sim.crash("n2")
    del owners["n2"]
    assert sim.run_until_true(
        lambda: all(n.table.count("n2") == 0 for n in sim.up()) and table_complete(sim, owners), 60.0)


def test_move_between_nodes_keeps_one_holder(large: dict) -> None:
    sim = Simulator(profile("lan"), seed=2)
    sim.start(3)
    per_node = spread(sim, 300)
    assert sim.run_until_true(lambda: table_complete(sim, counts(per_node)), 30.0)
    result = move_one(sim, "n2", "n0", per_node)
    assert result["moved"] and result["entries_touched"] == 2 * 3
