"""The HTTP gateway and the traffic rules, measured against what they add to.

``python -m benchmarks.gateway_bench [--seconds 5] [--rounds 3] [--in-flight 64]``

* **gateway**: ``POST /rpc/bench.responder.echo`` on an ``rsbroker serve`` ``--ws`` listener,
  answered by a ``broker.client`` provider (``benchmarks.servers.pyclient_provider``), vs
  ``POST /echo`` on a plain aiohttp server (``benchmarks.servers.http_echo``) doing the same
  echo. Both driven by ``--in-flight`` aiohttp client tasks in this process.
* **traffic rules**: request-response through ``broker.client`` at ``--in-flight`` against
  a node without rules and one with a rate limit that never refuses (checked on every
  request) and a ``deadline_ms`` on the service (tracked on every request), each with its own
  provider. The overhead is 1 - rules/plain.

Rounds alternate between the two sides of each comparison (A B A B ...) so a machine whose
load drifts during the run hurts both alike; the figures printed are medians of the rounds.
Every process is stopped by PID when the run ends.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from benchmarks import frames
from benchmarks.procs import Processes
from broker.client import connect

PAYLOAD = b"x" * 64
RULES = f"""
[limits.never-hit]
service = "{frames.SERVICE}"
rate = 1e9
burst = 1e9

[services."{frames.SERVICE}"]
deadline_ms = 60000
"""


def _broker(procs: Processes, name: str, config: str | None) -> dict[str, str]:
    argv = [sys.executable, "-m", "rsbroker", "serve", "--node-id", name, "--tcp", "127.0.0.1:0", "--ws", "127.0.0.1:0"]
    if config is not None:
        path = procs.log_dir / f"{name}.toml"
        path.write_text(config)
        argv += ["--config", str(path)]
    info: dict[str, str] = json.loads(procs.start(name, argv, ready=r"^rsbroker ready (\{.*\})$").match.group(1))
    procs.python(f"{name}-provider", "benchmarks.servers.pyclient_provider", "provide", "--broker", info["tcp"], "--instance", f"{name}-p")
    return info


async def _http_load(url: str, seconds: float, in_flight: int) -> tuple[float, float]:
    """(requests per second, p99 latency ms) of ``in_flight`` tasks POSTing to ``url``."""
    latencies: list[float] = []
    stop = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=in_flight)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            while time.monotonic() < stop:
                start = time.perf_counter()
                async with session.post(url, data=PAYLOAD) as response:
                    body = await response.read()
                    assert response.status == 200 and body == PAYLOAD, (response.status, body[:200])
                latencies.append(time.perf_counter() - start)

        began = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(in_flight)))
        elapsed = time.monotonic() - began
    return len(latencies) / elapsed, statistics.quantiles(latencies, n=100)[98] * 1000


async def _rsocket_load(address: str, seconds: float, in_flight: int) -> tuple[float, float]:
    latencies: list[float] = []
    stop = time.monotonic() + seconds
    async with connect(address) as client:

        async def worker() -> None:
            while time.monotonic() < stop:
                start = time.perf_counter()
                assert await client.request_response(frames.ROUTE, PAYLOAD) == PAYLOAD
                latencies.append(time.perf_counter() - start)

        began = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(in_flight)))
        elapsed = time.monotonic() - began
    return len(latencies) / elapsed, statistics.quantiles(latencies, n=100)[98] * 1000


def _median(runs: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


async def _compare(name_a: str, load_a: object, name_b: str, load_b: object, rounds: int) -> dict[str, tuple[float, float]]:
    runs: dict[str, list[tuple[float, float]]] = {name_a: [], name_b: []}
    for _ in range(rounds):
        for name, load in ((name_a, load_a), (name_b, load_b)):
            runs[name].append(await load())  # type: ignore[operator]
            sys.stderr.write(f"  {name}: {runs[name][-1][0]:.0f} req/s, p99 {runs[name][-1][1]:.1f} ms\n")
    return {name: _median(r) for name, r in runs.items()}


async def main_async(seconds: float, rounds: int, in_flight: int) -> None:
    with Processes(Path(tempfile.mkdtemp(prefix="rsbroker-gateway-bench-"))) as procs:
        plain = _broker(procs, "plain", None)
        ruled = _broker(procs, "ruled", RULES)
        echo = json.loads(procs.python("http-echo", "benchmarks.servers.http_echo").match.group(1))["address"]
        await asyncio.sleep(1.0)  # the providers' registrations reach the nodes
        gateway_url = f"http://{plain['ws']}/rpc/{frames.ROUTE}"
        sys.stderr.write("gateway vs plain aiohttp\n")
        http = await _compare(
            "gateway", lambda: _http_load(gateway_url, seconds, in_flight),
            "aiohttp", lambda: _http_load(f"http://{echo}/echo", seconds, in_flight), rounds,
        )  # fmt: skip
        sys.stderr.write("traffic rules on vs off (broker.client request-response)\n")
        rules = await _compare(
            "no rules", lambda: _rsocket_load(plain["tcp"], seconds, in_flight),
            "limit+deadline", lambda: _rsocket_load(ruled["tcp"], seconds, in_flight), rounds,
        )  # fmt: skip
    print(f"| comparison ({in_flight} in flight, median of {rounds} x {seconds:g} s) | req/s | p99 ms | ratio |")
    print("|---|---|---|---|")
    for table, base in ((http, "aiohttp"), (rules, "no rules")):
        for name, (rate, p99) in table.items():
            print(f"| {name} | {rate:.0f} | {p99:.1f} | {rate / table[base][0]:.2f} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gateway_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--seconds", type=float, default=5.0, help="length of one measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per comparison")
    parser.add_argument("--in-flight", type=int, default=64, help="concurrent requests")
    args = parser.parse_args(argv)
    asyncio.run(main_async(args.seconds, args.rounds, args.in_flight))


if __name__ == "__main__":
    main()
