"""The browser example's bearer token (``?token=``) against a broker that authenticates.

The broker verifies JWTs with ``--jwt-keys`` and applies access rules from its config file:
browsers (``browser-*``) may call the greeter, greeters (``greeter-*``) may register it.
The denial the page gets for another route names the token's subject, which shows that the
token the page put in its SETUP is what the broker authenticated.

The dashboard (``GET /`` on a node) with authentication on: it asks for an admin token with
the node's reason, then runs live with it — the other nodes' stats read by the node with that
token, config writes made with it — keeps it in its tab only, and asks again once it expires.
"""

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from playwright.async_api import Page

from broker.auth.certs import public_pem
from broker.auth.tokens import mint_token
from tests.support.brokerproc import BrokerFactory, BrokerProcess
from tests.support.cluster import Cluster, ClusterFactory

from .greeter import SERVICE, GreeterState, greeting, serving_greeter
from .pages import PAGE_TIMEOUT_MS, REJECTED, REJECTED_SETUP, UNSERVED_ROUTE, greeter_page, run_page

pytestmark = pytest.mark.browser

ACCESS_RULES = f"""
[acl.browsers]
principals = ["browser-*"]
call = ["{SERVICE}.*"]

[acl.greeters]
principals = ["greeter-*"]
register = ["{SERVICE}"]
"""


def public_key_file(directory: Path, key: Ed25519PrivateKey) -> Path:
    """``key``'s public half as a PEM file in ``directory``, for ``--jwt-keys``."""
    path = directory / "jwt-public.pem"
    path.write_bytes(public_pem(key))
    return path


@pytest.fixture(scope="module")
def signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
async def secured_broker(broker_factory: BrokerFactory, signing_key: Ed25519PrivateKey) -> BrokerProcess:
    """A node that demands a bearer JWT signed by ``signing_key`` and enforces ACCESS_RULES."""
    return await asyncio.to_thread(
        broker_factory.start,
        "--jwt-keys",
        str(public_key_file(broker_factory.tmpdir(), signing_key)),
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


@pytest.fixture
def secured_cluster(signing_key: Ed25519PrivateKey) -> Iterator[Cluster]:
    """Two nodes demanding JWTs signed by ``signing_key`` (so their admin APIs want an admin token)."""
    factory = ClusterFactory()
    try:
        keys = public_key_file(factory.brokers.tmpdir(), signing_key)
        admin = mint_token(signing_key, sub="operator", roles=["admin"])
        started = factory.start(2, "--jwt-keys", str(keys), "--cluster-key", str(factory.key_file()), admin_token=admin)
        asyncio.run(started.wait_converged())
        yield started
    finally:
        factory.close()


async def paste_token(page: Page, token: str) -> None:
    await page.fill("#token", token)
    await page.click("#auth button")


async def test_the_dashboard_of_a_secured_cluster_is_live_once_an_admin_token_is_pasted(
    page: Page, secured_cluster: Cluster, signing_key: Ed25519PrivateKey
) -> None:
    n1 = secured_cluster["n1"]
    await page.goto(f"{n1.admin_url}/")
    await page.wait_for_selector("#auth", state="visible", timeout=PAGE_TIMEOUT_MS)
    assert "requires 'Authorization: Bearer <token>'" in (await page.text_content("#err") or "")
    assert await page.evaluate("window.dashboard.snapshots") == 0

    await paste_token(page, mint_token(signing_key, sub="browser-ada"))  # valid, but no role admin
    await page.wait_for_function(
        "document.getElementById('err').textContent.includes(\"principal 'browser-ada' lacks the admin role\")",
        timeout=PAGE_TIMEOUT_MS,
    )
    assert await page.is_visible("#auth") and await page.evaluate("window.dashboard.snapshots") == 0

    assert secured_cluster.admin_token is not None
    await paste_token(page, secured_cluster.admin_token)
    for node_id in ("n1", "n2"):
        await page.wait_for_selector(f'#nodes tr[data-node="{node_id}"][data-state="alive"]', timeout=PAGE_TIMEOUT_MS)
    # n2's own links and rate: read by n1 from n2's admin API with the token the page presented
    await page.wait_for_function(
        "() => window.dashboard.last.nodes.some(n => n.node_id === 'n2' && n.links.n1 === 'up' && n.request_rate !== null)",
        timeout=PAGE_TIMEOUT_MS,
    )
    assert await page.is_hidden("#auth")

    await page.fill("#config-edit input[name=key]", "app/dashboard-auth")
    await page.fill("#config-edit input[name=value]", '{"by": "the page"}')
    await page.click("#config-edit button[type=submit]")
    await page.wait_for_selector("#config-result.ok", timeout=PAGE_TIMEOUT_MS)
    await page.wait_for_selector('#config tr[data-key="app/dashboard-auth"]', timeout=PAGE_TIMEOUT_MS)

    assert "token" not in page.url
    other_tab = await page.context.new_page()  # same browser profile, but sessionStorage is per tab
    await other_tab.goto(f"{n1.admin_url}/")
    await other_tab.wait_for_selector("#auth", state="visible", timeout=PAGE_TIMEOUT_MS)


async def test_the_dashboard_asks_again_when_its_token_expires(
    page: Page, broker_factory: BrokerFactory, signing_key: Ed25519PrivateKey
) -> None:
    keys = public_key_file(broker_factory.tmpdir(), signing_key)
    node = await asyncio.to_thread(broker_factory.start, "--jwt-keys", str(keys), "--jwt-leeway-s", "0", node_id="b1")
    await page.goto(f"{node.admin_url}/")
    await page.wait_for_selector("#auth", state="visible", timeout=PAGE_TIMEOUT_MS)
    await paste_token(page, mint_token(signing_key, sub="operator", roles=["admin"], ttl=8))
    await page.wait_for_function("window.dashboard.snapshots > 0", timeout=PAGE_TIMEOUT_MS)
    assert await page.is_hidden("#auth")
    # the node ends the stream at the first sample after the expiry; the page reconnects and is refused
    await page.wait_for_selector("#auth", state="visible", timeout=60_000)
    assert "token expired at" in (await page.text_content("#err") or "")
