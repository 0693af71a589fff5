"""What security costs on a real broker: handshakes with and without JWT and TLS, and TLS throughput.

Run it standalone (about a minute on a busy 2-core machine)::

    python -m benchmarks.security_bench [--handshakes 200] [--duration 6] [--inflight 64] [--json FILE]

Four ``rsbroker serve`` processes are started, each with a raw echo provider behind it:

* ``plain`` — TCP, no authentication (loopback clients are anonymous);
* ``jwt`` — TCP with ``--jwt-keys`` holding an RSA, an EC P-256 and an Ed25519 public key;
* ``tls`` — TLS listener with the node certificate, no authentication;
* ``tls+auth`` — TLS with JWT keys and a client CA, so a client proves itself either by a
  bearer token or by its certificate (mTLS).

**Handshake cost** is one new connection measured from ``connect`` to the first response:
TCP (and TLS) connect, SETUP (with the token, if any), one request-response through the
broker to the provider, answer read. Handshakes run one after another (the rows taking
turns), so each is the latency a device sees when it (re)connects; the median and p90 of
each row are printed with the ratio of its median to the plain row's.

**Throughput** is request-response with ``--inflight`` requests outstanding on one requester
connection for ``--duration`` seconds (in alternating segments), plain against TLS
(requester and provider both on TLS in the TLS row): the ratio says what share of the
plain rate survives encryption.

Every client here speaks raw frames (``broker.frames``) so the figures are the broker's and
the transport's, not a client library's. Absolute numbers drift on a shared machine; the
ratios, taken from the same run, are what this measures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import random
import ssl
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import uvloop

from broker import frames as fr
from broker import metadata as md
from broker.auth import client_context, encode_bearer
from broker.auth.tokens import load_private_key, mint_token
from broker.auth.tools import certs_main
from broker.frames import FrameType
from tests.support.brokerproc import BrokerFactory, BrokerProcess, split_hostport

SERVICE = "bench.echo"
ROUTE = f"{SERVICE}.call"
PAYLOAD = b"x" * 64
ACL = """
[acl.bench]
roles = ["bench"]
call = ["bench.*"]
"""
#: ``rsbroker certs keypair --type`` → the JWT algorithm it signs with
KEY_TYPES = {"ed25519": "EdDSA", "ec": "ES256", "rsa": "RS256"}
#: bound on one step (a handshake, a broker start); never part of a figure
STEP_TIMEOUT_S = 30.0
#: handshake turns not counted: the broker's and the client's code paths warm up
WARMUP_TURNS = 5
#: the handshake rows take turns in an order shuffled each turn, reproducibly
ROW_ORDER_SEED = 4
#: the throughput rows alternate in this many segments each, for the same reason rows interleave
THROUGHPUT_SEGMENTS = 3
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# -- key material ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Material:
    """A CA, a node certificate, a client certificate (role ``bench``) and JWT key pairs."""

    root: Path

    def path(self, name: str) -> Path:
        return self.root / name

    @property
    def jwt_keys(self) -> Path:
        return self.root / "jwt-keys.pem"

    def token(self, kind: str, roles: tuple[str, ...] = ("bench",)) -> str:
        return mint_token(load_private_key(self.root / f"{kind}-private.pem"), sub=f"bench-{kind}", roles=roles)

    def client_context(self, *, certificate: bool = False) -> ssl.SSLContext:
        if certificate:
            return client_context(
                ca_file=self.path("ca.pem"), cert_file=self.path("device.pem"), key_file=self.path("device-key.pem")
            )
        return client_context(ca_file=self.path("ca.pem"))


def make_material(root: Path) -> Material:
    steps = [
        ["init", "--out", str(root)],
        ["node", "--ca-dir", str(root), "--name", "node", "--host", "127.0.0.1"],
        ["client", "--ca-dir", str(root), "--name", "device", "--roles", "bench"],
        *(["keypair", "--type", kind, "--out", str(root), "--name", kind] for kind in KEY_TYPES),
    ]
    for argv in steps:
        with contextlib.redirect_stdout(io.StringIO()):
            status = certs_main(argv)
        if status != 0:
            raise RuntimeError(f"rsbroker certs {' '.join(argv)} failed")
    material = Material(root)
    material.jwt_keys.write_bytes(b"".join((root / f"{kind}-public.pem").read_bytes() for kind in KEY_TYPES))
    return material


# -- raw frame peers --------------------------------------------------------------------------


def setup_frame(token: str | None = None, services: tuple[str, ...] = ()) -> bytes:
    metadata = b""
    if services:
        metadata += md.composite_entry(md.REGISTER_MIME, md.Registration(services=services, instance="bench").to_json())
    if token is not None:
        metadata += md.composite_entry(md.AUTH_MIME, encode_bearer(token))
    return fr.setup_frame(metadata=metadata or None, keepalive_ms=30_000, max_lifetime_ms=120_000)


class FrameConnection(asyncio.Protocol):
    """One TCP or TLS connection carrying length-prefixed frames; ``on_frames`` gets each batch."""

    def __init__(self, on_frames: Callable[[FrameConnection, list[bytes]], None]) -> None:
        self.on_frames = on_frames
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        spans, consumed = fr.split_frames(self.buffer, 0, fr.MAX_FRAME_LENGTH)
        frames = [bytes(self.buffer[start:end]) for start, end in spans]
        del self.buffer[:consumed]
        if frames:
            self.on_frames(self, frames)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def send(self, frames: list[bytes]) -> None:
        assert self.transport is not None
        self.transport.write(b"".join(fr.with_length_prefix(f) for f in frames))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def open_frames(
    address: str, context: ssl.SSLContext | None, on_frames: Callable[[FrameConnection, list[bytes]], None]
) -> FrameConnection:
    host, port = split_hostport(address)
    loop = asyncio.get_running_loop()
    _, protocol = await asyncio.wait_for(
        loop.create_connection(lambda: FrameConnection(on_frames), host, port, ssl=context), STEP_TIMEOUT_S
    )
    return protocol


def _echo(connection: FrameConnection, frames: list[bytes]) -> None:
    """The provider: answer every request-response with its data, and keepalives that ask for it."""
    replies = []
    for frame in frames:
        sid, ftype, flags = fr.header(frame)
        if ftype == FrameType.REQUEST_RESPONSE:
            replies.append(fr.payload_frame(sid, fr.request_data(frame, 0, len(frame)), complete=True))
        elif ftype == FrameType.KEEPALIVE and flags & fr.FLAG_RESPOND:
            replies.append(fr.keepalive_frame(False))
    if replies:
        connection.send(replies)


async def start_provider(node: BrokerProcess, context: ssl.SSLContext | None, token: str | None) -> FrameConnection:
    """A raw echo provider registered for :data:`SERVICE` on ``node``; returns once the node lists it."""
    provider = await open_frames(node.tcp or "", context, _echo)
    provider.send([setup_frame(token, (SERVICE,))])
    request = fr.request_frame(FrameType.REQUEST_RESPONSE, 1, md.route_metadata(ROUTE), b"ping")
    deadline = time.monotonic() + STEP_TIMEOUT_S
    while True:  # the registration is in place when a request gets through
        if await _first_response(node, context, token, request) is not None:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"the provider never registered on {node!r}:\n{node.output()}")
        await asyncio.sleep(0.05)
    return provider


async def _first_response(
    node: BrokerProcess, context: ssl.SSLContext | None, token: str | None, request: bytes
) -> bytes | None:
    """Connect, SETUP, one request; the PAYLOAD frame, or None if the broker answered with an ERROR."""
    host, port = split_hostport(node.tcp or "")
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, ssl=context), STEP_TIMEOUT_S)
    try:
        writer.write(fr.with_length_prefix(setup_frame(token)) + fr.with_length_prefix(request))
        while True:
            head = await asyncio.wait_for(reader.readexactly(3), STEP_TIMEOUT_S)
            frame = await reader.readexactly(int.from_bytes(head, "big"))
            _, ftype, _ = fr.header(frame)
            if ftype == FrameType.PAYLOAD:
                return frame
            if ftype == FrameType.ERROR:
                return None
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()


# -- measurements ------------------------------------------------------------------------------


@dataclass(frozen=True)
class HandshakeRow:
    name: str
    node: BrokerProcess
    context: ssl.SSLContext | None
    token: str | None


async def measure_handshakes(rows: list[HandshakeRow], count: int) -> dict[str, list[float]]:
    """Seconds from connect to first response, ``count`` per row, the rows taking turns.

    Interleaving puts every row under the same background load, which on a shared machine
    drifts over a run; the ratios between rows are then fair even when absolutes wander.
    The order changes every turn so that no row always pays for the previous row's close.
    """
    request = fr.request_frame(FrameType.REQUEST_RESPONSE, 1, md.route_metadata(ROUTE), PAYLOAD)
    samples: dict[str, list[float]] = {row.name: [] for row in rows}
    order = list(rows)
    shuffler = random.Random(ROW_ORDER_SEED)
    for turn in range(count + WARMUP_TURNS):
        shuffler.shuffle(order)  # no row always follows the same one (and pays for its close)
        for row in order:
            start = time.perf_counter()
            if await _first_response(row.node, row.context, row.token, request) is None:
                raise RuntimeError(f"handshake row {row.name} was refused:\n{row.node.output()}")
            if turn >= WARMUP_TURNS:
                samples[row.name].append(time.perf_counter() - start)
    return samples


def broker_cpu_s(pid: int) -> float:
    """User + system CPU seconds the process has used (Linux ``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@dataclass
class Throughput:
    """Requests answered in one segment, its wall time, and the broker CPU it took."""

    requests: int
    seconds: float
    broker_cpu_s: float


async def measure_throughput(
    node: BrokerProcess, context: ssl.SSLContext | None, inflight: int, duration: float
) -> Throughput:
    """Request-responses answered with ``inflight`` outstanding on one connection for ``duration`` s."""
    request_meta = md.route_metadata(ROUTE)
    state = {"next": 1, "done": 0, "counting": False}

    def requests(n: int) -> list[bytes]:
        out = []
        for _ in range(n):
            out.append(fr.request_frame(FrameType.REQUEST_RESPONSE, state["next"], request_meta, PAYLOAD))
            state["next"] += 2
        return out

    def on_frames(connection: FrameConnection, frames: list[bytes]) -> None:
        answered = sum(1 for f in frames if fr.header(f)[1] == FrameType.PAYLOAD)
        errors = [f for f in frames if fr.header(f)[1] == FrameType.ERROR]
        if errors:
            raise RuntimeError(f"the broker refused a request: {fr.parse_error(errors[0], 0, len(errors[0]))}")
        if state["counting"]:
            state["done"] += answered
        if answered:
            connection.send(requests(answered))

    requester = await open_frames(node.tcp or "", context, on_frames)
    requester.send([setup_frame()])
    try:
        requester.send(requests(inflight))
        await asyncio.sleep(min(1.0, duration / 5))  # warm-up, not counted
        state["counting"] = True
        cpu, start = broker_cpu_s(node.pid), time.perf_counter()
        await asyncio.sleep(duration)
        state["counting"] = False
        return Throughput(state["done"], time.perf_counter() - start, broker_cpu_s(node.pid) - cpu)
    finally:
        requester.close()


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- the run -----------------------------------------------------------------------------------


@contextlib.contextmanager
def brokers(material: Material) -> Iterator[dict[str, BrokerProcess]]:
    factory = BrokerFactory()
    tls = ["--tls-cert", str(material.path("node.pem")), "--tls-key", str(material.path("node-key.pem"))]
    jwt = ["--jwt-keys", str(material.jwt_keys), "--jwt-leeway-s", "5"]
    common = ["--log-level", "warning"]
    try:
        yield {
            "plain": factory.start(*common),
            "jwt": factory.start(*common, *jwt, config=ACL),
            "tls": factory.start(*common, *tls),
            "tls+auth": factory.start(*common, *tls, *jwt, "--tls-client-ca", str(material.path("ca.pem")), config=ACL),
        }
    finally:
        factory.close()


async def run(handshakes: int, duration: float, inflight: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="rsbroker-security-bench-") as tmp:
        material = make_material(Path(tmp) / "pki")
        with brokers(material) as nodes:
            tls = material.client_context()
            admin = material.token("ed25519", ("admin",))
            providers = [
                await start_provider(nodes["plain"], None, None),
                await start_provider(nodes["jwt"], None, admin),
                await start_provider(nodes["tls"], tls, None),
                await start_provider(nodes["tls+auth"], tls, admin),
            ]
            rows = [
                HandshakeRow("plain", nodes["plain"], None, None),
                *(
                    HandshakeRow(f"jwt {alg}", nodes["jwt"], None, material.token(kind))
                    for kind, alg in KEY_TYPES.items()
                ),
                HandshakeRow("tls", nodes["tls"], tls, None),
                HandshakeRow("tls + jwt EdDSA", nodes["tls+auth"], tls, material.token("ed25519")),
                HandshakeRow(
                    "mtls (client certificate)", nodes["tls+auth"], material.client_context(certificate=True), None
                ),
            ]
            handshake = {
                name: {
                    "median_ms": statistics.median(samples) * 1e3,
                    "p90_ms": _percentile(samples, 0.9) * 1e3,
                    "count": len(samples),
                }
                for name, samples in (await measure_handshakes(rows, handshakes)).items()
            }
            segment = duration / THROUGHPUT_SEGMENTS
            runs: dict[str, list[Throughput]] = {"plain": [], "tls": []}
            for _ in range(THROUGHPUT_SEGMENTS):
                runs["plain"].append(await measure_throughput(nodes["plain"], None, inflight, segment))
                runs["tls"].append(await measure_throughput(nodes["tls"], tls, inflight, segment))
            for provider in providers:
                provider.close()
    base = handshake["plain"]["median_ms"]
    for figures in handshake.values():
        figures["ratio_to_plain"] = figures["median_ms"] / base
    throughput: dict[str, Any] = {"inflight": inflight, "duration_s": duration}
    for name, segments in runs.items():
        answered = sum(t.requests for t in segments)
        throughput[f"{name}_rps"] = answered / sum(t.seconds for t in segments)
        throughput[f"{name}_broker_cpu_us_per_request"] = sum(t.broker_cpu_s for t in segments) / answered * 1e6
    throughput["tls_to_plain"] = throughput["tls_rps"] / throughput["plain_rps"]
    throughput["cpu_tls_to_plain"] = (
        throughput["tls_broker_cpu_us_per_request"] / throughput["plain_broker_cpu_us_per_request"]
    )
    return {"handshakes": handshake, "throughput": throughput}


def render(result: dict[str, Any]) -> str:
    lines = ["handshake: connect + SETUP + first response (sequential new connections)"]
    lines.append(f"  {'row':<28}{'median ms':>10}{'p90 ms':>10}{'x plain':>9}")
    for name, f in result["handshakes"].items():
        lines.append(f"  {name:<28}{f['median_ms']:>10.2f}{f['p90_ms']:>10.2f}{f['ratio_to_plain']:>9.2f}")
    t = result["throughput"]
    lines.append(f"request-response throughput, {t['inflight']} in flight, {t['duration_s']:g} s each")
    for name in ("plain", "tls"):
        rate, cpu = t[f"{name}_rps"], t[f"{name}_broker_cpu_us_per_request"]
        lines.append(f"  {name:<6}{rate:>10.0f} req/s {cpu:>8.1f} broker CPU us/request")
    lines.append(
        f"  tls/plain: throughput x{t['tls_to_plain']:.2f}, broker CPU per request x{t['cpu_tls_to_plain']:.2f}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.security_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--handshakes", type=int, default=200, help="new connections per handshake row (default 200)")
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per throughput row (default 6)")
    parser.add_argument("--inflight", type=int, default=64, help="requests outstanding in the throughput rows")
    parser.add_argument("--json", type=Path, help="also write the figures here as JSON")
    args = parser.parse_args(argv)
    if args.handshakes < 1 or args.duration <= 0 or args.inflight < 1:
        parser.error("--handshakes, --duration and --inflight must be positive")
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:  # the clients as the other benchmarks run them
        result = runner.run(run(args.handshakes, args.duration, args.inflight))
    print(render(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
