"""Latency percentiles and the shape of one measured cell."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

SCENARIOS = ("request-response", "request-stream", "fire-and-forget")


@dataclass(frozen=True)
class Cell:
    """One measurement: a scenario at a number of requests in flight and a payload size.

    ``rate`` switches request-response to open loop: requests leave at that many per second
    whatever the answers do, and latency counts from when each request was due (so a stall
    is not hidden by the generator waiting for it).
    """

    scenario: str
    inflight: int
    payload_bytes: int
    warmup_s: float
    duration_s: float
    rate: float | None = None

    def __post_init__(self) -> None:
        if self.scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {self.scenario!r}")
        if self.inflight < 1 or self.payload_bytes < 0 or self.duration_s <= 0:
            raise ValueError(f"bad cell {self}")


@dataclass
class Measurement:
    """What a load generator saw in the measured window of one cell."""

    ops: int
    window_s: float
    latencies_s: list[float] = field(default_factory=list)
    errors: int = 0
    cpu_s: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.latencies_s)
        return {
            "ops": self.ops,
            "window_s": round(self.window_s, 4),
            "ops_per_s": round(self.ops / self.window_s, 1) if self.window_s > 0 else 0.0,
            "p50_ms": _ms(percentile(ordered, 50.0)),
            "p99_ms": _ms(percentile(ordered, 99.0)),
            "p999_ms": _ms(percentile(ordered, 99.9)),
            "errors": self.errors,
            "cpu_s": {name: round(value, 3) for name, value in self.cpu_s.items()},
        }


def percentile(ordered: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an ascending list; None when there is nothing to rank."""
    if not ordered:
        return None
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


def cell_dict(cell: Cell) -> dict[str, Any]:
    return asdict(cell)
