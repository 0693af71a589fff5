"""rsocket-py as a user would drive it: ``inflight`` tasks awaiting the client's calls.

This is the requester of the issue-3 hop ratio (broker vs direct); it measures what a user of
rsocket-py feels, not the broker's capacity (the frame generator does that).
"""

from __future__ import annotations

import asyncio
import time

from reactivestreams.subscriber import Subscriber
from reactivestreams.subscription import Subscription
from rsocket.extensions.helpers import composite, route
from rsocket.helpers import single_transport_provider
from rsocket.payload import Payload
from rsocket.rsocket_client import RSocketClient
from rsocket.transports.tcp import TransportTCP

from benchmarks import frames
from benchmarks.clients.window import Recorder, measure
from benchmarks.rsocketpy import CONNECTION_SETTINGS, READ_BUFFER_BYTES, quiet_library_logs
from benchmarks.servers.common import split_address
from benchmarks.stats import Cell, Measurement


class _CreditSubscriber(Subscriber):
    """Counts stream items and tops the credit back up to ``inflight`` when half is used."""

    def __init__(self, inflight: int, recorder: Recorder) -> None:
        self._inflight = inflight
        self._credit = inflight
        self._recorder = recorder
        self.subscription: Subscription | None = None

    def on_subscribe(self, subscription: Subscription) -> None:
        self.subscription = subscription

    def on_next(self, value: Payload, is_complete: bool = False) -> None:
        if self._recorder.recording:
            self._recorder.count += 1
        self._credit -= 1
        if self._credit <= self._inflight // 2 and self.subscription is not None:
            self.subscription.request(self._inflight - self._credit)
            self._credit = self._inflight

    def on_error(self, exception: Exception) -> None:
        self._recorder.errors += 1

    def on_complete(self) -> None:
        return None


async def _request_loop(client: RSocketClient, payload: Payload, recorder: Recorder) -> None:
    while recorder.sending:
        started = time.perf_counter()
        await client.request_response(payload)
        recorder.done(time.perf_counter() - started)


async def _fire_and_forget(client: RSocketClient, payload: Payload, cell: Cell, recorder: Recorder) -> None:
    while recorder.sending:
        sent = [client.fire_and_forget(payload) for _ in range(cell.inflight)]
        await asyncio.gather(*sent)
        if recorder.recording:
            recorder.count += cell.inflight


async def run_cell(target: str, cell: Cell, watch: dict[str, int]) -> Measurement:
    if cell.rate is not None:
        raise ValueError("the rsocket-py client runs closed loop only")
    quiet_library_logs()
    host, port = split_address(target)
    reader, writer = await asyncio.open_connection(host, port)
    transport = TransportTCP(reader, writer, read_buffer_size=READ_BUFFER_BYTES)
    payload = Payload(bytes(cell.payload_bytes), composite(route(frames.ROUTE)))
    recorder = Recorder()
    tasks: list[asyncio.Task[None]] = []
    async with RSocketClient(single_transport_provider(transport), **CONNECTION_SETTINGS) as client:
        try:
            if cell.scenario == "request-response":
                tasks = [asyncio.ensure_future(_request_loop(client, payload, recorder)) for _ in range(cell.inflight)]
                return await measure(cell, recorder, watch)
            if cell.scenario == "request-stream":
                subscriber = _CreditSubscriber(cell.inflight, recorder)
                client.request_stream(payload).initial_request_n(cell.inflight).subscribe(subscriber)
                try:
                    return await measure(cell, recorder, watch)
                finally:
                    if subscriber.subscription is not None:
                        subscriber.subscription.cancel()
            sender = asyncio.ensure_future(_fire_and_forget(client, payload, cell, recorder))
            tasks = [sender]

            async def drain() -> None:
                await sender
                await client.request_response(Payload(b"", payload.metadata))

            return await measure(cell, recorder, watch, drain)
        finally:
            recorder.sending = False
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
