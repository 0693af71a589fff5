"""``broker.client`` as a user drives it: ``inflight`` tasks awaiting ``request_response``.

* request-response: ``inflight`` tasks, each awaiting one 100 B request after another (the
  "Python to Python" rows of issue 14, same shape as the nats-py and aiohttp-client rows);
* request-stream: one ``async for`` over ``request_stream(window=inflight)``;
* fire-and-forget: batches of ``inflight`` sends, drained by one request-response.
"""

from __future__ import annotations

import asyncio
import time

from benchmarks import frames
from benchmarks.clients.window import Recorder, measure
from benchmarks.stats import Cell, Measurement
from broker.client import Connection, connect


async def _request_loop(client: Connection, data: bytes, recorder: Recorder) -> None:
    request = client.request_response
    route = frames.ROUTE
    while recorder.sending:
        started = time.perf_counter()
        await request(route, data)
        recorder.done(time.perf_counter() - started)


async def _stream(client: Connection, data: bytes, window: int, recorder: Recorder) -> None:
    async for _ in client.request_stream(frames.ROUTE, data, window=window):
        if recorder.recording:
            recorder.count += 1
        if not recorder.sending:
            break


async def _fire_and_forget(client: Connection, data: bytes, cell: Cell, recorder: Recorder) -> None:
    while recorder.sending:
        for _ in range(cell.inflight):
            await client.fire_and_forget(frames.ROUTE, data)
        if recorder.recording:
            recorder.count += cell.inflight
        await asyncio.sleep(0)


async def run_cell(target: str, cell: Cell, watch: dict[str, int]) -> Measurement:
    if cell.rate is not None:
        raise ValueError("the broker.client generator runs closed loop only")
    data = bytes(cell.payload_bytes)
    recorder = Recorder()
    async with connect(target, keepalive_s=20, max_lifetime_s=120) as client:
        if cell.scenario == "request-response":
            tasks = [asyncio.ensure_future(_request_loop(client, data, recorder)) for _ in range(cell.inflight)]
            drain = None
        elif cell.scenario == "request-stream":
            tasks = [asyncio.ensure_future(_stream(client, data, cell.inflight, recorder))]
            drain = None
        else:
            sender = asyncio.ensure_future(_fire_and_forget(client, data, cell, recorder))
            tasks = [sender]

            async def drain() -> None:
                await sender
                await client.request_response(frames.ROUTE, b"")

        try:
            return await measure(cell, recorder, watch, drain)
        finally:
            recorder.sending = False
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
