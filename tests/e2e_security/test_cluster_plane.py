"""The cluster plane authenticates nodes, not bytes: attacks on real ``rsbroker serve`` processes.

* (a) A keyless node (the loopback development mode): a raw client that sends a broker
  link SETUP entry gains nothing a plain anonymous client lacks — over WebSocket (what a
  web page can open) the entry is refused, and over TCP the "link" cannot register
  services by METADATA_PUSH (which would put it in front of every client of the service).
* (b) A keyed cluster: the bytes of a real link handshake, recorded by a proxy on the
  wire, are worthless on a new connection — the accepting node challenges every link
  with a fresh nonce.
* (c) Forged Raft and gossip messages on the cluster port of a keyed node are dropped
  and counted in ``/metrics`` before they change anything: the config store keeps its value.
* (d) A node with authentication on, or gossiping on a non-loopback address, refuses to
  run a keyless cluster, naming the setting.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import struct
import subprocess
import time

import msgpack
import pytest

from broker import frames as fr
from broker import metadata as md
from broker.frames import ErrorCode, FrameType
from cluster.crypto import Keyring
from cluster.raft.messages import Message, MsgType, Snapshot, encode_message
from tests.e2e_security.pki import Pki
from tests.support.admin import Admin, get_json, get_text, services, wait_for
from tests.support.brokerproc import BrokerFactory, BrokerProcess, run_rsbroker, split_hostport
from tests.support.chaos import ChaosProxy
from tests.support.cluster import ClusterFactory, put_config
from tests.support.rawclient import ConnectionClosed, Frame, RawClient

def link_setup(node: str, to: str) -> bytes:
    """A SETUP frame whose composite metadata claims to be a broker link from ``node``.

    It carries every field a link entry has ever had (``ts`` of the old proof, ``to`` and
    ``nonce`` of the challenge handshake), so the node under test reads it as a well-formed
    link entry without a key: what a local process or a web page can send.
    """
    entry = {"node": node, "to": to, "ts": int(time.time()), "nonce": "AAAAAAAAAAAAAAAAAAAAAA=="}
    return fr.setup_frame(
        keepalive_ms=20_000, max_lifetime_ms=90_000, metadata=md.composite_entry(md.LINK_MIME, json.dumps(entry).encode())
    )


async def frames_until_pong_or_close(raw: RawClient) -> list[Frame]:
    """Ask for a KEEPALIVE echo and read until it comes or the broker closes: everything sent
    before it has been processed once the echo arrives."""
    await raw.send(fr.keepalive_frame(True))
    frames: list[Frame] = []
    try:
        while True:
            frame = await raw.recv()
            frames.append(frame)
            if frame.type == FrameType.KEEPALIVE and not frame.flags & 0x80:
                return frames
    except ConnectionClosed:
        return frames


async def frames_until_answer_or_close(raw: RawClient, sid: int) -> list[Frame]:
    """Read until a frame on ``sid`` (the request was routed), an ERROR on stream 0 or the close."""
    frames: list[Frame] = []
    try:
        while True:
            frame = await raw.recv()
            frames.append(frame)
            if frame.stream_id == sid or (frame.stream_id == 0 and frame.type == FrameType.ERROR):
                return frames
    except ConnectionClosed:
        return frames


async def metric(admin: Admin, name: str, **labels: str) -> float:
    """The value of one sample of ``GET /metrics`` (0 when the sample is absent)."""
    status, text = await get_text(admin, "/metrics")
    assert status == 200, text
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.fullmatch(rf"{re.escape(name)}(?:\{{(.*)\}})? (\S+)", line)
        if match and ",".join(sorted((match.group(1) or "").split(","))) == wanted:
            return float(match.group(2))
    return 0.0


# -- (a) keyless node --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keyless(module_broker_factory: BrokerFactory) -> BrokerProcess:
    return module_broker_factory.start("--cluster", "127.0.0.1:0")


async def test_keyless_link_entry_over_websocket_is_refused(keyless: BrokerProcess) -> None:
    async with await RawClient.ws(keyless.ws) as raw:
        await raw.send(link_setup("n9", keyless.node_id))
        frames = await frames_until_pong_or_close(raw)
    refusals = [f for f in frames if f.type == FrameType.ERROR and f.stream_id == 0]
    assert refusals, f"a broker link entry over WebSocket was accepted: {frames}"
    code, message = refusals[0].error
    assert code == ErrorCode.REJECTED_SETUP and "WebSocket" in message, refusals[0]


async def test_keyless_link_cannot_register_services_by_metadata_push(keyless: BrokerProcess) -> None:
    service = "c.hijacked"
    registration = md.Registration(services=(service,), instance="evil", weight=100)
    async with await RawClient.tcp(keyless.tcp) as raw:
        await raw.send(link_setup("n9", keyless.node_id))
        await raw.send(fr.metadata_push_frame(md.composite_entry(md.REGISTER_MIME, registration.to_json())))
        frames = await frames_until_pong_or_close(raw)
        listed = service in await services(keyless.admin)
    assert not listed, f"a broker link registered '{service}' by METADATA_PUSH (frames {frames})"
    refusals = [f for f in frames if f.type == FrameType.ERROR and f.stream_id == 0]
    assert refusals and "cannot register" in refusals[0].error[1], frames
    # The node keeps serving everyone else.
    async with await RawClient.tcp(keyless.tcp) as client:
        await client.setup()
        sid = await client.request(FrameType.REQUEST_RESPONSE, "c.nobody.ping")
        await client.expect_error(ErrorCode.REJECTED, stream_id=sid, contains="no provider")


# -- (b) keyed cluster: replay ---------------------------------------------------------------------


async def test_replayed_link_handshake_is_refused(cluster_factory: ClusterFactory, pki: Pki) -> None:
    key = cluster_factory.key_file()
    proxy = await ChaosProxy.start()
    try:
        # n1's links to n2 go through the proxy, which records what n1 sends on the wire.
        cluster = await asyncio.to_thread(
            cluster_factory.start, 2, "--cluster-key", str(key), *pki.jwt_args(),
            node_args={"n2": ["--advertise", proxy.address]}, admin_token=pki.admin_token(),
        )  # fmt: skip
        proxy.upstream = cluster["n2"].tcp
        await cluster.wait_converged()
        await wait_for(
            lambda: any(_has_link_entry(c) for c in proxy.captured) and _link_up(cluster["n1"]),
            message="n1's link to n2 through the recording proxy",
        )
        recording = next(bytes(c) for c in proxy.captured if _has_link_entry(c))
        async with await RawClient.tcp(cluster["n2"].tcp) as raw:
            await raw.send_raw(recording)  # SETUP and whatever proof followed it, byte for byte
            sid = 1_000_001
            await raw.send(fr.request_frame(FrameType.REQUEST_RESPONSE, sid, md.route_metadata("c.secret.read"), b""))
            frames = await frames_until_answer_or_close(raw, sid)
        answered = [f for f in frames if f.stream_id == sid]
        assert not answered, f"the replayed link was accepted and routed a request: {answered}"
        refusals = [f for f in frames if f.type == FrameType.ERROR and f.stream_id == 0]
        assert refusals and refusals[0].error[0] == ErrorCode.REJECTED_SETUP, frames
        assert await metric(cluster["n2"], "rsbroker_link_auth_failures_total") >= 1
        # The genuine link is unaffected.
        assert await _link_up(cluster["n1"])
    finally:
        await proxy.close()


def _has_link_entry(captured: bytearray) -> bool:
    return md.LINK_MIME.encode() in captured


async def _link_up(admin: Admin) -> bool:
    status, body = await get_json(admin, "/api/v1/topology")
    return status == 200 and any(n["node_id"] == "n2" and n["link"] == "up" for n in body["nodes"])


# -- (c) forged Raft and gossip messages ------------------------------------------------------------


@pytest.fixture
def keyed(cluster_factory: ClusterFactory) -> BrokerProcess:
    return cluster_factory.start(1, "--cluster-key", str(cluster_factory.key_file()))["n1"]


def _forged_snapshot(target: str) -> bytes:
    """An InstallSnapshot from a made-up leader that would replace the whole config store."""
    data = msgpack.packb({"index": 10**6, "data": {"app/canary": "forged"}, "sessions": {}})
    snapshot = Snapshot(index=10**6, term=10**6, voters=("evil",), learners=(), data=data)
    return encode_message(Message(MsgType.SNAP, to=target, frm="evil", term=10**6, snapshot=snapshot))


async def _send_raft_frames(cluster: str | None, *bodies: bytes) -> None:
    host, port = split_hostport(str(cluster))
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"\x02" + b"".join(struct.pack(">I", len(b)) + b for b in bodies))
    await writer.drain()
    await reader.read()  # the node closes the stream on the first bad frame
    writer.close()


async def test_forged_raft_and_gossip_messages_are_dropped_and_counted(keyed: BrokerProcess) -> None:
    await wait_for(lambda: _leader(keyed), message="the single node's Raft leadership")
    await put_config(str(keyed.admin), "app/canary", "genuine")
    forged = _forged_snapshot(keyed.node_id)
    stranger = Keyring([os.urandom(32)]).seal(forged, aad=b"raft")
    await _send_raft_frames(keyed.cluster, forged)  # no seal at all
    await _send_raft_frames(keyed.cluster, stranger)  # sealed under another cluster's key
    await wait_for(
        lambda: _at_least(keyed, "rsbroker_cluster_dropped_total", 2, plane="raft", reason="seal"),
        message="two dropped Raft messages counted",
    )
    status, body = await get_json(keyed, "/api/v1/config/app/canary")
    assert status == 200 and body["value"] == "genuine", body

    # Gossip: an unsealed Alive for a member that does not exist.
    envelope = msgpack.packb([1, int(time.time() * 1000), 7, [[6, 1, "evil", "127.0.0.1", 9, {}]]])
    host, port = split_hostport(str(keyed.cluster))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.sendto(envelope, (host, port))
    await wait_for(
        lambda: _at_least(keyed, "rsbroker_cluster_dropped_total", 1, plane="gossip", reason="decrypt"),
        message="the unsealed gossip packet counted",
    )
    status, body = await get_json(keyed, "/api/v1/members")
    assert "evil" not in {m["node_id"] for m in body["members"]}


async def _leader(node: BrokerProcess) -> bool:
    status, body = await get_json(node, "/api/v1/raft")
    return status == 200 and bool(body.get("leader"))


async def _at_least(node: BrokerProcess, name: str, value: float, **labels: str) -> bool:
    return await metric(node, name, **labels) >= value


# -- (d) authentication on, cluster keyless ----------------------------------------------------------


@pytest.mark.parametrize("case", ["jwt on", "off loopback"])
def test_keyless_cluster_is_refused_where_it_is_not_a_loopback_development_mode(pki: Pki, case: str) -> None:
    """With authentication on, or with a gossip address other hosts can reach (refused
    before anything binds, so the wildcard address is safe to name here)."""
    extra = pki.jwt_args() if case == "jwt on" else ["--allow-anonymous", "--advertise", "127.0.0.1:7000"]
    cluster = "127.0.0.1:0" if case == "jwt on" else "0.0.0.0:0"
    try:
        done = run_rsbroker("serve", "--node-id", "n1", "--tcp", "127.0.0.1:0", "--cluster", cluster, *extra, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the node started (and kept running) with a keyless cluster ({case})")
    assert done.returncode != 0, f"the node started with a keyless cluster ({case}):\n{done.stdout}{done.stderr}"
    assert "--cluster-key" in done.stderr + done.stdout
