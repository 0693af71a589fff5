"""Fault figures on the multi-host test bed (root only): ``python -m benchmarks.testbed_faults``.

Three nodes on their own network namespaces, advertised and joined by host name, with the
production command line of the test bed (uvloop, cluster key, JWT, admin token). A provider
of ``bed.svc`` is connected to node1 and another to node3, and a requester on node2 keeps a
steady load of request-response (4 workers, each request bounded by 30 s: one that reaches
the bound counts as *hung*). Per round:

* **declared dead** — SIGKILL node3; seconds until node1 and node2 both list it ``dead``;
  node3 (and its provider) come back before the next fault;
* **partition heal** — cut node3's link until the others declare it dead, restore it;
  seconds until every node sees every node alive, Raft has one leader with all three voters
  and every broker link is up;
* **first node back** — SIGTERM node1 (started without ``--join``; it drains), start it again
  with the same command line; seconds from the start until node2 and node3 list it ``alive``.

For each fault, the requests that *started* between the fault and the end of its recovery are
counted: ok, failed (an ERROR the client can retry), hung. Times are observed by polling the
admin API from inside each host (one short Python process per call, in a thread), so each
figure carries up to ~0.3 s of polling granularity on a busy machine. ``--rounds N``
(default 3) repeats everything; the table gives median and max.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from tests.cluster.peers import SteadyLoad, provider, requester
from tests.support.netns import TCP_PORT, Host, TestBed, unavailable_reason
from tests.testbed.views import converged, member_states, seeds, start_cluster, wait_converged

SERVICE = "bed.svc"
POLL_S = 0.1
LIMIT_S = 120.0


async def _until(predicate: Callable[[], bool], what: str) -> float:
    """Seconds until ``predicate`` (blocking: run in a thread) holds; raises after LIMIT_S."""
    start = time.monotonic()
    while not await asyncio.to_thread(predicate):
        if time.monotonic() - start > LIMIT_S:
            raise TimeoutError(f"{what} did not happen within {LIMIT_S:g} s")
        await asyncio.sleep(POLL_S)
    return time.monotonic() - start


def _links_up(hosts: list[Host]) -> bool:
    for host in hosts:
        status, body = host.http("GET", "/api/v1/topology")
        if status != 200 or any(n["link"] not in ("up", "self") for n in body["nodes"]):
            return False
    return True


def _dead_everywhere_else(hosts: list[Host], node: str) -> Callable[[], bool]:
    return lambda: all(member_states(h).get(node) == "dead" for h in hosts)


@contextlib.asynccontextmanager
async def _provider_on(host: Host) -> AsyncIterator[None]:
    async with provider(f"{host.address}:{TCP_PORT}", SERVICE, f"p-{host.name}", token=host.bed.client_token):
        yield


def _serves_both(host: Host) -> bool:
    status, body = host.http("GET", "/api/v1/services")
    entry = body["services"].get(SERVICE) if status == 200 else None
    return bool(entry) and {p["instance"] for p in entry["providers"]} == {"p-node1", "p-node3"}


def _count(load: SteadyLoad, since: float, until: float) -> dict[str, int]:
    window = [o for o in load.outcomes if since <= o.started <= until]
    return {kind: sum(1 for o in window if o.result == kind) for kind in ("ok", "error", "hung")}


async def one_round() -> dict[str, Any]:
    bed = TestBed(3)
    try:
        node1, node2, node3 = bed.hosts
        await asyncio.to_thread(start_cluster, bed.hosts)
        await wait_converged(bed.hosts)
        rule = {"principals": ["bed-client"], "register": [SERVICE], "call": [f"{SERVICE}.*"]}
        status, body = await asyncio.to_thread(node1.http, "PUT", "/api/v1/config/acl/bed-client", rule)
        assert status == 200, body
        figures: dict[str, Any] = {}
        async with contextlib.AsyncExitStack() as stack:
            p1 = await stack.enter_async_context(contextlib.AsyncExitStack())
            await p1.enter_async_context(_provider_on(node1))
            p3 = await stack.enter_async_context(contextlib.AsyncExitStack())
            await p3.enter_async_context(_provider_on(node3))
            client = await stack.enter_async_context(
                requester(f"{node2.address}:{TCP_PORT}", token=bed.client_token))
            load = await stack.enter_async_context(SteadyLoad(client, SERVICE))

            start = time.monotonic()
            node3.kill()
            figures["declared dead (s)"] = await _until(_dead_everywhere_else([node1, node2], "node3"), "node3 dead")
            await p3.aclose()
            await asyncio.to_thread(node3.start, node3.serve_args(join=seeds(node1)))
            await wait_converged(bed.hosts)
            await p3.enter_async_context(_provider_on(node3))
            await _until(lambda: _serves_both(node2), "both providers listed")
            figures["requests during kill"] = _count(load, start, time.monotonic())

            node3.cut()
            start = time.monotonic()
            await _until(_dead_everywhere_else([node1, node2], "node3"), "partitioned node3 dead")
            node3.heal()
            figures["partition heal (s)"] = await _until(lambda: converged(bed.hosts) and _links_up(bed.hosts),
                                                         "the partition to heal")
            figures["requests during partition"] = _count(load, start, time.monotonic())
            # node3's provider reaches node3 through the link that was cut: connect it anew
            await p3.aclose()
            await p3.enter_async_context(_provider_on(node3))
            await _until(lambda: _serves_both(node2), "both providers listed")

            start = time.monotonic()
            assert await asyncio.to_thread(node1.stop) == 0
            await p1.aclose()
            restarted = time.monotonic()
            await asyncio.to_thread(node1.start, node1.serve_args())
            await _until(lambda: all(member_states(h).get("node1") == "alive" for h in (node2, node3)), "node1 back")
            figures["first node back (s)"] = time.monotonic() - restarted
            figures["requests during restart"] = _count(load, start, time.monotonic())
        return figures
    finally:
        await asyncio.to_thread(bed.close)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.testbed_faults", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument("--json", help="also write the raw figures to this file")
    args = parser.parse_args(argv)
    reason = unavailable_reason()
    if reason is not None:
        print(f"testbed_faults: {reason}", file=sys.stderr)
        return 2
    rounds = []
    for i in range(args.rounds):
        rounds.append(asyncio.run(one_round()))
        print(f"round {i + 1}: {json.dumps(rounds[-1])}", file=sys.stderr)
    print("| fault | median (s) | max (s) | requests ok / failed / hung (all rounds) |\n|---|---|---|---|")
    for fault, counts in (("declared dead", "kill"), ("partition heal", "partition"), ("first node back", "restart")):
        values = [r[f"{fault} (s)"] for r in rounds]
        total = {k: sum(r[f"requests during {counts}"][k] for r in rounds) for k in ("ok", "error", "hung")}
        print(f"| {fault} | {statistics.median(values):.2f} | {max(values):.2f} | "
              f"{total['ok']} / {total['error']} / {total['hung']} |")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(rounds, out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
