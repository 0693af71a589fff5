"""The ratios a run reports, and the goals they are judged against.

Ratios are computed only from figures of the same run: absolute figures on a shared 2-core
machine drift between runs, figures measured side by side much less. Each ratio comes two
ways: from the matrix rows (measured minutes apart) and, more robustly, from a paired phase
that alternates the two systems' cells round by round and takes the median of the per-round
ratios (see :func:`benchmarks.suite.run_pairs`).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

#: the issue-3 capacity ratio is taken at this many requests in flight.
CAPACITY_INFLIGHT = 256
SMALL_PAYLOAD = 100


@dataclass(frozen=True)
class Ratio:
    """``numerator / best of denominators`` for request-response at one in-flight count, 100 B."""

    name: str
    numerator: tuple[str, str]  # (system, client)
    denominators: tuple[tuple[str, str], ...]
    inflight: int
    goal: float | None
    meaning: str


RATIOS = (
    Ratio("issue3_rsocketpy_hop", ("broker-1", "rsocket-py"), (("rsocket-direct", "rsocket-py"),), 64, 0.95,
          "rsocket-py requester -> broker -> rsocket-py provider vs the same requester direct to an rsocket-py server"),
    Ratio("issue3_capacity", ("broker-1", "frames"), (("raw-asyncio", "frames"),), CAPACITY_INFLIGHT, 0.65,
          "frame generator -> broker -> frame responder vs the same generator against the responder itself"),
    Ratio("vs_raw_asyncio", ("broker-1", "frames"), (("raw-asyncio", "frames"),), 64, 0.65,
          "broker, one node, vs the raw asyncio ceiling, same generator"),
    Ratio("vs_aiohttp_http", ("broker-1", "frames"), (("aiohttp-http", "raw-http"),), 64, 10.0,
          "broker vs aiohttp HTTP/1.1, each loaded by its fastest generator"),
    Ratio("vs_aiohttp_http_rsocketpy", ("broker-1", "rsocket-py"), (("aiohttp-http", "raw-http"),), 64, None,
          "broker with rsocket-py at both ends vs aiohttp HTTP/1.1"),
    Ratio("vs_nats", ("broker-1", "frames"), (("nats", "nats-py"), ("nats", "nats-py-callback")), 64, 2.0,
          "broker vs NATS request-reply, each with its fastest Python client configuration"),
    Ratio("vs_nats_rsocketpy", ("broker-1", "rsocket-py"), (("nats", "nats-py"), ("nats", "nats-py-callback")), 64, None,
          "broker with rsocket-py at both ends vs NATS with its fastest nats-py configuration"),
    Ratio("cross_node_vs_one_node", ("broker-3-cross", "frames"), (("broker-1", "frames"),), 64, None,
          "a request crossing two brokers vs through one"),
    # Python to Python (issue 14): 64 tasks awaiting request-response, each system as its users write it
    Ratio("py_vs_nats", ("broker-1", "pyclient"), (("nats", "nats-py"),), 64, 1.2,
          "broker.client at both ends through one node vs nats-py request() -> nats-server -> nats-py"),
    Ratio("py_vs_aiohttp", ("broker-1", "pyclient"), (("aiohttp-http", "aiohttp-client"),), 64, 4.0,
          "broker.client at both ends through one node vs aiohttp client -> aiohttp server"),
    Ratio("py_vs_rsocketpy", ("broker-1", "pyclient"), (("broker-1", "rsocket-py"),), 64, None,
          "broker.client vs rsocket-py, both at both ends through one node"),
    Ratio("py_cross_node_vs_one_node", ("broker-3-cross", "pyclient"), (("broker-1", "pyclient"),), 64, None,
          "broker.client at both ends: a request crossing two brokers vs through one"),
    # issue 16: each traffic policy vs the same two providers under plain round robin (goal: <= 5 % slower)
    *(Ratio(f"{system[9:]}_vs_round_robin", (system, "frames"), (("broker-1-rr2", "frames"),), 64, 0.95,
            f"two frame responders behind one broker: {meaning} vs round robin")
      for system, meaning in (("broker-1-p2c", "p2c"), ("broker-1-outlier", "outlier ejection configured"),
                              ("broker-1-canary", "canary (10 %, header check)"))),
)  # fmt: skip


def find(results: list[dict[str, Any]], system: str, client: str, inflight: int) -> dict[str, Any] | None:
    for row in results:
        if (
            row["system"] == system
            and row["client"] == client
            and row["scenario"] == "request-response"
            and row["inflight"] == inflight
            and row["payload_bytes"] == SMALL_PAYLOAD
            and row.get("ops_per_s")
        ):
            return row
    return None


def ratios(results: list[dict[str, Any]], paired: dict[str, list[float]] | None = None) -> dict[str, dict[str, Any]]:
    """Every ratio of :data:`RATIOS`; ``paired`` holds per-round ratios from the paired phase."""
    paired = paired or {}
    out: dict[str, dict[str, Any]] = {}
    for ratio in RATIOS:
        top = find(results, *ratio.numerator, ratio.inflight)
        bottoms = [r for r in (find(results, s, c, ratio.inflight) for s, c in ratio.denominators) if r]
        entry: dict[str, Any] = {"meaning": ratio.meaning, "goal": ratio.goal, "inflight": ratio.inflight,
                                 "payload_bytes": SMALL_PAYLOAD, "scenario": "request-response"}  # fmt: skip
        if top is None or not bottoms:
            entry.update(value=None, met=None, missing="a row it needs was not measured in this run")
        else:
            bottom = max(bottoms, key=lambda r: r["ops_per_s"])
            value = top["ops_per_s"] / bottom["ops_per_s"]
            entry.update(
                value=round(value, 3),
                met=None if ratio.goal is None else value >= ratio.goal,
                numerator=f"{top['system']}[{top['client']}] {top['ops_per_s']:.0f} ops/s",
                denominator=f"{bottom['system']}[{bottom['client']}] {bottom['ops_per_s']:.0f} ops/s",
            )
        rounds = paired.get(ratio.name)
        if rounds:
            median = statistics.median(rounds)
            entry.update(paired_value=round(median, 3), paired_rounds=[round(r, 3) for r in rounds])
            if ratio.goal is not None:
                entry["met"] = median >= ratio.goal
        out[ratio.name] = entry
    return out


def round_ratio(ratio: Ratio, ops: dict[tuple[str, str], float]) -> float | None:
    """One paired round's ratio: numerator over the best denominator measured in that round."""
    bottoms = [ops[d] for d in ratio.denominators if ops.get(d)]
    top = ops.get(ratio.numerator)
    return top / max(bottoms) if top and bottoms else None


def _cpu_per_request(row: dict[str, Any]) -> dict[str, float] | None:
    ops = (row.get("ops_per_s") or 0) * (row.get("window_s") or 0)
    cpu = row.get("cpu_s") or {}
    return {name: seconds / ops for name, seconds in cpu.items()} if ops > 0 and cpu else None


def _cpu_bound_rate(per_request: list[float], cores: int) -> float:
    """Requests/s that processes with these CPU costs per request could reach on ``cores`` cores.

    Each process is one thread, so no process goes faster than one core allows, and all of
    them together cannot use more than ``cores``.
    """
    return min(1.0 / max(per_request), cores / sum(per_request))


def cpu_model(results: list[dict[str, Any]], name: str, cores: int = 2) -> dict[str, Any]:
    """An issue-3 ratio predicted from CPU seconds per request instead of from throughput.

    On a machine shared with other work the throughput ratio moves with the neighbours' load;
    CPU time per request hardly does. With the per-request costs of requester g, broker b and
    answering side r measured in the ratio's two rows, the ratio ``cores`` idle cores would
    give is rate(g, b, r) / rate(g, r). For ``issue3_capacity`` the 0.5 line is where the
    broker spends as much per frame as the generator (b = 2g: four frames per request to
    the generator's two).
    """
    (ratio,) = [r for r in RATIOS if r.name == name]
    direct = find(results, *ratio.denominators[0], ratio.inflight)
    relayed = find(results, *ratio.numerator, ratio.inflight)
    costs_direct = _cpu_per_request(direct) if direct else None
    costs_relayed = _cpu_per_request(relayed) if relayed else None
    if not costs_direct or not costs_relayed or "broker" not in costs_relayed:
        return {"value": None, "missing": f"needs the {ratio.inflight}-in-flight rows of the ratio with CPU figures"}
    g, r = costs_direct["loadgen"], costs_direct["server"]
    g2, b, r2 = costs_relayed["loadgen"], costs_relayed["broker"], costs_relayed["provider"]
    value = _cpu_bound_rate([g2, b, r2], cores) / _cpu_bound_rate([g, r], cores)
    return {
        "value": round(value, 3),
        "goal": ratio.goal,
        "met": None if ratio.goal is None else value >= ratio.goal,
        "cores": cores,
        "inflight": ratio.inflight,
        "us_per_request": {"requester": round(g2 * 1e6, 2), "broker": round(b * 1e6, 2), "provider": round(r2 * 1e6, 2),
                           "requester_direct": round(g * 1e6, 2), "server_direct": round(r * 1e6, 2)},
    }  # fmt: skip


#: the ratios that get a CPU-model prediction beside the measured one
CPU_MODELLED = ("issue3_capacity", "issue3_rsocketpy_hop")
