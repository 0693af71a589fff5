"""Real N-node clusters of ``rsbroker serve`` processes for tests, always stopped by PID.

::

    with ClusterFactory() as factory:                   # or the cluster fixtures of tests/cluster
        cluster = factory.start(3)                      # n1 first, n2 and n3 --join n1
        await cluster.wait_converged()                  # everyone alive everywhere, Raft has them all
        n2 = cluster["n2"]                              # a BrokerProcess (tcp, ws, admin, cluster)
        n2.kill()                                       # SIGKILL
        await cluster.wait_member_state("n2", "dead")   # on every other node
        cluster.restart("n2")                           # same --data-dir, same gossip port

* Every listener binds port 0 on 127.0.0.1 except the gossip port of a restarted node, which
  keeps its address so that the others' view of it (and Raft's peer address) stays valid.
* Each node has its own ``--data-dir`` under one temporary directory, kept across restarts
  (that is what a rolling restart is about) and removed at :meth:`ClusterFactory.close`.
* Starting is synchronous (like :class:`~tests.support.brokerproc.BrokerFactory`); waiting
  for the cluster to agree is ``async`` because it polls every node's admin API.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Self


from cluster.crypto import new_key
from tests.support.admin import Admin, get_json, send_json, wait_for
from tests.support.brokerproc import BrokerFactory, BrokerProcess

__all__ = ["CONVERGE_TIMEOUT_S", "Cluster", "ClusterFactory", "member_states", "members", "put_config", "view_agrees"]

#: Bound on a cluster agreeing after a start or a fault heals: join, gossip, Raft catch-up on
#: a busy machine; it bounds the wait, it is no claim about speed.
CONVERGE_TIMEOUT_S = 60.0


async def members(admin: Admin) -> list[dict[str, Any]]:
    """``GET /api/v1/members`` of one node."""
    status, body = await get_json(admin, "/api/v1/members")
    assert status == 200, body
    return list(body["members"])


async def member_states(admin: Admin) -> dict[str, str]:
    """``{node_id: state}`` as one node sees the cluster."""
    return {m["node_id"]: m["state"] for m in await members(admin)}


async def put_config(admin: Admin, key: str, value: Any) -> int:
    """``PUT /api/v1/config/<key>`` on one node (it forwards to the Raft leader); returns the
    Raft index of the acknowledged write, fails the test on any other answer."""
    status, body = await send_json(admin, "PUT", f"/api/v1/config/{key}", value)
    assert status == 200, body
    return int(body["index"])


def view_agrees(expected: set[str], states: dict[str, str], raft: dict[str, Any] | None) -> bool:
    """One node's view is converged: every expected node alive, a Raft leader, all of them voters."""
    if any(states.get(other) != "alive" for other in expected) or not raft or not raft.get("leader"):
        return False
    voters = {m for m, info in raft.get("members", {}).items() if info.get("voter")}
    return expected <= voters


class Cluster:
    """The nodes of one cluster, by node id, and the arguments to start them again."""

    def __init__(
        self, factory: BrokerFactory, root: Path, extra_args: Sequence[str], admin_token: str | None = None
    ) -> None:
        self._factory = factory
        self.root = root
        self.extra_args = list(extra_args)
        #: given to every node (see ``BrokerProcess.admin_token``): needed when authentication is on
        self.admin_token = admin_token
        self.nodes: dict[str, BrokerProcess] = {}
        #: per node: arguments given only to that node (e.g. ``--advertise``)
        self.node_args: dict[str, list[str]] = {}

    # -- access -----------------------------------------------------------------------------

    def __getitem__(self, node_id: str) -> BrokerProcess:
        return self.nodes[node_id]

    def __iter__(self) -> Iterator[BrokerProcess]:
        return iter(self.nodes.values())

    @property
    def running(self) -> list[BrokerProcess]:
        return [n for n in self.nodes.values() if n.running]

    def data_dir(self, node_id: str) -> Path:
        return self.root / node_id

    def tcp_addresses(self) -> list[str]:
        """The RSocket TCP address of every running node (for ``connect_cluster``)."""
        return [str(n.tcp) for n in self.running]

    # -- life -------------------------------------------------------------------------------

    def start_node(
        self,
        node_id: str,
        *node_args: str,
        cluster_address: str = "127.0.0.1:0",
        join: Sequence[str] | None = None,
    ) -> BrokerProcess:
        """Start ``node_id``, joining through ``join`` (gossip addresses; default: every running node)."""
        seeds = list(join) if join is not None else [str(n.cluster) for n in self.running if n.node_id != node_id]
        args = [
            "--cluster", cluster_address,
            "--data-dir", str(self.data_dir(node_id)),
            *(["--join", ",".join(seeds)] if seeds else []),
            *self.extra_args,
            *node_args,
        ]  # fmt: skip
        self.node_args[node_id] = list(node_args)
        node = self._factory.start(*args, node_id=node_id, admin_token=self.admin_token)
        self.nodes[node_id] = node
        return node

    def restart(self, node_id: str) -> BrokerProcess:
        """Start a stopped node again: same data directory, gossip address and own arguments."""
        old = self.nodes[node_id]
        assert not old.running, f"{node_id} still runs; stop or kill it first"
        return self.start_node(node_id, *self.node_args[node_id], cluster_address=str(old.cluster))

    # -- agreement --------------------------------------------------------------------------

    async def converged(self) -> bool:
        """Every running node sees every running node alive, and its Raft group has a leader
        with every running node as a voter."""
        expected = {n.node_id for n in self.running}
        for node in self.running:
            status, raft = await get_json(node, "/api/v1/raft")
            if not view_agrees(expected, await member_states(node), raft if status == 200 else None):
                return False
        return True

    async def wait_converged(self, timeout: float = CONVERGE_TIMEOUT_S) -> None:
        await wait_for(self.converged, timeout=timeout, interval=0.2, message="the cluster to converge")

    async def wait_member_state(self, node_id: str, state: str, timeout: float = CONVERGE_TIMEOUT_S) -> None:
        """Every other running node reports ``node_id`` in ``state`` (alive/suspect/dead/left)."""

        async def agreed() -> bool:
            for node in self.running:
                if node.node_id != node_id:
                    if (await member_states(node)).get(node_id) != state:
                        return False
            return True

        await wait_for(agreed, timeout=timeout, interval=0.1, message=f"every node to see {node_id} {state}")

    async def wait_serves(self, service: str, instances: set[str], timeout: float = CONVERGE_TIMEOUT_S) -> None:
        """Every running node lists exactly ``instances`` as providers of ``service``."""

        async def agreed() -> bool:
            for node in self.running:
                status, body = await get_json(node, "/api/v1/services")
                entry = body["services"].get(service) if status == 200 else None
                found = {p["instance"] for p in entry["providers"]} if entry else set()
                if found != instances:
                    return False
            return True

        await wait_for(agreed, timeout=timeout, interval=0.1, message=f"every node to list {sorted(instances)} for {service}")


class ClusterFactory:
    """Starts clusters (and lone brokers) and stops every process it started by PID."""

    def __init__(self) -> None:
        self.brokers = BrokerFactory()

    def key_file(self) -> Path:
        """A fresh cluster key file (``--cluster-key``), removed at :meth:`close`. Nodes with
        authentication on refuse to run a keyless cluster."""
        path = self.brokers.tmpdir("rsbroker-key-") / "cluster.key"
        path.write_text(new_key() + "\n")
        return path

    def start(
        self,
        size: int,
        *extra_args: str,
        node_args: dict[str, Sequence[str]] | None = None,
        admin_token: str | None = None,
    ) -> Cluster:
        """Start ``n1``, then ``n2`` .. ``n<size>`` with ``--join <n1's gossip address>``.

        ``extra_args`` go to every node, ``node_args[node_id]`` to one node only;
        ``admin_token`` is the bearer token for their admin APIs (when authentication is
        on). Call :meth:`Cluster.wait_converged` before relying on the cluster.
        """
        root = self.brokers.tmpdir("rsbroker-cluster-")
        cluster = Cluster(self.brokers, root, extra_args, admin_token)
        for i in range(1, size + 1):
            node_id = f"n{i}"
            seed = [] if i == 1 else [str(cluster["n1"].cluster)]
            cluster.start_node(node_id, *(node_args or {}).get(node_id, ()), join=seed)
        return cluster

    def close(self) -> None:
        """Stop every node: SIGTERM to all at once so their drains overlap, then wait for
        each (SIGKILL after the stop timeout), and remove the data directories."""
        for process in self.brokers.processes:
            process.signal(signal.SIGTERM)
        self.brokers.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
