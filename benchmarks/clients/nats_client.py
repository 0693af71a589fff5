"""nats-py request-reply and publish against nats-server, in two client configurations.

* ``run_cell`` (client ``nats-py``): ``inflight`` tasks awaiting ``nc.request``, as the nats-py
  documentation writes it.
* ``run_cell_callback`` (client ``nats-py-callback``): the frame generator's design on nats-py,
  one reply subscription whose callback records the answer and publishes the next request, no
  task or future per request. Whichever is faster is "NATS" in the ratios.

Fire-and-forget is ``publish`` in batches of ``inflight`` followed by one request on the same
subject, whose reply proves the batch was delivered. NATS has no request-stream.
"""

from __future__ import annotations

import asyncio
import time

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg

from benchmarks.clients.window import Recorder, measure
from benchmarks.servers.nats_echo import SUBJECT
from benchmarks.stats import Cell, Measurement

_CONNECT = {"pending_size": 8 * 1024 * 1024}
_TIMEOUT_S = 30.0


async def _connect(target: str) -> Client:
    return await nats.connect(f"nats://{target}", **_CONNECT)


def _check(cell: Cell) -> None:
    if cell.scenario == "request-stream" or cell.rate is not None:
        raise ValueError("NATS has no request-stream; the NATS clients run closed loop only")


async def _publish_batches(nc: Client, data: bytes, cell: Cell, recorder: Recorder) -> None:
    while recorder.sending:
        for _ in range(cell.inflight):
            await nc.publish(SUBJECT, data)
        if recorder.recording:
            recorder.count += cell.inflight
        await asyncio.sleep(0)


async def _fire_and_forget(nc: Client, data: bytes, cell: Cell, recorder: Recorder, watch: dict[str, int]) -> Measurement:
    sender = asyncio.ensure_future(_publish_batches(nc, data, cell, recorder))

    async def drain() -> None:
        await sender
        await nc.request(SUBJECT, b"", timeout=_TIMEOUT_S)

    try:
        return await measure(cell, recorder, watch, drain)
    finally:
        sender.cancel()


async def _request_loop(nc: Client, data: bytes, recorder: Recorder) -> None:
    # The flag, not only cancellation, ends the loop: Python 3.11's wait_for (inside nc.request)
    # swallows a cancel that races with the reply arriving.
    while recorder.sending:
        started = time.perf_counter()
        await nc.request(SUBJECT, data, timeout=_TIMEOUT_S)
        recorder.done(time.perf_counter() - started)


async def run_cell(target: str, cell: Cell, watch: dict[str, int]) -> Measurement:
    _check(cell)
    nc = await _connect(target)
    recorder = Recorder()
    data = bytes(cell.payload_bytes)
    try:
        if cell.scenario == "fire-and-forget":
            return await _fire_and_forget(nc, data, cell, recorder, watch)
        tasks = [asyncio.ensure_future(_request_loop(nc, data, recorder)) for _ in range(cell.inflight)]
        try:
            return await measure(cell, recorder, watch)
        finally:
            recorder.sending = False
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await nc.close()


async def run_cell_callback(target: str, cell: Cell, watch: dict[str, int]) -> Measurement:
    _check(cell)
    nc = await _connect(target)
    recorder = Recorder()
    data = bytes(cell.payload_bytes)
    try:
        if cell.scenario == "fire-and-forget":
            return await _fire_and_forget(nc, data, cell, recorder, watch)
        inbox = nc.new_inbox()
        sent: dict[str, float] = {}
        counter = 0

        async def publish_next(now: float) -> None:
            """Send one request whose reply subject identifies it (so its latency can be found)."""
            nonlocal counter
            counter += 1
            reply = f"{inbox}.{counter}"
            sent[reply] = now
            await nc.publish(SUBJECT, data, reply=reply)

        async def answered(msg: Msg) -> None:
            now = time.perf_counter()
            due = sent.pop(msg.subject, None)
            if due is not None and recorder.sending:
                recorder.done(now - due)
                await publish_next(now)

        subscription = await nc.subscribe(
            f"{inbox}.*", cb=answered, pending_msgs_limit=1_000_000, pending_bytes_limit=1 << 30
        )
        now = time.perf_counter()
        for _ in range(cell.inflight):
            await publish_next(now)
        try:
            return await measure(cell, recorder, watch)
        finally:
            recorder.sending = False
            await subscription.unsubscribe()
    finally:
        await nc.close()
