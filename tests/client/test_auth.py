"""Bearer tokens in the SETUP of ``broker.client`` connections, against a node with JWT on."""

from __future__ import annotations

import asyncio

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.auth.certs import public_pem
from broker.auth.tokens import mint_token
from broker.client import RejectedError, SetupError, connect
from broker.frames import ErrorCode
from tests.client.service import Probe, service_router
from tests.support.brokerproc import BrokerFactory, BrokerProcess

SERVICE = "auth.greeter"
ACCESS_RULES = f"""
[acl.callers]
principals = ["caller-*"]
call = ["{SERVICE}.*"]

[acl.providers]
principals = ["provider-*"]
register = ["{SERVICE}"]
"""


@pytest.fixture(scope="module")
def signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def secured(module_broker_factory: BrokerFactory, signing_key: Ed25519PrivateKey) -> BrokerProcess:
    pem = module_broker_factory.tmpdir() / "jwt.pem"
    pem.write_bytes(public_pem(signing_key))
    return module_broker_factory.start("--jwt-keys", str(pem), config=ACCESS_RULES)


async def test_tokens_in_the_setup_authenticate_provider_and_requester(
    secured: BrokerProcess, signing_key: Ed25519PrivateKey
) -> None:
    provider_token = mint_token(signing_key, sub="provider-1")
    caller_token = mint_token(signing_key, sub="caller-1")
    async with connect(str(secured.tcp), services=[SERVICE], router=service_router(SERVICE, Probe()), token=provider_token):
        async with connect(str(secured.tcp), token=caller_token) as client:
            assert await client.request_response(f"{SERVICE}.hello", b"ada") == b"hello ada"
        async with connect(secured.ws_url, token=mint_token(signing_key, sub="stranger")) as stranger:
            with pytest.raises(RejectedError, match="stranger"):
                await stranger.request_response(f"{SERVICE}.hello", b"ada")


@pytest.mark.parametrize("case", ["no token", "foreign key", "expired"])
async def test_a_refused_setup_raises_setup_error_from_connect(secured: BrokerProcess, signing_key: Ed25519PrivateKey, case: str) -> None:
    token = {
        "no token": None,
        "foreign key": mint_token(Ed25519PrivateKey.generate(), sub="caller-1"),
        "expired": mint_token(signing_key, sub="caller-1", ttl=60, now=0),
    }[case]
    with pytest.raises(SetupError) as raised:
        async with connect(str(secured.tcp), token=token):
            pass
    assert raised.value.code == ErrorCode.REJECTED_SETUP
    assert raised.value.message


async def test_a_provider_may_not_register_what_its_token_does_not_allow(
    secured: BrokerProcess, signing_key: Ed25519PrivateKey
) -> None:
    with pytest.raises(SetupError):
        async with connect(
            str(secured.tcp), services=["other.service"], router=service_router("other.service", Probe()),
            token=mint_token(signing_key, sub="provider-2"),
        ):  # fmt: skip
            await asyncio.sleep(0)
