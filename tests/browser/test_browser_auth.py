"""The browser example's bearer token (``?token=``) against a broker that authenticates.

The broker verifies JWTs with ``--jwt-keys`` and applies access rules from its config file:
browsers (``browser-*``) may call the greeter, greeters (``greeter-*``) may register it.
The denial the page gets for another route names the token's subject, which shows that the
token the page put in its SETUP is what the broker authenticated.
"""

import asyncio
from collections.abc import AsyncIterator

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from playwright.async_api import Page

from broker.auth.tokens import mint_token
from tests.support.brokerproc import BrokerFactory, BrokerProcess

from .greeter import SERVICE, GreeterState, greeting, serving_greeter
from .pages import REJECTED, REJECTED_SETUP, UNSERVED_ROUTE, greeter_page, run_page

pytestmark = pytest.mark.browser

ACCESS_RULES = f"""
[acl.browsers]
principals = ["browser-*"]
call = ["{SERVICE}.*"]

[acl.greeters]
principals = ["greeter-*"]
register = ["{SERVICE}"]
"""


@pytest.fixture(scope="module")
def signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
async def secured_broker(broker_factory: BrokerFactory, signing_key: Ed25519PrivateKey) -> BrokerProcess:
    """A node that demands a bearer JWT signed by ``signing_key`` and enforces ACCESS_RULES."""
    public_pem = broker_factory.tmpdir() / "jwt-public.pem"
    public_pem.write_bytes(
        signing_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return await asyncio.to_thread(
        broker_factory.start,
        "--jwt-keys",
        str(public_pem),
        node_id="b1",
        config=ACCESS_RULES,
        admin_token=mint_token(signing_key, sub="operator", roles=["admin"]),
    )


@pytest.fixture
async def secured_greeter(secured_broker: BrokerProcess, signing_key: Ed25519PrivateKey) -> AsyncIterator[GreeterState]:
    """The greeter, authenticated as ``greeter-1`` (allowed to register by ACCESS_RULES)."""
    async with serving_greeter(secured_broker, token=mint_token(signing_key, sub="greeter-1")) as state:
        yield state


async def test_page_authenticates_with_the_token_from_its_query_string(
    page: Page,
    example_site: str,
    secured_broker: BrokerProcess,
    secured_greeter: GreeterState,
    signing_key: Ed25519PrivateKey,
) -> None:
    token = mint_token(signing_key, sub="browser-ada", ttl=600)

    report = await run_page(page, greeter_page(example_site, secured_broker.ws_url, name="Ada", token=token))

    assert report["state"] == "done", report["error"]
    assert report["response"] == greeting("Ada")
    assert secured_greeter.greeted == ["Ada"]
    assert report["stream"] == {"items": ["1", "2", "3", "4", "5"], "requests": [2, 2, 2]}
    assert await secured_greeter.next_logged() == "hello from Ada"
    unserved = report["unserved"]
    assert isinstance(unserved, dict)
    assert unserved["code"] == REJECTED
    assert "'browser-ada'" in str(unserved["message"]), "the denial must name the token's subject"
    assert UNSERVED_ROUTE in str(unserved["message"])


@pytest.mark.parametrize("token", [None, "not-a-jwt"], ids=["no-token", "malformed-token"])
async def test_page_shows_the_refused_setup(
    page: Page,
    example_site: str,
    secured_broker: BrokerProcess,
    secured_greeter: GreeterState,
    token: str | None,
) -> None:
    params = {} if token is None else {"token": token}

    report = await run_page(page, greeter_page(example_site, secured_broker.ws_url, **params))

    assert report["state"] == "failed"
    error = report["error"]
    assert isinstance(error, dict)
    assert error["code"] == REJECTED_SETUP, error
    assert report["response"] is None
    assert secured_greeter.greeted == [], "a request on a refused connection reached the provider"
    assert await page.text_content("#state") == "failed"
