"""Fault figures on the multi-host test bed (root only): ``python -m benchmarks.testbed_faults``.

Three nodes on their own network namespaces, advertised and joined by host name, with the
production command line of the test bed (uvloop, cluster key, JWT, admin token). Per round:

* **declared dead** — SIGKILL node3; seconds until node1 and node2 both list it ``dead``;
* **partition heal** — cut node3's link until the others declare it dead, restore it;
  seconds until every node sees every node alive, Raft has one leader with all three voters
  and every broker link is up;
* **first node back** — SIGTERM node1 (started without ``--join``), start it again with the
  same command line; seconds from the start until node2 and node3 list it ``alive``.

Times are observed by polling each node's admin API from inside its host (one short Python
process per call), so each figure carries up to ~0.3 s of polling granularity on a busy
machine. ``--rounds N`` (default 3) repeats everything; the table gives median and max.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Callable

from tests.support.netns import Host, TestBed, unavailable_reason
from tests.testbed.views import converged, member_states, start_cluster, wait_converged

POLL_S = 0.1
LIMIT_S = 120.0


def _until(predicate: Callable[[], bool], what: str) -> float:
    """Seconds until ``predicate`` holds (raises after LIMIT_S)."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > LIMIT_S:
            raise TimeoutError(f"{what} did not happen within {LIMIT_S:g} s")
        time.sleep(POLL_S)
    return time.monotonic() - start


def _links_up(hosts: list[Host]) -> bool:
    for host in hosts:
        status, body = host.http("GET", "/api/v1/topology")
        if status != 200 or any(n["link"] not in ("up", "self") for n in body["nodes"]):
            return False
    return True


def one_round() -> dict[str, float]:
    bed = TestBed(3)
    try:
        node1, node2, node3 = bed.hosts
        start_cluster(bed.hosts)
        asyncio.run(wait_converged(bed.hosts))
        figures: dict[str, float] = {}

        node3.kill()
        figures["declared dead (s)"] = _until(
            lambda: all(member_states(h).get("node3") == "dead" for h in (node1, node2)), "node3 declared dead")
        node3.start(node3.serve_args(join=[f"{node1.name}:7946"]))
        asyncio.run(wait_converged(bed.hosts))

        node3.cut()
        _until(lambda: all(member_states(h).get("node3") == "dead" for h in (node1, node2)), "partitioned node3 dead")
        node3.heal()
        figures["partition heal (s)"] = _until(lambda: converged(bed.hosts) and _links_up(bed.hosts), "the partition to heal")

        assert node1.stop() == 0
        start = time.monotonic()
        node1.start(node1.serve_args())
        _until(lambda: all(member_states(h).get("node1") == "alive" for h in (node2, node3)), "node1 back")
        figures["first node back (s)"] = time.monotonic() - start
        return figures
    finally:
        bed.close()


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
        rounds.append(one_round())
        print(f"round {i + 1}: {json.dumps({k: round(v, 2) for k, v in rounds[-1].items()})}", file=sys.stderr)
    print("| fault | median (s) | max (s) | rounds |\n|---|---|---|---|")
    for name in rounds[0]:
        values = [r[name] for r in rounds]
        print(f"| {name.removesuffix(' (s)')} | {statistics.median(values):.2f} | {max(values):.2f} | {len(values)} |")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(rounds, out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
