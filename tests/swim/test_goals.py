"""The goals of issue 5, checked on the simulator (virtual time, so never flaky on a busy
machine): detection median <= 3 s at N <= 50 (``failover`` profile), no false deaths at
10% loss, a new service known everywhere within 1 s at N = 50. The N = 50 runs take a
few seconds of CPU each and are marked slow; a small cluster runs by default."""

from __future__ import annotations

import pytest

from cluster.swim.scenarios import Scenario, run


@pytest.mark.parametrize("nodes", [10])
def test_goals_small_cluster(nodes: int) -> None:
    figures = run(Scenario(nodes=nodes, loss=0.1, seed=11, profile="failover", steady_s=60, trials=2))
    assert figures["detection_s"]["median"] <= 3.0
    assert figures["false_dead"] == 0
    assert figures["convergence_s"]["p99"] <= 1.0


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_goals_fifty_nodes(seed: int) -> None:
    clean = run(Scenario(nodes=50, seed=seed, profile="failover", steady_s=120, trials=3))
    assert clean["detection_s"]["median"] <= 3.0
    assert clean["convergence_s"]["median"] <= 1.0
    lossy = run(Scenario(nodes=50, loss=0.1, seed=seed, profile="failover", steady_s=300, trials=1))
    assert lossy["false_dead"] == 0
    memberlist = run(Scenario(nodes=50, loss=0.1, seed=seed, profile="lan", steady_s=300, trials=1))
    assert memberlist["false_dead"] == 0
