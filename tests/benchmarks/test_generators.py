"""Each frame-generator scenario against the frame responder, both in this process, on real sockets.

These prove the generator counts what the responder really answers (no timing is asserted:
only that answers arrived, were counted, and that a wrong address or route is reported).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from benchmarks import frames
from benchmarks.clients import frames_client
from benchmarks.servers.responder import Responder
from benchmarks.stats import Cell, Measurement, percentile


@pytest.fixture
async def responder() -> AsyncIterator[str]:
    server = await asyncio.get_running_loop().create_server(Responder, "127.0.0.1", 0)
    host, port = server.sockets[0].getsockname()[:2]
    async with server:
        yield f"{host}:{port}"


def cell(scenario: str, inflight: int = 8, payload: int = 100, rate: float | None = None) -> Cell:
    return Cell(scenario, inflight, payload, warmup_s=0.02, duration_s=0.1, rate=rate)


@pytest.mark.parametrize("payload", [0, 100, 16 * 1024])
async def test_request_response_counts_answers_with_latencies(responder: str, payload: int) -> None:
    measured = await frames_client.run_cell(responder, cell("request-response", payload=payload), {})
    assert measured.ops > 0
    assert len(measured.latencies_s) == measured.ops
    assert measured.errors == 0
    assert "loadgen" in measured.cpu_s


@pytest.mark.parametrize("inflight", [1, 8])
async def test_request_stream_is_paced_by_credit(responder: str, inflight: int) -> None:
    measured = await frames_client.run_cell(responder, cell("request-stream", inflight=inflight), {})
    assert measured.ops > 0
    assert measured.latencies_s == []


async def test_fire_and_forget_window_ends_when_the_far_end_has_everything(responder: str) -> None:
    measured = await frames_client.run_cell(responder, cell("fire-and-forget"), {})
    assert measured.ops > 0 and measured.ops % 8 == 0  # whole batches of `inflight`
    assert measured.window_s >= 0.1


async def test_open_loop_never_sends_ahead_of_the_offered_rate(responder: str) -> None:
    started = time.perf_counter()
    measured = await frames_client.run_cell(responder, cell("request-response", rate=500.0), {})
    elapsed = time.perf_counter() - started
    # However slow the machine, no more requests leave than were due by the time it returned.
    assert 0 < measured.ops <= int(elapsed * 500.0) + 1


async def test_route_probe_succeeds_against_a_responder(responder: str) -> None:
    await frames_client.wait_for_route(responder, timeout_s=5.0)


async def test_route_probe_reports_the_error_it_got() -> None:
    class Refuser(Responder):
        def frame_received(self, buf: bytearray, start: int, end: int) -> None:
            stream_id, type_flags = frames.HEADER.unpack_from(buf, start)
            if type_flags >> 10 == frames.REQUEST_RESPONSE:
                self.out += frames.tcp(
                    frames.error(stream_id, frames.ERROR_REJECTED, "no provider for service 'x'")
                )

    server = await asyncio.get_running_loop().create_server(Refuser, "127.0.0.1", 0)
    host, port = server.sockets[0].getsockname()[:2]
    async with server:
        with pytest.raises(frames_client.RouteUnavailable, match="ERROR 0x202: no provider for service"):
            await frames_client.wait_for_route(f"{host}:{port}", timeout_s=0.3, retry_s=0.05)


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 99.9) == 100.0
    assert percentile([], 50) is None
    summary = Measurement(ops=4, window_s=2.0, latencies_s=[0.001, 0.002, 0.003, 0.004]).summary()
    assert summary["ops_per_s"] == 2.0 and summary["p50_ms"] == 2.0 and summary["p99_ms"] == 4.0


async def test_unbounded_credit_is_served_in_bursts_until_cancelled(responder: str) -> None:
    """A REQUEST_STREAM asking for 2^31-1 items must not make the responder build them all at once."""
    host, port = responder.split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(frames.tcp(frames.setup(20_000, 120_000)))
    request = frames.request_body(frames.REQUEST_STREAM, b"x", frames.routing_metadata(), initial_n=2**31 - 1)
    writer.write(frames.tcp((1).to_bytes(4, "big") + request))
    item = frames.tcp(frames.header(1, frames.PAYLOAD, frames.FLAG_NEXT) + b"x")
    received = await reader.readexactly(len(item) * 3000)  # more than one burst of 1024
    assert received == item * 3000
    writer.write(frames.tcp(frames.cancel(1)))
    writer.close()
    await writer.wait_closed()
