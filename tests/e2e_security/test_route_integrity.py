"""The route the broker checks is the route the provider runs (issue 11 §2).

A requester that declares ``message/x.rsocket.routing.v0`` as its SETUP metadata MIME type
sends bare routing tags; providers (and broker links) read composite metadata. Bytes can
be built whose routing reading is an allowed route and whose composite reading is another
one (:func:`tests.support.route_confusion.confused_metadata`). The broker must forward metadata whose meaning at the next
hop is exactly what it checked, on one node and across a broker link.

Principals come from client certificates (mTLS): a bare-routing SETUP has no room for a
bearer token. ``device-7`` (role ``iot``) may register ``ri.svc`` and call only
``ri.svc.echo``; the provider also serves ``ri.svc.hold``, which nobody may call.
"""

from __future__ import annotations

import base64
import os
import ssl
from collections.abc import Iterator

import pytest

from broker import frames as fr
from broker import metadata as md
from broker import tracing
from broker.auth import client_context
from broker.frames import ErrorCode, FrameType
from tests.e2e_security.clients import Provider
from tests.e2e_security.pki import Pki
from tests.support.admin import wait_for
from tests.support.brokerproc import BrokerFactory, BrokerProcess
from tests.support.cluster import Cluster, ClusterFactory
from tests.support.rawclient import RawClient
from tests.support.route_confusion import cache_colliding_metadata, confused_metadata

SERVICE = "ri.svc"
ALLOWED = f"{SERVICE}.echo"
FORBIDDEN = f"{SERVICE}.hold"
ACL = f"""
[acl.devices]
roles = ["iot"]
register = ["{SERVICE}"]
call = ["{ALLOWED}"]
"""


def test_the_crafted_bytes_read_two_ways() -> None:
    """The attack's premise, checked with the broker's own readers."""
    metadata = confused_metadata(ALLOWED, FORBIDDEN)
    assert md.route_of(metadata, md.ROUTING_MIME) == ALLOWED
    assert md.route_of(metadata, md.COMPOSITE_MIME) == FORBIDDEN
    tags, composite = cache_colliding_metadata(ALLOWED, FORBIDDEN)
    assert composite == b"R" + tags
    assert md.route_of(tags, md.ROUTING_MIME) == ALLOWED and md.route_of(composite, md.COMPOSITE_MIME) == FORBIDDEN


def device_context(pki: Pki) -> ssl.SSLContext:
    cert, key = pki.client_cert("device-7")
    return client_context(ca_file=pki.ca, cert_file=cert, key_file=key)


async def routing_requester(node: BrokerProcess, pki: Pki) -> RawClient:
    """A raw mTLS requester whose SETUP declares bare routing metadata."""
    client = await RawClient.tcp(node.tcp, ssl_context=device_context(pki))
    await client.send(fr.setup_frame(metadata_mime=md.ROUTING_MIME))
    return client


async def attack(node: BrokerProcess, provider: Provider, pki: Pki) -> None:
    """Send the confused request and check the provider runs the route that was checked."""
    async with await routing_requester(node, pki) as client:
        sid = client.next_stream_id()
        await client.send(
            fr.request_frame(FrameType.REQUEST_RESPONSE, sid, confused_metadata(ALLOWED, FORBIDDEN), b"payload")
        )
        await wait_for(lambda: _ran(provider), message="the provider to run the request")
        assert provider.received == [ALLOWED], f"access was checked for {ALLOWED}, the provider ran {provider.received}"
        assert (await client.expect(FrameType.PAYLOAD, stream_id=sid)).data == b"payload"
        # a plain bare-routing request still reaches the allowed route; the denied one is refused
        plain = client.next_stream_id()
        await client.send(fr.request_frame(FrameType.REQUEST_RESPONSE, plain, md.routing(ALLOWED), b"again"))
        assert (await client.expect(FrameType.PAYLOAD, stream_id=plain)).data == b"again"
        denied = client.next_stream_id()
        await client.send(fr.request_frame(FrameType.REQUEST_RESPONSE, denied, md.routing(FORBIDDEN), b"no"))
        await client.expect_error(ErrorCode.REJECTED, stream_id=denied, contains="access denied")
    assert provider.received == [ALLOWED, ALLOWED]


async def _ran(provider: Provider) -> bool:
    return bool(provider.received)


@pytest.fixture(scope="module")
def node(module_broker_factory: BrokerFactory, pki: Pki) -> BrokerProcess:
    # JWT keys as well as mTLS: an authenticating node's admin API wants a token with role admin
    return module_broker_factory.start(
        *pki.tls_args(client_ca=True), *pki.jwt_args(), config=ACL, admin_token=pki.admin_token()
    )


async def test_routing_requester_cannot_run_a_route_it_was_not_checked_for(node: BrokerProcess, pki: Pki) -> None:
    async with Provider(node, SERVICE, ssl_context=device_context(pki)) as provider:
        await attack(node, provider, pki)


@pytest.fixture(scope="module")
def two_nodes(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Two mTLS nodes with the same access rules and a cluster key."""
    root = tmp_path_factory.mktemp("route-integrity")
    config = root / "acl.toml"
    config.write_text(ACL)
    key = root / "cluster.key"
    key.write_text(_cluster_key())
    with ClusterFactory() as factory:
        yield factory.start(
            2,
            *pki.tls_args(client_ca=True),
            *pki.jwt_args(),
            "--config", str(config), "--cluster-key", str(key), "--gossip-profile", "local",
            admin_token=pki.admin_token(),
        )  # fmt: skip


def _cluster_key() -> str:
    return base64.b64encode(os.urandom(32)).decode() + "\n"


async def test_routing_requester_cannot_run_another_route_across_a_link(two_nodes: Cluster, pki: Pki) -> None:
    await two_nodes.wait_converged()
    async with Provider(two_nodes["n2"], SERVICE, ssl_context=device_context(pki)) as provider:
        await two_nodes.wait_serves(SERVICE, {provider.instance})
        await attack(two_nodes["n1"], provider, pki)



async def test_a_cached_traced_route_is_not_reused_for_other_metadata(node: BrokerProcess, pki: Pki) -> None:
    """Traced requests resolve their route from a cache keyed by all their metadata but the
    trace entry's content (``Broker.resolve``, ``hotpath.trace_entry``). Once an allowed traced request has
    warmed it, metadata that shares those bytes but hides a second routing entry, or a
    forbidden route behind the same trace entry, must be judged as a full read judges it."""
    trace = tracing.entry("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    async with Provider(node, SERVICE, ssl_context=device_context(pki)) as provider:
        async with await RawClient.tcp(node.tcp, ssl_context=device_context(pki)) as client:
            await client.send(fr.setup_frame())

            async def call(metadata: bytes) -> int:
                sid = client.next_stream_id()
                await client.send(fr.request_frame(FrameType.REQUEST_RESPONSE, sid, metadata, b"q"))
                return sid

            allowed = md.route_metadata(ALLOWED)
            for _ in range(2):  # the first fills the cache, the second is served from it
                assert (await client.expect(FrameType.PAYLOAD, stream_id=await call(allowed + trace))).data == b"q"
            attempts = {
                "two routing entries": (allowed + trace + md.route_metadata(FORBIDDEN), ErrorCode.INVALID, "2 routing entries"),
                "routing entry before": (md.route_metadata(FORBIDDEN) + allowed + trace, ErrorCode.INVALID, "2 routing entries"),
                "a truncated entry after": (allowed + trace + b"\x05", ErrorCode.INVALID, "unreadable request metadata"),
                "the forbidden route": (md.route_metadata(FORBIDDEN) + trace, ErrorCode.REJECTED, "access denied"),
            }
            for name, (metadata, code, reason) in attempts.items():
                sid = await call(metadata)
                message = await client.expect_error(code, stream_id=sid)
                assert reason in message, f"{name}: {message}"
    assert provider.received == [ALLOWED, ALLOWED]


async def test_a_route_cached_for_bare_routing_tags_is_not_reused_for_composite_metadata(node: BrokerProcess, pki: Pki) -> None:
    """``Broker.resolve`` caches routes by metadata bytes. Bare routing tags and composite
    metadata that are the same bytes but for a leading ``R`` (the key the tags were once
    cached under) name different routes: a composite request must not be answered with the
    route checked for the tags."""
    tags, composite = cache_colliding_metadata(ALLOWED, FORBIDDEN)
    async with Provider(node, SERVICE, ssl_context=device_context(pki)) as provider:
        async with await routing_requester(node, pki) as client:
            sid = client.next_stream_id()
            await client.send(fr.request_frame(FrameType.REQUEST_RESPONSE, sid, tags, b"q"))
            assert (await client.expect(FrameType.PAYLOAD, stream_id=sid)).data == b"q"
        async with await RawClient.tcp(node.tcp, ssl_context=device_context(pki)) as client:
            await client.send(fr.setup_frame())
            sid = client.next_stream_id()
            await client.send(fr.request_frame(FrameType.REQUEST_RESPONSE, sid, composite, b"q"))
            message = await client.expect_error(ErrorCode.REJECTED, stream_id=sid)
            assert "access denied" in message, message
    assert provider.received == [ALLOWED], f"access was checked for {ALLOWED}, the provider ran {provider.received}"
