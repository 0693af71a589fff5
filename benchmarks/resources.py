"""Broker memory per idle connection: resident-set growth divided by connections held open.

A fresh broker per figure, so one measurement's garbage does not become the next one's
baseline. Connections come from several ``benchmarks.idle`` processes (at most
:data:`PER_PROCESS` each, well under the 20,000 open files one process may have).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from benchmarks.procs import Processes
from benchmarks.procstat import rss_bytes
from benchmarks.systems import start_broker

PER_PROCESS = 2500
_SETTLE_TIMEOUT_S = 15.0
_SETTLE_STEP_S = 0.3
_SETTLE_TOLERANCE = 0.005


@dataclass(frozen=True)
class IdleMemory:
    transport: str
    connections: int
    rss_before_bytes: int
    rss_after_bytes: int

    @property
    def bytes_per_connection(self) -> float:
        return (self.rss_after_bytes - self.rss_before_bytes) / self.connections

    def as_dict(self) -> dict[str, float | int | str]:
        return {
            "transport": self.transport,
            "connections": self.connections,
            "rss_before_bytes": self.rss_before_bytes,
            "rss_after_bytes": self.rss_after_bytes,
            "bytes_per_connection": round(self.bytes_per_connection),
        }


def settled_rss(pid: int) -> int:
    """RSS once it stops moving (the broker finishes handling the SETUPs after the clients report)."""
    deadline = time.monotonic() + _SETTLE_TIMEOUT_S
    previous = rss_bytes(pid)
    while time.monotonic() < deadline:
        time.sleep(_SETTLE_STEP_S)
        current = rss_bytes(pid)
        if abs(current - previous) <= previous * _SETTLE_TOLERANCE:
            return current
        previous = current
    return previous


def idle_memory(procs: Processes, transport: str, connections: int) -> IdleMemory:
    """Start a broker, read its RSS, open ``connections`` idle ones over ``transport``, read it again."""
    broker, addresses = start_broker(procs, f"idle-{transport}-{connections}")
    target = str(addresses["tcp" if transport == "tcp" else "ws"])
    before = settled_rss(broker.pid)
    holders = math.ceil(connections / PER_PROCESS)
    for index in range(holders):
        count = min(PER_PROCESS, connections - index * PER_PROCESS)
        procs.python(
            f"idle-{transport}-{connections}-{index}", "benchmarks.idle",
            "--transport", transport, "--target", target, "--count", str(count), timeout_s=120.0,
        )  # fmt: skip
    after = settled_rss(broker.pid)
    procs.close()
    return IdleMemory(transport, connections, before, after)
