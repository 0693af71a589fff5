"""What ``broker.client`` costs per request-response at each end, in CPU time, without sockets.

``python -m benchmarks.client_cost [--requests 100000] [--rounds 5]``

Each end is the real client — a :class:`~broker.client.Connection` on the real TCP protocol
(length-prefixed framing, coalesced writes) and a real event loop — whose asyncio transport
is a stand-in that answers in the next loop turn, as a broker would after one read:

* **requester**: 64 tasks each awaiting ``request_response(ROUTE, 100 B)`` one after another;
  the stand-in answers every REQUEST_RESPONSE it is written with a PAYLOAD(NEXT|COMPLETE).
* **provider**: an ``async def`` echo handler (``benchmarks.servers.pyclient_provider``); the
  stand-in feeds it 64 REQUEST_RESPONSE frames with routing metadata in one read, then 64 more
  each time all were answered.

Measured as process CPU per request, in one child process per end and codec
(``RSBROKER_NO_EXTENSIONS=1`` for the pure one: the choice is made at import), rounds
alternating; the fastest round of each is printed (the least disturbed by neighbours). The
stand-in's own work (building answers) is included and is the same for both codecs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from typing import Any

from benchmarks import frames
from benchmarks.servers.pyclient_provider import echo_router
from broker import metadata as md
from broker.frames import FrameType, payload_frame, request_frame, split_frames, with_length_prefix

IN_FLIGHT = 64
DATA = bytes(100)


class _Wire:
    """An ``asyncio.Transport`` stand-in: what the client writes goes to ``answer``, whose
    reply is delivered to the client's protocol in the next loop turn (one read)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, answer: Any) -> None:
        self.loop = loop
        self.answer = answer
        self.protocol: Any = None

    def write(self, data: bytes) -> None:
        reply = self.answer(data)
        if reply:
            self.loop.call_soon(self.protocol.data_received, reply)

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("stand-in", 0) if name == "peername" else default

    def close(self) -> None:
        pass


def _attach(connection: Any, answer: Any) -> _Wire:
    from broker.client.transport import _TcpProtocol

    loop = asyncio.get_running_loop()
    wire = _Wire(loop, answer)
    protocol = _TcpProtocol(connection, 1 << 24)
    wire.protocol = protocol
    protocol.connection_made(wire)  # type: ignore[arg-type]
    connection.attach(protocol)
    return wire


async def _requester(requests: int) -> float:
    from broker.client import Connection

    reply = with_length_prefix(payload_frame(0, DATA, complete=True))
    prefix, rest = reply[:3], reply[7:]  # the reply around its stream id, spliced per request

    def answer(data: bytes) -> bytes:
        spans, _ = split_frames(data, 0, 1 << 24)
        out: list[bytes] = []
        for off, _ in spans:
            if data[off + 4] >> 2 == FrameType.REQUEST_RESPONSE:
                out += (prefix, data[off : off + 4], rest)
        return b"".join(out)

    connection = Connection(keepalive_s=3600, max_lifetime_s=7200)
    _attach(connection, answer)
    per_task = requests // IN_FLIGHT

    async def loop() -> None:
        for _ in range(per_task):
            await connection.request_response(frames.ROUTE, DATA)

    await asyncio.gather(*(loop() for _ in range(IN_FLIGHT // 4)))  # warm up
    started = time.process_time()
    await asyncio.gather(*(loop() for _ in range(IN_FLIGHT)))
    return (time.process_time() - started) / (per_task * IN_FLIGHT)


async def _provider(requests: int) -> float:
    from broker.client import Connection

    meta = md.route_metadata(frames.ROUTE)
    batch = b"".join(
        with_length_prefix(request_frame(FrameType.REQUEST_RESPONSE, sid, meta, DATA)) for sid in range(2, 2 * IN_FLIGHT + 2, 2)
    )
    state = {"answered": 0, "batches": 0, "wanted": 0}
    finished = asyncio.get_running_loop().create_future()

    def answer(data: bytes) -> bytes:
        spans, _ = split_frames(data, 0, 1 << 24)
        state["answered"] += sum(1 for off, _ in spans if data[off + 4] >> 2 == FrameType.PAYLOAD)
        if state["answered"] < IN_FLIGHT:
            return b""
        state["answered"] = 0
        state["batches"] += 1
        if state["batches"] >= state["wanted"]:
            if not finished.done():
                finished.set_result(None)
            return b""
        return batch

    connection = Connection(router=echo_router(), keepalive_s=3600, max_lifetime_s=7200)
    wire = _attach(connection, answer)
    state["wanted"] = 50
    wire.protocol.data_received(batch)
    await finished
    finished = asyncio.get_running_loop().create_future()
    state["batches"], state["wanted"] = 0, requests // IN_FLIGHT
    started = time.process_time()
    wire.protocol.data_received(batch)
    await finished
    return (time.process_time() - started) / (state["wanted"] * IN_FLIGHT)


def _child(end: str, requests: int) -> None:
    import broker.client.codec as codec

    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    cost = asyncio.run(_requester(requests) if end == "requester" else _provider(requests))
    print(json.dumps({"compiled": codec.COMPILED, "us": cost * 1e6}))


def _measure(end: str, pure: bool, requests: int) -> dict[str, Any]:
    env = dict(os.environ)
    env.pop("RSBROKER_NO_EXTENSIONS", None)
    if pure:
        env["RSBROKER_NO_EXTENSIONS"] = "1"
    argv = [sys.executable, "-m", "benchmarks.client_cost", "--child", end, "--requests", str(requests)]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.client_cost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--requests", type=int, default=100_000, help="request-responses per measurement")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds")
    parser.add_argument("--child", choices=("requester", "provider"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child, args.requests)
        return
    runs: dict[tuple[str, bool], list[float]] = {}
    for _ in range(args.rounds):
        for end in ("requester", "provider"):
            for pure in (False, True):
                result = _measure(end, pure, args.requests)
                if not pure and not result["compiled"]:
                    raise SystemExit("the compiled client codec did not load: build it (pip install -e .)")
                runs.setdefault((end, pure), []).append(result["us"])
    print(f"| broker.client CPU per request-response ({IN_FLIGHT} in flight, 100 B, best of {args.rounds}) | compiled µs | pure µs | pure / compiled |")
    print("|---|---:|---:|---:|")
    for end in ("requester", "provider"):
        fast, slow = min(runs[(end, False)]), min(runs[(end, True)])
        print(f"| {end} | {fast:.2f} | {slow:.2f} | {slow / fast:.2f} |")


if __name__ == "__main__":
    main()
