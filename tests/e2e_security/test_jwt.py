"""JWT in SETUP against a real broker: each key type admitted, each bad token refused by name.

One broker (``--jwt-keys`` with an RSA, an EC and an Ed25519 public key, issuer, audience,
leeway 0) serves the module. Admissions use rsocket-py clients; refusals use the raw
frame client, because the reason is the ERROR frame's text and rsocket-py does not show it.
After every refusal the node still relays for an authenticated pair, and its log names
the reason but never contains the token.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import jwt
import pytest

from broker import metadata as md
from broker.frames import ErrorCode, FrameType, request_frame
from tests.e2e_security.clients import Provider, auth_setup, echo, raw_with_token, requester
from tests.e2e_security.pki import AUDIENCE, ISSUER, KEY_TYPES, Pki
from tests.e2e_security.tokens import alg_none, hmac_with_public_key, tampered
from tests.support.admin import connections, wait_for
from tests.support.brokerproc import BrokerFactory, BrokerProcess
from tests.support.rawclient import RawClient

ACL = """
[acl.jwt-greeters]
roles = ["greeter"]
register = ["jwt.*"]
call = ["jwt.*"]
"""


@pytest.fixture(scope="module")
def node(module_broker_factory: BrokerFactory, pki: Pki) -> BrokerProcess:
    return module_broker_factory.start(*pki.jwt_args(leeway_s=0), config=ACL, admin_token=pki.admin_token())


async def assert_serves_authenticated(node: BrokerProcess, pki: Pki, service: str) -> None:
    """An authenticated provider and requester still complete a request through ``node``."""
    token = pki.token("svc-check", ("greeter",))
    async with Provider(node, service, token=token) as provider:
        async with requester(node, token=token) as client:
            assert await echo(client, f"{service}.echo", b"still here") == b"still here"
    assert provider.received == [f"{service}.echo"]


@pytest.mark.parametrize("kind", sorted(KEY_TYPES))
async def test_each_key_type_registers_a_provider_and_serves_a_requester(
    node: BrokerProcess, pki: Pki, kind: str, transport: str
) -> None:
    service = f"jwt.{kind}.{transport}"
    provider_token = pki.token(f"provider-{kind}", ("greeter",), kind=kind)
    requester_token = pki.token(f"caller-{kind}", ("greeter",), kind=kind)
    async with Provider(node, service, transport, token=provider_token) as provider:
        async with requester(node, transport, token=requester_token) as client:
            assert await echo(client, f"{service}.echo", b"hello") == b"hello"
            principals = {c["principal"] for c in await connections(node)}
            assert {f"provider-{kind}", f"caller-{kind}"} <= principals
    assert provider.received == [f"{service}.echo"]


def _expired(pki: Pki) -> str:
    return pki.token("alice", ("greeter",), now=time.time() - 7200, ttl=3600)


def _not_yet_valid(pki: Pki) -> str:
    return pki.token("alice", ("greeter",), nbf=int(time.time()) + 3600)


REFUSALS: dict[str, tuple[Callable[[Pki], str | None], str]] = {
    "expired": (_expired, "token expired at "),
    "not yet valid": (_not_yet_valid, "token not valid before "),
    "wrong issuer": (
        lambda p: p.token("alice", ("greeter",), issuer="https://evil.test"),
        f"wrong issuer 'https://evil.test' (expected {ISSUER!r})",
    ),
    "wrong audience": (
        lambda p: p.token("alice", ("greeter",), audience="someone-else"),
        f"wrong audience ['someone-else'] (expected {AUDIENCE!r})",
    ),
    "wrong key": (
        lambda p: p.token("alice", ("greeter",), kind="stranger"),
        "signature does not match any configured key",
    ),
    "tampered payload": (
        lambda p: tampered(p.token("alice", ("greeter",))),
        "signature does not match any configured key",
    ),
    "alg none": (lambda p: alg_none(), "algorithm 'none' is not allowed"),
    "hmac with the public key": (
        lambda p: hmac_with_public_key(p.jwt_keys.read_bytes()),
        "algorithm 'HS256' is not allowed",
    ),
    "garbage": (lambda p: "garbage", "malformed token: expected a JWT"),
    "no token": (lambda p: None, "no bearer token in SETUP"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
async def test_bad_token_is_refused_with_its_reason(node: BrokerProcess, pki: Pki, case: str) -> None:
    make, reason = REFUSALS[case]
    token = make(pki)
    transport = "ws" if case in ("no token", "alg none") else "tcp"
    async with await raw_with_token(node, token, transport, ("jwt.refused",), "refused") as raw:
        message = await raw.expect_error(ErrorCode.REJECTED_SETUP, contains=reason)
        assert message.startswith("authentication failed: ")
        await raw.wait_closed()
    logged = await wait_for(
        lambda: [line for line in node.output().splitlines() if "refused SETUP" in line and reason in line],
        message=f"the refusal '{reason}' in the broker's log",
    )
    secret_parts = [part for part in (token or "").split(".") if len(part) >= 8]
    assert all(part not in node.output() for part in secret_parts), logged
    await assert_serves_authenticated(node, pki, f"jwt.after.{case.replace(' ', '_')}")


async def test_requests_before_an_accepted_setup_never_reach_a_provider(node: BrokerProcess, pki: Pki) -> None:
    """A refused connection's pipelined requests are dropped with it: the provider sees none."""
    service = "jwt.pipelined"
    async with Provider(node, service, token=pki.token("p", ("greeter",))) as provider:
        async with await RawClient.tcp(node.tcp) as raw:  # type: ignore[arg-type]
            request = md.route_metadata(f"{service}.echo")
            await raw.send(
                auth_setup(_expired(pki)),
                *(request_frame(FrameType.REQUEST_RESPONSE, sid, request, b"x") for sid in (1, 3, 5)),
            )
            await raw.expect_error(ErrorCode.REJECTED_SETUP, contains="token expired at ")
            await raw.wait_closed()
        await assert_serves_authenticated(node, pki, "jwt.after_pipelined")
        assert provider.received == []


def _exp(token: str) -> int:
    return int(jwt.decode(token, options={"verify_signature": False})["exp"])


async def _closed_at_expiry(node: BrokerProcess, token: str, principal: str) -> float:
    """Open a connection with ``token``, show it serves, and return when the broker closed it."""
    async with await raw_with_token(node, token) as raw:
        sid = await raw.request(FrameType.REQUEST_RESPONSE, "jwt.nobody.ping")
        # accepted: the request is routed (and refused only because nobody provides it)
        await raw.expect_error(ErrorCode.REJECTED, stream_id=sid, contains="no provider for service 'jwt.nobody'")
        message = await raw.expect_error(ErrorCode.CONNECTION_CLOSE, contains=f"token of '{principal}' expired at ")
        closed_at = time.time()
        assert token not in message
        await raw.wait_closed()
    return closed_at


async def test_connection_is_closed_when_its_token_expires(node: BrokerProcess, pki: Pki) -> None:
    """With ``--jwt-leeway-s 0`` the broker closes the connection once ``exp`` passes."""
    token = pki.token("short-lived", ("admin",), ttl=3)
    assert await _closed_at_expiry(node, token, "short-lived") >= _exp(token)


async def test_expiry_close_honours_the_leeway(broker_factory: BrokerFactory, pki: Pki) -> None:
    """The leeway that admitted a token also delays closing its connection: never admit then cut at once."""
    leeway = 3
    lenient = await asyncio.to_thread(broker_factory.start, *pki.jwt_args(leeway_s=leeway))
    token = pki.token("lenient", ("admin",), ttl=1)
    assert await _closed_at_expiry(lenient, token, "lenient") >= _exp(token) + leeway
