"""Turning an :class:`~benchmarks.suite.Outcome` into a README-ready table, JSON and a plot."""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path
from typing import Any

from benchmarks.ratios import CPU_MODELLED, SMALL_PAYLOAD, cpu_model, ratios
from benchmarks.suite import Outcome


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
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": command,
        "plan": plan_name,
        "machine": machine(),
        "results": outcome.results,
        "ratios": ratios(outcome.results, outcome.paired),
        "resources": {
            "broker_cpu_per_million_requests": cpu_per_million(outcome.results),
            "cpu_model": {name: cpu_model(outcome.results, name) for name in CPU_MODELLED},
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
    heading = (
        f"Measured {doc['date']} on {m['cpu']}, {m['cores']} cores, Linux {m['kernel']}, "
        f"{m['implementation']} {m['python']}, with `{doc['command']}` ({doc['plan']} plan)."
    )
    lines = [
        heading,
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
    ratio_header = (
        "| ratio (request-response, 100 B) | in flight | paired median | paired rounds | matrix | goal | met "
        "| matrix numerator / denominator |"
    )
    lines += ["", ratio_header, "|---|---:|---:|---|---:|---:|---|---|"]
    for name, r in doc["ratios"].items():
        parts = f"{r['numerator']} / {r['denominator']}" if r.get("numerator") else r.get("missing", "")
        met = "–" if r["met"] is None else ("yes" if r["met"] else "**no**")
        rounds = ", ".join(f"{v:.3g}" for v in r.get("paired_rounds", [])) or "–"
        lines.append(f"| {name} | {r['inflight']} | {_fmt(r.get('paired_value'))} | {rounds} | {_fmt(r['value'])} "
                     f"| {_fmt(r['goal'])} | {met} | {parts} |")  # fmt: skip
    res = doc["resources"]
    for name, model in res["cpu_model"].items():
        if model.get("value") is None:
            continue
        us = model["us_per_request"]
        sentence = (
            f"{name} predicted from CPU per request on {model['cores']} idle cores ({model['inflight']} in flight): "
            f"**{model['value']}** (goal {model['goal']}). CPU µs per request through the broker: requester "
            f"{us['requester']}, broker {us['broker']}, provider {us['provider']}; direct: requester "
            f"{us['requester_direct']}, server {us['server_direct']}."
        )
        lines += ["", sentence]
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
