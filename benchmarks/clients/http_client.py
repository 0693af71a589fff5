"""A raw HTTP/1.1 load generator: keep-alive connections with pipelined requests.

Chosen over aiohttp's client because it is the fastest fair way to load an HTTP server from
Python: the request bytes are pre-built, responses are split by Content-Length in place, and
pipelining lets the server read many requests per syscall, which can only flatter the HTTP
figures. ``inflight`` requests are spread over ``ceil(inflight / 64)`` connections, 64 deep
at most, so 1 and 64 in flight use one connection as RSocket does and 512 use eight.
Only request-response exists over plain HTTP.

:func:`run_cell_aiohttp` is the other HTTP client: aiohttp's own, driven as its users do.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from functools import partial

import aiohttp

from benchmarks.clients.window import Recorder, measure
from benchmarks.servers.common import split_address
from benchmarks.stats import Cell, Measurement

_DEPTH = 64
_HEAD_END = b"\r\n\r\n"
_LENGTH = b"\r\ncontent-length:"


class PipelinedHttp(asyncio.Protocol):
    """One keep-alive connection: each response seen sends the next request."""

    def __init__(self, request: bytes, depth: int, recorder: Recorder) -> None:
        self._request = request
        self._depth = depth
        self._recorder = recorder
        self._sent: deque[float] = deque()
        self._buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        now = time.perf_counter()
        self._sent.extend([now] * self._depth)
        transport.write(self._request * self._depth)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        buf = self._buf
        buf += data
        offset = 0
        answered = 0
        while True:
            head_end = buf.find(_HEAD_END, offset)
            if head_end < 0:
                break
            end = head_end + 4 + _find_length(buf, offset, head_end)
            if end > len(buf):
                break
            offset = end
            answered += 1
            self._recorder.done(now - self._sent.popleft())
        if offset:
            del buf[:offset]
        if answered:
            self._sent.extend([now] * answered)
            self.transport.write(self._request * answered)  # type: ignore[union-attr]


def _find_length(buf: bytearray, start: int, head_end: int) -> int:
    """Content-Length of the response head ``buf[start:head_end]`` (header names are case-insensitive)."""
    head = bytes(buf[start:head_end]).lower()
    at = head.find(_LENGTH)
    if at < 0:
        raise ConnectionError("response without Content-Length")
    line_end = head.find(b"\r\n", at + len(_LENGTH))
    return int(head[at + len(_LENGTH) : line_end if line_end >= 0 else len(head)])


async def run_cell(target: str, cell: Cell, watch: dict[str, int]) -> Measurement:
    if cell.scenario != "request-response" or cell.rate is not None:
        raise ValueError("plain HTTP/1.1 has request-response only, closed loop")
    host, port = split_address(target)
    body = bytes(cell.payload_bytes)
    request = (
        f"POST /echo HTTP/1.1\r\nHost: {target}\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    connections = math.ceil(cell.inflight / _DEPTH)
    depths = [cell.inflight // connections + (1 if i < cell.inflight % connections else 0) for i in range(connections)]
    recorder = Recorder()
    loop = asyncio.get_running_loop()
    transports = []
    try:
        for depth in depths:
            transport, _ = await loop.create_connection(partial(PipelinedHttp, request, depth, recorder), host, port)
            transports.append(transport)
        return await measure(cell, recorder, watch)
    finally:
        for transport in transports:
            transport.close()


async def _session_loop(session: aiohttp.ClientSession, url: str, body: bytes, recorder: Recorder) -> None:
    while recorder.sending:
        started = time.perf_counter()
        async with session.post(url, data=body) as response:
            await response.read()
        recorder.done(time.perf_counter() - started)


async def run_cell_aiohttp(target: str, cell: Cell, watch: dict[str, int]) -> Measurement:
    """Client ``aiohttp-client``: ``inflight`` tasks awaiting ``session.post`` as aiohttp's
    documentation writes it (one keep-alive connection per task, no pipelining): the
    "Python to Python" HTTP row, where the pipelined generator above is the server's ceiling."""
    if cell.scenario != "request-response" or cell.rate is not None:
        raise ValueError("plain HTTP/1.1 has request-response only, closed loop")
    body = bytes(cell.payload_bytes)
    recorder = Recorder()
    connector = aiohttp.TCPConnector(limit=cell.inflight)
    async with aiohttp.ClientSession(connector=connector) as session:
        tasks = [asyncio.ensure_future(_session_loop(session, f"http://{target}/echo", body, recorder)) for _ in range(cell.inflight)]
        try:
            return await measure(cell, recorder, watch)
        finally:
            recorder.sending = False
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
