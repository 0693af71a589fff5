"""The requester side of ``benchmarks.balance_bench``, in a process of its own.

``python -m benchmarks.balance_load --service S --node HOST:PORT --node HOST:PORT --requests N --inflight M``
opens one ``broker.client`` connection per node and runs ``M`` tasks, spread over the
connections, each sending one request-response to ``S.who`` after the other until ``N`` are
answered (after a warm-up of ``max(M, N / 20)``). It prints one line,
``result {"seconds": ..., "latencies_ms": [...], "answers": [...]}``: every latency and who
answered, in order, so that the caller can pool rounds before taking percentiles.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from typing import Any

from benchmarks.servers.common import run
from broker.client import Connection, connect


async def closed_loop(clients: list[Connection], route: str, requests: int, inflight: int) -> dict[str, Any]:
    """``requests`` request-responses from ``inflight`` tasks over ``clients`` (round robin)."""
    latencies: list[float] = []
    answers: list[str] = []
    left = requests

    async def worker(client: Connection) -> None:
        nonlocal left
        while left > 0:
            left -= 1
            start = time.perf_counter()
            who = await client.request_response(route, b"")
            latencies.append(round((time.perf_counter() - start) * 1000.0, 3))
            answers.append(who.decode())

    started = time.perf_counter()
    await asyncio.gather(*(worker(clients[i % len(clients)]) for i in range(inflight)))
    return {"seconds": time.perf_counter() - started, "latencies_ms": latencies, "answers": answers}


async def _load(nodes: list[str], service: str, requests: int, inflight: int) -> None:
    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(connect(node)) for node in nodes]
        route = f"{service}.who"
        await closed_loop(clients, route, max(inflight, requests // 20), inflight)  # warm-up
        result = await closed_loop(clients, route, requests, inflight)
    sys.stdout.write("result " + json.dumps(result, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.balance_load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--node", action="append", required=True, help="HOST:PORT of a broker (repeat)")
    parser.add_argument("--service", required=True, help="the service whose .who route is asked")
    parser.add_argument("--requests", type=int, required=True, help="measured requests")
    parser.add_argument("--inflight", type=int, required=True, help="requester tasks")
    args = parser.parse_args(argv)
    run(lambda: _load(args.node, args.service, args.requests, args.inflight))


if __name__ == "__main__":
    main()
