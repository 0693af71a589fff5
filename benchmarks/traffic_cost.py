"""What the traffic rules cost the relay per request, in CPU time, without sockets or scheduling noise.

``python -m benchmarks.traffic_cost [--requests 200000] [--rounds 7] [--e2e ROUNDS [--quick]]``

A real ``Broker`` with two real relay sessions whose transport is a list
(``tests.support.memory_session``): a provider registered for ``bench.responder`` and a
requester keeping 64 request-responses in flight. Each request is relayed to the provider,
answered, and relayed back: the relay's whole per-request work, nothing else. Measured as
process CPU time per request for: no rules, a service rate limit plus a principal rate limit
(both checked on every request, never refusing), a service ``deadline_ms`` (every request
watched), retries (every request kept until answered), and all three. Rounds alternate
between the configurations; the fastest round of each is printed (the one least disturbed by
other processes: on a shared machine even CPU time per request varies by ±10 % between rounds).

End to end (``--e2e N``): N rounds of ``python -m benchmarks run --only 'broker-1[frames]'
--scenario request-response --no-resources`` (the frame generator through sockets) per
configuration, the broker started with ``RSBROKER_CONFIG`` naming a file that holds the rules,
the configurations in turn and their order reversed every round: the broker's CPU per request
and requests/s at 64 in flight, each against the no-rules run of the same round, as the
median of the rounds. ``--quick`` uses 0.3 s windows, whose CPU figures are counted in 10 ms ticks.

``RSBROKER_NO_EXTENSIONS=1`` in the environment measures the pure-Python hot path (both parts).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from benchmarks import frames
from broker import metadata as md
from broker.frames import FrameType, payload_frame, request_frame, setup_frame
from broker.relay import Broker
from broker.settings import Settings
from tests.support.memory_session import MemorySession

IN_FLIGHT = 64
#: the payload of the end-to-end rows compared (the full plan also runs 16 KiB)
PAYLOAD = 100
CONFIGS: dict[str, dict[str, Any]] = {
    "no rules": {},
    "rate limits": {
        "limits": {
            "svc": {"service": frames.SERVICE, "rate": 1e12, "burst": 1e12},
            "everyone": {"principal": "*", "rate": 1e12, "burst": 1e12},
        }
    },
    "deadline": {"services": {frames.SERVICE: {"deadline_ms": 60_000}}},
}
CONFIGS["retries"] = {"services": {frames.SERVICE: {"idempotent": True, "retries": 1}}}
CONFIGS["all three"] = {**CONFIGS["rate limits"], "services": {frames.SERVICE: {"deadline_ms": 60_000, "idempotent": True, "retries": 1}}}


def route_only(sid: int) -> bytes:
    """The metadata of an untraced request: the route alone."""
    return md.route_metadata(frames.ROUTE)


def cpu_per_request(
    config: dict[str, Any], requests: int, metadata: Callable[[int], bytes] = route_only, coalesce: bool = False
) -> float:
    """Process CPU seconds per relayed request-response under ``config``, each request with
    ``metadata(stream id)``; with ``coalesce``, the sessions queue relayed frames in
    ``wire_out`` as TCP's do (the harness splits them again), else they take each frame whole
    through ``forward`` as WebSocket's do."""
    loop = asyncio.new_event_loop()
    try:
        broker = Broker(Settings(**config), loop)
        provider, requester = MemorySession(broker, 1, coalesce), MemorySession(broker, 2, coalesce)
        register = md.composite_entry(md.REGISTER_MIME, md.Registration([frames.SERVICE], "p1").to_json())
        provider.feed(setup_frame(metadata=register))
        requester.feed(setup_frame())
        data = b"x" * 100
        requests_out = [request_frame(FrameType.REQUEST_RESPONSE, sid, metadata(sid), data) for sid in range(1, 2 * IN_FLIGHT, 2)]
        answers: dict[bytes, bytes] = {}  # by the stream id the broker gave the provider
        started = time.process_time()
        done = 0
        while done < requests:
            for frame in requests_out:
                requester.feed(frame)
            provider.flush()
            for frame in provider.out:
                sid = frame[:4]
                answer = answers.get(sid)
                if answer is None:
                    answer = answers[sid] = payload_frame(int.from_bytes(sid, "big"), data, complete=True)
                provider.feed(answer)
            provider.out.clear()
            requester.flush()
            broker._dirty.clear()  # no loop runs here to flush them
            if len(requester.out) != IN_FLIGHT or any(f[4] >> 2 != FrameType.PAYLOAD for f in requester.out[:1]):
                raise RuntimeError(f"the relay did not answer every request: {requester.take()[:1]}")
            requester.out.clear()
            done += IN_FLIGHT
        return (time.process_time() - started) / done
    finally:
        loop.close()


def end_to_end(env: dict[str, str], quick: bool) -> tuple[float, float]:
    """Broker CPU seconds per request and requests/s of ``broker-1[frames]`` at 64 in flight,
    the benchmark (and so the broker it starts) run with ``env`` added to this environment."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run.json"
        command = [sys.executable, "-m", "benchmarks", "run", "--only", "broker-1[frames]", "--scenario", "request-response",
                   "--no-resources", "--json", str(out)] + (["--quick"] if quick else [])  # fmt: skip
        subprocess.run(command, check=True, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        report = json.loads(out.read_text())
    [row] = [r for r in report["results"] if r["inflight"] == IN_FLIGHT and r["payload_bytes"] == PAYLOAD]
    [cpu] = [r for r in report["resources"]["broker_cpu_per_million_requests"] if r["inflight"] == IN_FLIGHT and r["payload_bytes"] == PAYLOAD]
    return cpu["broker_cpu_s_per_million"] / 1e6, row["ops_per_s"]


def config_file(config: dict[str, Any], path: Path) -> dict[str, str]:
    """Write ``config`` (tables of tables of scalars, as ``CONFIGS``) as a TOML config file at
    ``path``; the environment that makes ``rsbroker serve`` read it."""
    lines = []
    for table, entries in config.items():
        for name, fields in entries.items():
            lines.append(f"[{table}.{json.dumps(name)}]")  # a JSON string is a TOML basic string
            lines += [f"{key} = {json.dumps(value)}" for key, value in fields.items()]
    path.write_text("\n".join(lines) + "\n")
    return {"RSBROKER_CONFIG": str(path)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.traffic_cost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--requests", type=int, default=200_000, help="requests per measurement")
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds")
    parser.add_argument("--e2e", type=int, default=0, metavar="ROUNDS", help="end-to-end rounds through sockets (0: none)")
    parser.add_argument("--quick", action="store_true", help="end to end with the quick plan's 0.3 s windows")
    args = parser.parse_args(argv)
    runs: dict[str, list[float]] = {name: [] for name in CONFIGS}
    for _ in range(args.rounds):
        for name, config in CONFIGS.items():
            runs[name].append(cpu_per_request(config, args.requests))
    base = min(runs["no rules"])
    print(f"| relay CPU per request-response ({IN_FLIGHT} in flight, best of {args.rounds}) | µs | overhead |")
    print("|---|---|---|")
    for name, values in runs.items():
        value = min(values)
        print(f"| {name} | {value * 1e6:.2f} | {value / base - 1:+.1%} |")
    if args.e2e:
        with tempfile.TemporaryDirectory() as tmp:
            envs = {name: config_file(config, Path(tmp) / f"{i}.toml") for i, (name, config) in enumerate(CONFIGS.items())}
            rounds = []
            for i in range(args.e2e):
                names = list(CONFIGS) if i % 2 == 0 else list(reversed(CONFIGS))
                rounds.append({name: end_to_end(envs[name], args.quick) for name in names})
        print()
        print(f"| broker-1[frames], {IN_FLIGHT} in flight, {args.e2e} rounds | broker CPU per request, µs | overhead (median of rounds) | requests/s | ratio |")
        print("|---|---|---|---|---|")
        for name in CONFIGS:
            cpu = statistics.median(r[name][0] for r in rounds)
            over = statistics.median(r[name][0] / r["no rules"][0] - 1 for r in rounds)
            rate = statistics.median(r[name][1] for r in rounds)
            ratio = statistics.median(r[name][1] / r["no rules"][1] for r in rounds)
            print(f"| {name} | {cpu * 1e6:.2f} | {over:+.1%} | {rate:,.0f} | ×{ratio:.3f} |")


if __name__ == "__main__":
    main()
