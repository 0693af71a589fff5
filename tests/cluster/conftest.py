"""Fixtures of the real-process cluster suite.

* ``cluster_factory`` (tests/conftest.py) — a :class:`tests.support.cluster.ClusterFactory` for
  one test, for tests that disturb their cluster (kill, pause, drain, restart nodes).
* ``cluster`` (module scope) — three converged nodes with a cluster key, shared by the tests
  of one module that leave it as they found it; they keep apart by service name (the
  ``service`` fixture).

Starting three nodes and waiting for gossip and Raft to agree takes several seconds on a
busy machine, so only disruptive tests pay for their own cluster.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator

import pytest

from tests.support.cluster import Cluster, ClusterFactory


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """Three converged nodes for one module."""
    factory = ClusterFactory()
    try:
        started = factory.start(3, "--cluster-key", str(factory.key_file()))  # keyed, as deployed: links prove the key
        asyncio.run(started.wait_converged())
        yield started
    finally:
        factory.close()


@pytest.fixture
def service(request: pytest.FixtureRequest) -> str:
    """A service name unique to this test (and its parameters)."""
    return "c." + re.sub(r"[^a-z0-9]+", "_", request.node.name.lower()).strip("_")
