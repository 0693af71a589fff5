"""Attacks on ``/rpc/{route}``: the gateway lets in no one an RSocket SETUP would refuse.

A node with JWT on and access rules: ``caller-*`` may call ``gw.*``. Every refused request
is checked to have never reached the provider, not just to have got an error status.
"""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.auth.certs import public_pem
from broker.auth.tokens import mint_token
from broker.client import connect
from tests.gateway.peers import SERVICE, Seen, gateway_router, http, wait_served
from tests.support.brokerproc import BrokerFactory, BrokerProcess

RULES = f"""
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
    admin = mint_token(signing_key, sub="operator", roles=["admin"], ttl=300)
    return module_broker_factory.start("--jwt-keys", str(pem), "--jwt-max-ttl-s", "600", config=RULES, admin_token=admin)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("case", ["no token", "not bearer", "foreign key", "expired", "ttl over max"])
async def test_requests_without_a_valid_token_get_401_and_never_reach_the_provider(
    secured: BrokerProcess, signing_key: Ed25519PrivateKey, case: str
) -> None:
    headers = {
        "no token": {},
        "not bearer": {"Authorization": "Basic YWRtaW46YWRtaW4="},
        "foreign key": _bearer(mint_token(Ed25519PrivateKey.generate(), sub="caller-1")),
        "expired": _bearer(mint_token(signing_key, sub="caller-1", ttl=60, now=1_000_000)),
        "ttl over max": _bearer(mint_token(signing_key, sub="caller-1", ttl=3600)),  # --jwt-max-ttl-s 600
    }[case]
    seen = Seen()
    async with connect(str(secured.tcp), services=[SERVICE], router=gateway_router(seen), token=mint_token(signing_key, sub="provider-1", ttl=300)):
        await wait_served(secured)
        for method, extra in (("POST", {}), ("POST", {"Prefer": "respond-async"}), ("GET", {"Accept": "application/x-ndjson"})):
            status, response_headers, body = await http(method, f"http://{secured.ws}/rpc/{SERVICE}.echo", data=b"x", headers={**headers, **extra})
            assert status == 401, (case, method, body)
            assert response_headers["WWW-Authenticate"].startswith("Bearer")
            assert json.loads(body)["message"].startswith("authentication failed")
        assert seen.calls == [] and seen.notes.empty()


async def test_a_principal_the_rules_deny_gets_403_and_one_they_allow_gets_through(
    secured: BrokerProcess, signing_key: Ed25519PrivateKey
) -> None:
    seen = Seen()
    async with connect(str(secured.tcp), services=[SERVICE], router=gateway_router(seen), token=mint_token(signing_key, sub="provider-1", ttl=300)):
        await wait_served(secured)
        url = f"http://{secured.ws}/rpc/{SERVICE}.echo"
        status, _, body = await http("POST", url, data=b"x", headers=_bearer(mint_token(signing_key, sub="stranger", ttl=300)))
        assert status == 403
        assert json.loads(body) == {"error": "REJECTED", "message": "access denied: principal 'stranger' may not call 'gw.echo'"}
        status, _, body = await http("POST", url, data=b"x", headers={**_bearer(mint_token(signing_key, sub="stranger", ttl=300)), "Prefer": "respond-async"})
        assert status == 403
        assert seen.calls == [] and seen.notes.empty()
        status, _, body = await http("POST", url, data=b"ok", headers=_bearer(mint_token(signing_key, sub="caller-1", ttl=300)))
        assert (status, body) == (200, b"p1 echo ok")


async def test_a_foreign_origin_is_refused_before_the_relay(secured: BrokerProcess, signing_key: Ed25519PrivateKey) -> None:
    """A page of another site cannot use a logged-in user's token... or anything else."""
    seen = Seen()
    async with connect(str(secured.tcp), services=[SERVICE], router=gateway_router(seen), token=mint_token(signing_key, sub="provider-1", ttl=300)):
        await wait_served(secured)
        headers = {**_bearer(mint_token(signing_key, sub="caller-1", ttl=300)), "Origin": "https://evil.example"}
        status, _, body = await http("POST", f"http://{secured.ws}/rpc/{SERVICE}.echo", data=b"x", headers=headers)
        assert status == 403
        assert "--ws-allowed-origins" in json.loads(body)["message"]
        assert seen.calls == []



async def test_a_body_over_the_frame_limit_is_refused_and_the_node_serves_on(broker_factory: BrokerFactory) -> None:
    node = broker_factory.start("--max-frame-size", "65536")
    seen = Seen()
    async with connect(str(node.tcp), services=[SERVICE], router=gateway_router(seen)):
        await wait_served(node)
        url = f"http://{node.ws}/rpc/{SERVICE}.echo"
        status, _, body = await http("POST", url, data=b"x" * 200_000)
        assert status == 413 and "max_frame_size" in json.loads(body)["message"]
        status, _, body = await http("POST", url, data=b"small")
        assert (status, body) == (200, b"p1 echo small")
        assert seen.calls == [("echo", b"small")]
