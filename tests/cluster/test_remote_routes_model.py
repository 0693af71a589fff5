"""The registry's view of remote routes against a dumb reference (Hypothesis).

Real parts throughout: owner nodes' :class:`RoutingTable` s announce, batches go to this
node's table, its ``RoutesChanged`` events go to :class:`RemoteRoutes` as
``cluster.runtime`` hands them on, and local providers are real relay sessions (SETUP with
a registration). Whatever the changes, the registry must answer as if it held a provider
object for every entry (issue 13 keeps none for a service that is one device on one
node): same providers, same names, same pick outcome. And a fleet of devices on other
nodes costs the registry no entry at all.
"""

from __future__ import annotations

import asyncio

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from broker.relay import Broker
from broker.settings import Settings
from cluster.links import Links
from cluster.remote_routes import RemoteRoutes
from cluster.routing_table import RoutesChanged, RoutingTable, ServiceEntry
from cluster.swim.config import profile
from tests.support.memory_session import MemorySession
from tests.support.rawclient import provider_setup

CFG = profile("lan")
SERVICES = ["dev.1", "dev.2", "svc.x"]
OWNERS = ["n1", "n2"]


class Node:
    """Node n0's table, registry and RemoteRoutes, fed by owner tables."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.broker = Broker(Settings(node_id="n0"), self.loop)
        self.table = RoutingTable("n0", 1, CFG)
        self.remote = RemoteRoutes(self.broker.registry, Links(self.broker, "n0", None), self.table)
        self.owners = {name: RoutingTable(name, 1, CFG) for name in OWNERS}

    def announce(self, owner: str, service: str, entries: list[ServiceEntry]) -> None:
        table = self.owners[owner]
        table.set_local_service(service, entries, 0.0)
        while messages := table.take_direct(0.0):
            for batch in messages:
                for event in self.table.on_batch(batch, 0.0):  # type: ignore[arg-type]
                    if isinstance(event, RoutesChanged):
                        for name in event.services:
                            self.remote.changed(name)


def test_a_fleet_on_other_nodes_costs_the_registry_no_entry() -> None:
    node = Node()
    for n in range(100):
        node.announce(OWNERS[n % 2], f"device.{n}", [ServiceEntry(f"device.{n}", f"dev-{n}")])
    registry = node.broker.registry
    assert registry._services == {}
    assert sorted(registry.names()) == sorted(f"device.{n}" for n in range(100))
    [p] = registry.providers("device.7")
    assert (p.node, p.instance, p.is_remote) == ("n2", "dev-7", True)
    # no link to n2 is up here: the pick says so, as for a provider object
    assert registry.pick("device.7", 0.0) == (None, "no provider for service 'device.7' reachable (links to its nodes are down)")
    assert registry.pick("device.7", 0.0, local_only=True)[1] == "no provider for service 'device.7' on this node"
    assert registry.pick("device.100", 0.0) == (None, "no provider for service 'device.100'")
    # a second instance, a weight, a local provider: objects again
    node.announce("n1", "device.7", [ServiceEntry("device.7", "dev-7b", weight=3)])
    assert set(registry._services) == {"device.7"}
    assert sorted((p.node, p.instance, p.weight) for p in registry.providers("device.7")) == [("n1", "dev-7b", 3), ("n2", "dev-7", 1)]
    node.announce("n1", "device.7", [])
    assert registry._services == {}
    # picked once, then the device moves: the next pick goes to its new node
    assert registry.remote is not None and registry.remote.sole("device.7").node == "n2"  # type: ignore[union-attr]
    node.announce("n2", "device.7", [])
    node.announce("n1", "device.7", [ServiceEntry("device.7", "dev-7")])
    assert registry.remote.sole("device.7").node == "n1"  # type: ignore[union-attr]


class RegistryMatchesTable(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.node = Node()
        self.locals: dict[str, list[MemorySession]] = {s: [] for s in SERVICES}
        self.port = 40000

    @rule(owner=st.sampled_from(OWNERS), service=st.sampled_from(SERVICES),
          instances=st.lists(st.tuples(st.sampled_from(["a", "b"]), st.sampled_from([1, 2]), st.booleans(),
                                       st.sampled_from([0, 0, 5])), max_size=2, unique_by=lambda t: t[0]))
    def announce(self, owner: str, service: str, instances: list[tuple[str, int, bool, int]]) -> None:
        entries = [ServiceEntry(service, f"{owner}-{i}", w, {"canary": "1"} if tagged else {}, load)
                   for i, w, tagged, load in instances]
        self.node.announce(owner, service, entries)

    @rule(service=st.sampled_from(SERVICES))
    def local_provider(self, service: str) -> None:
        self.port += 1
        session = MemorySession(self.node.broker, self.port)
        session.feed(provider_setup([service], f"local-{self.port}"))
        self.locals[service].append(session)

    @rule(service=st.sampled_from(SERVICES), data=st.data())
    def local_leaves(self, service: str, data: st.DataObject) -> None:
        if self.locals[service]:
            session = data.draw(st.sampled_from(self.locals[service]))
            self.locals[service].remove(session)
            session.close()

    @invariant()
    def registry_answers_as_the_table_says(self) -> None:
        registry, table = self.node.broker.registry, self.node.table
        expected_names = set()
        for service in SERVICES:
            remote = sorted((e.node, e.entry.instance, e.entry.weight, e.entry.load, dict(e.entry.tags))
                            for e in table.lookup(service))
            local = sorted(s.instance for s in self.locals[service])
            providers = registry.providers(service)
            assert sorted((p.node, p.instance, p.weight, p.load, dict(p.tags)) for p in providers if p.is_remote) == remote
            assert sorted(p.instance for p in providers if not p.is_remote) == local
            if remote or local:
                expected_names.add(service)
            for where in ("n0", *OWNERS):  # the admin API's ?node= filter
                held = bool(local) if where == "n0" else any(r[0] == where for r in remote)
                assert registry.served_on(service, where, "n0") == held
            sole = self.node.remote.sole(service)  # what a pick gets when the registry holds no entry
            if len(remote) == 1 and remote[0][2:] == (1, 0, {}):
                assert sole is not None and (sole.node, sole.instance) == remote[0][:2]
            else:
                assert sole is None
            chosen, why = registry.pick(service, 0.0)
            if local:  # prefer_local, and no link is up for the remote ones
                assert chosen is not None and chosen.instance in local
            elif remote:
                assert chosen is None and "links to its nodes are down" in why
            else:
                assert chosen is None and why == f"no provider for service '{service}'"
        assert set(registry.names()) == expected_names


TestRegistryMatchesTable = RegistryMatchesTable.TestCase
TestRegistryMatchesTable.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
