"""Turning an :class:`~benchmarks.suite.Outcome` into ratios, a README-ready table, JSON and a plot.

Ratios are computed only from rows of the same run: absolute figures on a shared 2-core
machine drift between runs, figures measured side by side do not.
"""

from __future__ import annotations

import datetime
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.suite import CAPACITY_INFLIGHT, SMALL_PAYLOAD, Outcome


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
)  # fmt: skip


def _find(results: list[dict[str, Any]], system: str, client: str, inflight: int) -> dict[str, Any] | None:
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


def ratios(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for ratio in RATIOS:
        top = _find(results, *ratio.numerator, ratio.inflight)
        bottoms = [r for r in (_find(results, s, c, ratio.inflight) for s, c in ratio.denominators) if r]
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
        out[ratio.name] = entry
    return out


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


def capacity_cpu_model(results: list[dict[str, Any]], cores: int = 2) -> dict[str, Any]:
    """The issue-3 capacity ratio predicted from CPU seconds per request instead of from throughput.

    On a machine shared with other work the throughput ratio moves with the neighbours' load;
    CPU time per request hardly does. With per-request costs g (generator), b (broker), r
    (responder) measured in the two 256-in-flight rows, the ratio two idle cores would give is
    rate(g, b, r) / rate(g, r). The 0.5 line is where the broker spends as much per frame as
    the generator (b = 2g, since it handles four frames per request to the generator's two).
    """
    direct = _find(results, "raw-asyncio", "frames", CAPACITY_INFLIGHT)
    relayed = _find(results, "broker-1", "frames", CAPACITY_INFLIGHT)
    costs_direct = _cpu_per_request(direct) if direct else None
    costs_relayed = _cpu_per_request(relayed) if relayed else None
    if not costs_direct or not costs_relayed or "broker" not in costs_relayed:
        return {"value": None, "missing": "needs the 256-in-flight rows of raw-asyncio and broker-1 with CPU figures"}
    g, r = costs_direct["loadgen"], costs_direct["server"]
    g2, b, r2 = costs_relayed["loadgen"], costs_relayed["broker"], costs_relayed["provider"]
    value = _cpu_bound_rate([g2, b, r2], cores) / _cpu_bound_rate([g, r], cores)
    return {
        "value": round(value, 3),
        "goal": 0.65,
        "met": value >= 0.65,
        "cores": cores,
        "us_per_request": {"generator": round(g2 * 1e6, 2), "broker": round(b * 1e6, 2), "provider": round(r2 * 1e6, 2),
                           "generator_direct": round(g * 1e6, 2), "responder_direct": round(r * 1e6, 2)},
    }  # fmt: skip


def cpu_per_million(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Broker CPU seconds per million requests, from the request-response rows through one broker."""
    figures = []
    for row in results:
        cpu = row.get("cpu_s", {})
        if row["system"] != "broker-1" or row["scenario"] != "request-response" or "broker" not in cpu:
            continue
        ops = (row.get("ops_per_s") or 0) * (row.get("window_s") or 0)
        if ops > 0:
            figures.append({
                "client": row["client"], "inflight": row["inflight"], "payload_bytes": row["payload_bytes"],
                "broker_cpu_s_per_million": round(cpu["broker"] / ops * 1e6, 2),
                "broker_cores_busy": round(cpu["broker"] / row["window_s"], 2),
                "loadgen_cores_busy": round(cpu.get("loadgen", 0.0) / row["window_s"], 2),
            })  # fmt: skip
    return figures


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
    }


def document(outcome: Outcome, command: str, plan_name: str) -> dict[str, Any]:
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "plan": plan_name,
        "machine": machine(),
        "results": outcome.results,
        "ratios": ratios(outcome.results),
        "resources": {
            "broker_cpu_per_million_requests": cpu_per_million(outcome.results),
            "capacity_cpu_model": capacity_cpu_model(outcome.results),
            "idle_connection_memory": outcome.idle_memory,
            "latency_fixed_rate": outcome.fixed_rate,
        },
        "unavailable": outcome.unavailable,
    }


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.0f}" if value >= 1000 else f"{value:.{digits}g}"
    return str(value)


def _size(payload: int) -> str:
    return f"{payload // 1024} KiB" if payload >= 1024 and payload % 1024 == 0 else f"{payload} B"


def markdown(doc: dict[str, Any]) -> str:
    """The results as README-ready Markdown: header, results table, ratios, resources."""
    m = doc["machine"]
    lines = [
        f"Measured {doc['date']} on {m['cpu']}, {m['cores']} cores, Linux {m['kernel']}, "
        f"{m['implementation']} {m['python']}, with `{doc['command']}` ({doc['plan']} plan).",
        "",
        "| system | client | scenario | payload | in flight | ops/s | p50 ms | p99 ms |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in doc["results"]:
        lines.append(
            f"| {row['system']} | {row['client']} | {row['scenario']} | {_size(row['payload_bytes'])} | {row['inflight']} "
            f"| {_fmt(row['ops_per_s'])} | {_fmt(row['p50_ms'])} | {_fmt(row['p99_ms'])} |"
        )
    for key, reason in doc["unavailable"].items():
        lines.append(f"| {key} | | | | | {reason} | | |")
    lines += ["", "| ratio (request-response, 100 B) | in flight | value | goal | met | numerator / denominator |",
              "|---|---:|---:|---:|---|---|"]  # fmt: skip
    for name, r in doc["ratios"].items():
        parts = f"{r['numerator']} / {r['denominator']}" if r.get("numerator") else r.get("missing", "")
        met = "–" if r["met"] is None else ("yes" if r["met"] else "**no**")
        lines.append(f"| {name} | {r['inflight']} | {_fmt(r['value'])} | {_fmt(r['goal'])} | {met} | {parts} |")
    res = doc["resources"]
    model = res["capacity_cpu_model"]
    if model.get("value") is not None:
        us = model["us_per_request"]
        lines += ["", f"issue-3 capacity ratio predicted from CPU per request on {model['cores']} idle cores: "
                  f"**{model['value']}** (goal {model['goal']}; CPU µs per request: generator {us['generator']}, "
                  f"broker {us['broker']}, provider {us['provider']}; direct: generator {us['generator_direct']}, "
                  f"responder {us['responder_direct']})."]  # fmt: skip
    if res["broker_cpu_per_million_requests"]:
        lines += ["", "| broker CPU, request-response | payload | in flight | CPU s per million requests | broker cores busy | generator cores busy |",
                  "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
        for c in res["broker_cpu_per_million_requests"]:
            lines.append(f"| {c['client']} | {_size(c['payload_bytes'])} | {c['inflight']} | {c['broker_cpu_s_per_million']} "
                         f"| {c['broker_cores_busy']} | {c['loadgen_cores_busy']} |")  # fmt: skip
    if res["idle_connection_memory"]:
        lines += ["", "| idle connections | transport | broker RSS growth per connection |", "|---:|---|---:|"]
        for i in res["idle_connection_memory"]:
            lines.append(f"| {i['connections']:,} | {i['transport']} | {i['bytes_per_connection'] / 1024:.1f} KiB |")
    if res["latency_fixed_rate"]:
        lines += ["", "| latency at a fixed offered rate | rate/s | achieved/s | p50 ms | p99 ms | p99.9 ms |",
                  "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
        for f in res["latency_fixed_rate"]:
            lines.append(f"| {f['system']}[{f['client']}] | {_fmt(f['rate_per_s'])} | {_fmt(f['achieved_per_s'])} "
                         f"| {_fmt(f['p50_ms'])} | {_fmt(f['p99_ms'])} | {_fmt(f['p999_ms'])} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def plot(doc: dict[str, Any], path: Path) -> None:
    """Throughput vs in flight, request-response at 100 B, one line per system and client."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[tuple[int, float]]] = {}
    for row in doc["results"]:
        if row["scenario"] == "request-response" and row["payload_bytes"] == SMALL_PAYLOAD and row.get("ops_per_s"):
            series.setdefault(f"{row['system']} [{row['client']}]", []).append((row["inflight"], row["ops_per_s"]))
    figure, axes = plt.subplots(figsize=(8, 5))
    for label, points in sorted(series.items()):
        points.sort()
        axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
    axes.set_xscale("log", base=2)
    axes.set_yscale("log")
    axes.set_xlabel("requests in flight")
    axes.set_ylabel("requests per second")
    axes.set_title(f"request-response, {SMALL_PAYLOAD} B payloads ({doc['date'][:10]}, {doc['machine']['cores']} cores)")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
