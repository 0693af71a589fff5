"""Memory per remote route and routing CPU per change on one node (issue 13).

Run it standalone (a few seconds per size)::

    python -m benchmarks.route_memory [--sizes 50000,200000] [--owners 9] [--changes 2000] [--json FILE]

Per size, one node (``n0``) learns ``size`` device routes (``device.<n>``, one instance
each, as devices register) held by ``--owners`` other nodes, the way a real node does:
each owner's complete set is encoded for the wire, decoded, applied to n0's
:class:`~cluster.routing_table.RoutingTable`, and every ``RoutesChanged`` is handed to
n0's :class:`~cluster.remote_routes.RemoteRoutes`, which keeps the relay's registry equal
to the table (as ``cluster.runtime`` does). Under tracemalloc, after the batches are freed:

* ``table_b`` — the routing table's bytes per remote route;
* ``registry_b`` — the registry's and RemoteRoutes' bytes per remote route;
* ``strings_b`` — of that total, the service and instance strings' share as they are held
  (the service name is shared by table and registry; an instance held only inside a packed
  record is counted in ``table_b``, not here);
* ``total_b`` / ``total_without_strings_b``.

Then ``--changes`` devices move from one owner to another (removal at the old owner,
entry at the new one, each a one-entry batch applied as it arrives):

* ``us_per_change`` — CPU microseconds per applied change in the table plus the registry
  update (the gossip-side work per change, the wire codec excluded);
* ``entries_applied_per_change`` — the table's work counter per change (1: O(change)).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import time
import tracemalloc
from typing import Any

import msgpack

from broker.relay import Broker
from broker.settings import Settings
from cluster.links import Links
from cluster.remote_routes import RemoteRoutes
from cluster.routing_table import RoutesChanged, RoutingTable
from cluster.swim.config import profile
from cluster.swim.fleet import device
from cluster.swim.messages import RouteBatch, decode_message


def _decode(wire: bytes) -> RouteBatch:
    batch = decode_message(msgpack.unpackb(wire))
    assert isinstance(batch, RouteBatch)
    return batch


def _apply(table: RoutingTable, remote: RemoteRoutes | None, batch: RouteBatch, now: float) -> None:
    """One batch as the gossip node hands it on: applied, its changes to the registry."""
    for event in table.on_batch(batch, now):
        if isinstance(event, RoutesChanged) and remote is not None:
            for service in event.services:
                remote.changed(service)


def _load(wires: list[bytes], config: Any, registry: bool) -> tuple[int, RoutingTable, Broker, RemoteRoutes | None]:
    """A fresh node's table (and registry) fed the owners' complete sets: bytes it holds after."""
    broker = Broker(Settings(node_id="n0"), asyncio.new_event_loop())
    links = Links(broker, "n0", None)
    gc.collect()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        table = RoutingTable("n0", 1, config)
        remote = RemoteRoutes(broker.registry, links, table) if registry else None
        for wire in wires:
            batch = _decode(wire)
            if remote is None:
                table.on_batch(batch, 1.0)
            else:
                _apply(table, remote, batch, 1.0)
            del batch
        gc.collect()
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return after - before, table, broker, remote


def measure(size: int, owners: int, changes: int) -> dict[str, Any]:
    config = profile("lan")
    names = [f"n{i}" for i in range(1, owners + 1)]
    tables = {name: RoutingTable(name, 1, config) for name in names}
    for n in range(size):
        tables[names[n % owners]].set_local_service(device(n).service, [device(n)], 0.0)
    wires = [msgpack.packb(m.to_wire()) for t in tables.values() for m in t.greeting()]

    for t in tables.values():  # what the owners queued while registering went out already
        while t.take_direct(0.0):
            pass
    table_only, _, spare, _ = _load(wires, config, registry=False)
    spare.loop.close()
    total, table, broker, remote = _load(wires, config, registry=True)
    assert sum(table.count(name) for name in names) == size
    strings = _held_strings(table, broker)
    table_strings = _held_strings(table, None)

    # one device at a time moves from one owner to the next: the messages are made and
    # decoded first, so the time is the table's and the registry's work alone
    batches: list[RouteBatch] = []
    now = 2.0
    for k in range(changes):
        entry = device(k)
        old, new = tables[names[k % owners]], tables[names[(k + 1) % owners]]
        new.set_local_service(entry.service, [entry], now)
        old.set_local_service(entry.service, [], now)
        for t in (new, old):
            for message in t.take_direct(now):
                batch = decode_message(msgpack.unpackb(msgpack.packb(message.to_wire())))
                assert isinstance(batch, RouteBatch)
                batches.append(batch)
    applied0 = table.stats["entries_applied"]
    t0 = time.process_time()
    for batch in batches:
        _apply(table, remote, batch, now)
    cpu = time.process_time() - t0
    broker.loop.close()
    return {
        "routes": size,
        "owners": owners,
        "table_b": round(table_only / size, 1),
        "table_without_strings_b": round((table_only - table_strings) / size, 1),
        "registry_b": round((total - table_only) / size, 1),
        "strings_b": round(strings / size, 1),
        "total_b": round(total / size, 1),
        "total_without_strings_b": round((total - strings) / size, 1),
        "us_per_change": round(1e6 * cpu / len(batches), 1),
        "entries_applied_per_change": round((table.stats["entries_applied"] - applied0) / len(batches), 2),
    }


def _held_strings(table: RoutingTable, broker: Broker | None) -> int:
    """Bytes of the distinct str objects the table and registry hold as service or instance
    names (found by walking what they keep: it reads their private records)."""
    seen: dict[int, int] = {}

    def walk(obj: object) -> None:
        if type(obj) is str:
            seen[id(obj)] = sys.getsizeof(obj)
        elif type(obj) is tuple:
            for item in obj:  # type: ignore[attr-defined]
                walk(item)

    for owner in table._remote.values():
        for service, slot in owner.routes.items():
            walk(service)
            walk(slot)
    for name, entry in (broker.registry._services if broker else {}).items():
        walk(name)
        for p in entry.providers:
            walk(p.instance)
    return sum(seen.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="50000,200000", help="remote routes per run, comma-separated (default: 50000,200000)")
    parser.add_argument("--owners", type=int, default=9, help="nodes holding them (default: 9, a 10-node cluster)")
    parser.add_argument("--changes", type=int, default=2000, help="device moves timed per size (default: 2000)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    results = []
    for size in (int(s) for s in args.sizes.split(",") if s):
        result = measure(size, args.owners, args.changes)
        print(json.dumps(result), flush=True)
        results.append(result)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"runs": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
