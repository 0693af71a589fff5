"""The measured window every load generator shares: warm up, count, read CPU around the count."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from benchmarks.procstat import cpu_snapshot
from benchmarks.stats import Cell, Measurement

#: the longest a fire-and-forget drain may take before the cell is reported as failed, seconds
DRAIN_TIMEOUT_S = 60.0


class Recorder:
    """Completions and latencies, counted only while ``recording``.

    ``sending`` goes false when the window closes, so a fire-and-forget sender stops and the
    drain that follows measures only what was counted.
    """

    __slots__ = ("count", "errors", "latencies", "recording", "sending")

    def __init__(self) -> None:
        self.recording = False
        self.sending = True
        self.count = 0
        self.errors = 0
        self.latencies: list[float] = []

    def done(self, latency: float) -> None:
        if self.recording:
            self.count += 1
            self.latencies.append(latency)


async def measure(
    cell: Cell,
    recorder: Recorder,
    watch: dict[str, int],
    drain: Callable[[], Awaitable[None]] | None = None,
) -> Measurement:
    """Run the warm-up and the window around a generator that is already sending.

    ``drain`` (fire-and-forget) returns once everything sent has been handled by the far end;
    the window then ends at that moment, so what was sent is counted at the rate it was served.
    The CPU of ``watch`` processes and of this generator cover exactly the window.
    """
    await asyncio.sleep(cell.warmup_s)
    cpu_before = cpu_snapshot(watch)
    own_before = time.process_time()
    started = time.perf_counter()
    recorder.recording = True
    await asyncio.sleep(cell.duration_s)
    if drain is not None:
        recorder.sending = False
        # A far end that lost a frame would never answer the drain; fail the cell instead of hanging.
        await asyncio.wait_for(drain(), DRAIN_TIMEOUT_S)
    recorder.recording = False
    window = time.perf_counter() - started
    cpu = {name: value - cpu_before[name] for name, value in cpu_snapshot(watch).items()}
    cpu["loadgen"] = time.process_time() - own_before
    return Measurement(recorder.count, window, recorder.latencies, recorder.errors, cpu)
