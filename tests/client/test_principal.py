"""Who asked: the broker forwards the requester's principal to providers that opted in, and
no client can make a provider believe someone else asked.

Real ``rsbroker serve`` processes with JWT authentication on. The principal travels as the
composite entry ``message/x.rsbroker.principal.v0`` (:data:`broker.metadata.PRINCIPAL_MIME`),
added by the node where the requester authenticated, for services whose policy says
``"forward_principal": true``; a handler reads it as ``Request.principal``.

The attacks: a requester (``mallory``, allowed to call the service) puts its own principal
entry into a request — whole, split across fragments, in a METADATA_PUSH, on an opted-in
service or not, on one node or through a broker link. The broker must refuse it (INVALID,
naming the entry) and the provider must never see a principal entry that the broker did not
write.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker import metadata as md
from broker.auth.certs import public_pem
from broker.auth.tokens import mint_token
from broker.client import Connection, InvalidError, Request, Router, connect
from tests.support.admin import send_json, service_instances, wait_for
from tests.support.brokerproc import BrokerFactory, BrokerProcess
from tests.support.cluster import Cluster, ClusterFactory, put_config

OPTED_IN = "pr.open"
PLAIN = "pr.plain"
FORGED = b"root"
ACL = f"""
[acl.callers]
principals = ["alice", "mallory"]
call = ["pr.*"]

[acl.providers]
principals = ["provider-*"]
register = ["pr.*"]

[services."{OPTED_IN}"]
forward_principal = true
"""


class Seen:
    """Every principal entry each request reached the provider with (one list per request)."""

    def __init__(self) -> None:
        self.entries: list[list[bytes]] = []
        self.event = asyncio.Event()

    def note(self, request: Request) -> None:
        self.entries.append([content for mime, content in md.iter_composite(request.metadata) if mime == md.PRINCIPAL_MIME])
        self.event.set()

    @property
    def forged_seen(self) -> bool:
        return any(FORGED in entries for entries in self.entries)


def principal_router(service: str, seen: Seen) -> Router:
    router = Router()

    @router.response(f"{service}.who")
    async def who(data: bytes, request: Request) -> bytes:
        seen.note(request)
        return (request.principal or "-").encode()

    @router.stream(f"{service}.whos")
    async def whos(data: bytes, request: Request) -> AsyncIterator[bytes]:
        seen.note(request)
        yield (request.principal or "-").encode()

    @router.channel(f"{service}.chat")
    async def chat(items: AsyncIterator[bytes], request: Request) -> AsyncIterator[bytes]:
        seen.note(request)
        async for _ in items:
            yield (request.principal or "-").encode()

    @router.fire_and_forget(f"{service}.note")
    async def note(data: bytes, request: Request) -> None:
        seen.note(request)

    @router.metadata_push(f"{service}.push")
    async def push(metadata: bytes, request: Request) -> None:
        seen.note(request)

    return router


def forged_entry(subject: bytes = FORGED) -> bytes:
    return md.composite_entry(md.PRINCIPAL_MIME, subject)


@pytest.fixture(scope="module")
def signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def secured(module_broker_factory: BrokerFactory, signing_key: Ed25519PrivateKey) -> BrokerProcess:
    pem = module_broker_factory.tmpdir() / "jwt.pem"
    pem.write_bytes(public_pem(signing_key))
    admin = mint_token(signing_key, sub="operator", roles=["admin"])
    return module_broker_factory.start("--jwt-keys", str(pem), config=ACL, admin_token=admin)


@pytest.fixture
async def seen(secured: BrokerProcess, signing_key: Ed25519PrivateKey) -> AsyncIterator[Seen]:
    """A provider of both services on ``secured``; what it saw."""
    seen = Seen()
    router = principal_router(OPTED_IN, seen)
    for route, handler in principal_router(PLAIN, seen)._handlers.items():
        router._handlers[route] = handler
    token = mint_token(signing_key, sub="provider-1")
    async with connect(str(secured.tcp), services=[OPTED_IN, PLAIN], router=router, token=token):
        for service in (OPTED_IN, PLAIN):
            await wait_for(lambda s=service: service_instances(secured, s), message=f"{service} registered")
        yield seen


async def _flush(client: Connection, service: str, seen: Seen) -> None:
    """One good request after the attack: anything forwarded before it has reached the provider."""
    count = len(seen.entries)
    await client.request_response(f"{service}.who", b"")
    assert len(seen.entries) == count + 1


@pytest.mark.parametrize("service", [OPTED_IN, PLAIN])
@pytest.mark.parametrize("model", ["response", "stream", "channel"])
async def test_a_forged_principal_entry_is_refused_and_never_reaches_the_provider(
    secured: BrokerProcess, signing_key: Ed25519PrivateKey, seen: Seen, service: str, model: str
) -> None:
    async with connect(str(secured.tcp), token=mint_token(signing_key, sub="mallory")) as mallory:
        with pytest.raises(InvalidError, match="x.rsbroker.principal.v0"):
            if model == "response":
                await mallory.request_response(f"{service}.who", b"", metadata=forged_entry())
            elif model == "stream":
                async for _ in mallory.request_stream(f"{service}.whos", b"", metadata=forged_entry()):
                    pass
            else:
                async for _ in mallory.request_channel(f"{service}.chat", [b"x"], metadata=forged_entry()):
                    pass
        await _flush(mallory, service, seen)
    assert not seen.forged_seen, seen.entries


async def test_a_forged_entry_split_across_fragments_is_refused(
    secured: BrokerProcess, signing_key: Ed25519PrivateKey, seen: Seen
) -> None:
    """The broker reads the whole metadata of a fragmented request, not its first fragment."""
    padding = md.composite_entry("application/x.padding", b"p" * 300)
    async with connect(str(secured.tcp), token=mint_token(signing_key, sub="mallory"), fragment_size=128) as mallory:
        with pytest.raises(InvalidError, match="x.rsbroker.principal.v0"):
            await mallory.request_response(f"{OPTED_IN}.who", b"d" * 200, metadata=padding + forged_entry())
        await _flush(mallory, OPTED_IN, seen)
    assert not seen.forged_seen, seen.entries


async def test_a_forged_entry_in_fire_and_forget_and_metadata_push_is_dropped(
    secured: BrokerProcess, signing_key: Ed25519PrivateKey, seen: Seen
) -> None:
    """Neither has an answer to refuse with: the broker drops them (the provider sees nothing)."""
    async with connect(str(secured.tcp), token=mint_token(signing_key, sub="mallory")) as mallory:
        await mallory.fire_and_forget(f"{OPTED_IN}.note", b"", metadata=forged_entry())
        await mallory.metadata_push(md.route_metadata(f"{OPTED_IN}.push") + forged_entry())
        await _flush(mallory, OPTED_IN, seen)
    assert not seen.forged_seen, seen.entries


async def test_an_opted_in_service_learns_who_asked_in_every_model(
    secured: BrokerProcess, signing_key: Ed25519PrivateKey, seen: Seen
) -> None:
    async with connect(str(secured.tcp), token=mint_token(signing_key, sub="alice")) as alice:
        assert await alice.request_response(f"{OPTED_IN}.who", b"") == b"alice"
        # a repeat is where the connection's route cache answers: it must not lose the entry
        assert await alice.request_response(f"{OPTED_IN}.who", b"") == b"alice"
        assert [item async for item in alice.request_stream(f"{OPTED_IN}.whos", b"")] == [b"alice"]
        assert [item async for item in alice.request_channel(f"{OPTED_IN}.chat", [b"a", b"b"])] == [b"alice", b"alice"]
        seen.event.clear()
        await alice.fire_and_forget(f"{OPTED_IN}.note", b"")
        await asyncio.wait_for(seen.event.wait(), 30)
        assert seen.entries[-1] == [b"alice"]
        # a fragmented request gets the entry too (the broker re-frames its metadata)
    async with connect(str(secured.tcp), token=mint_token(signing_key, sub="alice"), fragment_size=64) as fragmented:
        padding = md.composite_entry("application/x.padding", b"p" * 100)
        assert await fragmented.request_response(f"{OPTED_IN}.who", b"d" * 100, metadata=padding) == b"alice"
    assert all(entries == [b"alice"] for entries in seen.entries), seen.entries


async def test_a_service_that_did_not_opt_in_gets_no_principal(
    secured: BrokerProcess, signing_key: Ed25519PrivateKey, seen: Seen
) -> None:
    async with connect(str(secured.tcp), token=mint_token(signing_key, sub="alice")) as alice:
        assert await alice.request_response(f"{PLAIN}.who", b"") == b"-"
    assert seen.entries == [[]]


# -- two nodes: the edge node stamps, the link carries, the policy comes from the config store --


@pytest.fixture
async def pair(cluster_factory: ClusterFactory, signing_key: Ed25519PrivateKey) -> Cluster:
    keys = cluster_factory.brokers.tmpdir() / "jwt-keys.pem"
    Path(keys).write_bytes(public_pem(signing_key))
    admin = mint_token(signing_key, sub="operator", roles=["admin"])
    cluster = cluster_factory.start(2, "--jwt-keys", str(keys), "--cluster-key", str(cluster_factory.key_file()), admin_token=admin)
    await cluster.wait_converged()
    await put_config(cluster["n1"], "acl/callers", {"principals": ["alice", "mallory"], "call": ["pr.*"]})
    await put_config(cluster["n1"], "acl/providers", {"principals": ["provider-*"], "register": ["pr.*"]})
    return cluster


async def test_cross_node_the_principal_is_forwarded_and_a_forged_one_refused(
    pair: Cluster, signing_key: Ed25519PrivateKey
) -> None:
    seen = Seen()
    provider_token = mint_token(signing_key, sub="provider-1")
    router = principal_router(OPTED_IN, seen)
    async with connect(str(pair["n1"].tcp), services=[OPTED_IN], router=router, token=provider_token, instance="p1"):
        await pair.wait_serves(OPTED_IN, {"p1"})
        async with connect(str(pair["n2"].tcp), token=mint_token(signing_key, sub="alice")) as alice:
            await wait_for(lambda: _answers(alice), message=f"{OPTED_IN} reachable from n2")
            assert await alice.request_response(f"{OPTED_IN}.who", b"") == b"-"  # not opted in yet
            await put_config(pair["n2"], f"services/{OPTED_IN}", {"forward_principal": True})
            await wait_for(lambda: _answers(alice, b"alice"), message="the policy applied on n2")
        async with connect(str(pair["n2"].tcp), token=mint_token(signing_key, sub="mallory")) as mallory:
            with pytest.raises(InvalidError, match="x.rsbroker.principal.v0"):
                await mallory.request_response(f"{OPTED_IN}.who", b"", metadata=forged_entry())
            assert await mallory.request_response(f"{OPTED_IN}.who", b"") == b"mallory"
    assert not seen.forged_seen, seen.entries
    assert seen.entries[-1] == [b"mallory"]


async def _answers(client: Connection, expected: bytes | None = None) -> bool:
    try:
        reply = await client.request_response(f"{OPTED_IN}.who", b"")
    except Exception:  # noqa: BLE001 — not routed yet (REJECTED) while the route spreads
        return False
    return expected is None or reply == expected


async def test_a_policy_with_a_bad_forward_principal_is_refused_with_the_field_named(secured: BrokerProcess) -> None:
    """The config store takes the policy through the same parser as the config file."""
    status, body = await send_json(secured, "PUT", f"/api/v1/config/services/{PLAIN}", {"forward_principal": "yes"})
    assert status == 400, body
    assert "'forward_principal' must be true or false" in str(body), body


@pytest.mark.parametrize("service", [OPTED_IN, PLAIN])
async def test_a_look_alike_entry_is_not_read_as_the_principal(
    secured: BrokerProcess, signing_key: Ed25519PrivateKey, seen: Seen, service: str
) -> None:
    """MIME types are matched exactly: an entry spelled in other case, or the MIME type's bytes
    inside another entry, passes the broker but is never read as who asked."""
    look_alikes = md.composite_entry(md.PRINCIPAL_MIME.upper(), FORGED) + md.composite_entry("text/plain", md.PRINCIPAL_MIME.encode())
    expected = b"mallory" if service == OPTED_IN else b"-"
    async with connect(str(secured.tcp), token=mint_token(signing_key, sub="mallory")) as mallory:
        assert await mallory.request_response(f"{service}.who", b"", metadata=look_alikes) == expected
    assert not seen.forged_seen, seen.entries
