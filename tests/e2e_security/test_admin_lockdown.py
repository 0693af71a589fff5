"""The admin API is secure by default: the attacks of issue 11 §1 on real ``rsbroker serve``.

* Take-over: a broker requires JWTs from its RSocket clients; an HTTP client with no
  credentials tries to install its own signing key, mint itself an admin token with it,
  write access rules and remove Raft members. Every step is refused (401 without a token,
  403 with a token that lacks role admin), and an operator's admin token still works.
* Exposure: an admin API bound off loopback without a token rule refuses to start and names
  the setting (tested with an address this host does not have, so nothing is ever exposed).
* Browsers: a request whose ``Host`` is not one of the node's names (DNS rebinding) is
  refused with 421; a write whose ``Origin`` is another site is refused with 403; no CORS
  header is ever granted; the dashboard opened from the node itself still works.
* The dashboard's event stream: its token only in the header (never from the URL), and the
  stream ends once that token expires.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.auth.certs import public_pem
from broker.auth.tokens import mint_token
from tests.e2e_security.pki import AUDIENCE, ISSUER, Pki
from tests.support.brokerproc import BrokerFactory, BrokerProcess, run_rsbroker

#: bound on reading an event stream whose token has 8 s to live (a busy machine, not a speed claim)
STREAM_OUTLIVES_S = 60.0
#: what a browser sends along with a page load from the node itself
BROWSER_HEADERS = {
    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0 Safari/537.36",
    "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "Sec-Fetch-Mode": "navigate",
    "Sec-Fetch-Site": "none",
    "Sec-Fetch-Dest": "document",
}


@pytest.fixture(scope="module")
def secured(module_broker_factory: BrokerFactory, pki: Pki) -> BrokerProcess:
    """JWT required from RSocket clients; nothing said about the admin API (the default)."""
    return module_broker_factory.start(*pki.jwt_args(), admin_token=pki.admin_token())


@pytest.fixture(scope="module")
def open_node(module_broker_factory: BrokerFactory) -> BrokerProcess:
    """Authentication off, everything on loopback: the developer case, anonymous admin."""
    return module_broker_factory.start()


async def call(
    node: BrokerProcess,
    method: str,
    path: str,
    *,
    token: str | None = None,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, dict[str, str]]:
    """``(status, JSON body or text, headers)`` of one admin request."""
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body)
    async with aiohttp.ClientSession() as http:
        async with http.request(method, f"{node.admin_url}{path}", data=data, headers=sent) as response:
            text = await response.text()
            try:
                decoded: Any = json.loads(text)
            except ValueError:
                decoded = text
            return response.status, decoded, dict(response.headers)


async def test_a_client_without_credentials_cannot_take_over_the_cluster(secured: BrokerProcess, pki: Pki) -> None:
    attacker_key = Ed25519PrivateKey.generate()
    status, body, _ = await call(secured, "PUT", "/api/v1/config/keys/mallory", body=public_pem(attacker_key).decode())
    assert status == 401, f"installing a signing key without credentials got {status}: {body}"
    assert "Bearer" in body["error"] and "admin" in body["error"]

    forged = mint_token(attacker_key, sub="mallory", roles=["admin"], kid="mallory", issuer=ISSUER, audience=AUDIENCE)
    status, body, _ = await call(secured, "GET", "/api/v1/connections", token=forged)
    assert status == 401 and "signature does not match any configured key" in body["error"], body

    writes = [
        ("PUT", "/api/v1/config/acl/mallory", {"principals": ["mallory"], "register": ["*"], "call": ["*"]}),
        ("PUT", "/api/v1/config/keys/mallory", {"pem": public_pem(attacker_key).decode()}),
        ("DELETE", "/api/v1/raft/members/n1", None),
        ("DELETE", "/api/v1/config/acl/anything", None),
    ]
    viewer = pki.token("viewer", ("greeter",))
    for method, path, value in writes:
        status, body, _ = await call(secured, method, path, body=value)
        assert status == 401, f"{method} {path} without a token got {status}: {body}"
        status, body, _ = await call(secured, method, path, body=value, token=viewer)
        assert status == 403 and "principal 'viewer' lacks the admin role" in body["error"], (method, path, body)

    for path in ("/api/v1/connections", "/api/v1/config", "/api/v1/config/acl/x", "/api/v1/raft", "/api/v1/topology", "/api/v1/members"):
        status, body, _ = await call(secured, "GET", path)
        assert status == 401, f"GET {path} without a token got {status}: {body}"

    # nothing of the attacker's got in, and an operator's token does what it always did
    status, body, _ = await call(secured, "GET", "/api/v1/config?prefix=keys/", token=secured.admin_token)
    assert status == 200 and body["items"] == {}, body
    status, body, _ = await call(secured, "PUT", "/api/v1/config/app/owner", body="ops", token=secured.admin_token)
    assert status == 200, body
    status, body, _ = await call(secured, "GET", "/health/ready")
    assert status == 200, body  # orchestrators' probes need no token


async def test_an_admin_api_off_loopback_without_a_token_rule_refuses_to_start() -> None:
    # 198.18.0.1 is not on this host: were the refusal missing, binding would fail differently
    done = await asyncio.to_thread(
        run_rsbroker, "serve", "--tcp", "127.0.0.1:0", "--admin", "198.18.0.1:0", timeout=60
    )
    assert done.returncode != 0
    assert "--admin 198.18.0.1:0 is not a loopback address" in done.stderr, done.stderr
    assert "--jwt-keys" in done.stderr, done.stderr


async def test_a_foreign_host_header_is_refused(open_node: BrokerProcess) -> None:
    """DNS rebinding: a page of evil.example whose name now resolves to 127.0.0.1."""
    port = open_node.admin_url.rsplit(":", 1)[1]
    status, body, _ = await call(open_node, "GET", "/api/v1/connections", headers={"Host": f"evil.example:{port}"})
    assert status == 421, f"a rebinding request got {status}: {body}"
    assert "'evil.example' is not one of this node's names" in body["error"] and "--admin-allowed-hosts" in body["error"]
    status, body, _ = await call(open_node, "PUT", "/api/v1/config/app/x", body=1, headers={"Host": "evil.example"})
    assert status == 421, body
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "127.0.0.1", f"[::1]:{port}"):
        status, body, _ = await call(open_node, "GET", "/api/v1/connections", headers={"Host": host})
        assert status == 200, (host, body)


async def test_admin_allowed_hosts_adds_names(broker_factory: BrokerFactory) -> None:
    node = await asyncio.to_thread(broker_factory.start, "--admin-allowed-hosts", "broker.example.test,ops.example.test")
    port = node.admin_url.rsplit(":", 1)[1]
    for host in (f"broker.example.test:{port}", "ops.example.test", f"127.0.0.1:{port}"):
        status, body, _ = await call(node, "GET", "/api/v1/node", headers={"Host": host})
        assert status == 200, (host, body)
    status, body, _ = await call(node, "GET", "/api/v1/node", headers={"Host": "evil.example"})
    assert status == 421, body


async def test_a_cross_origin_write_is_refused_and_no_cors_is_granted(open_node: BrokerProcess) -> None:
    own = open_node.admin_url
    status, body, headers = await call(
        open_node, "PUT", "/api/v1/config/app/csrf", body="x", headers={"Origin": "https://evil.example"}
    )
    assert status == 403, f"a cross-origin write got {status}: {body}"
    assert "origin 'https://evil.example'" in body["error"]
    assert "Access-Control-Allow-Origin" not in headers
    status, body, _ = await call(open_node, "DELETE", "/api/v1/raft/members/n1", headers={"Origin": "null"})
    assert status == 403, body
    status, body, headers = await call(
        open_node,
        "OPTIONS",
        "/api/v1/config/app/csrf",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "PUT"},
    )
    assert status >= 400 and "Access-Control-Allow-Origin" not in headers, (status, headers)
    # the node's own pages, and clients that send no Origin (curl, scripts), may write
    status, body, _ = await call(open_node, "PUT", "/api/v1/config/app/csrf", body="own", headers={"Origin": own})
    assert status == 200, body
    status, body, _ = await call(open_node, "DELETE", "/api/v1/config/app/csrf")
    assert status == 200, body


async def first_snapshot(node: BrokerProcess, path: str = "/api/v1/events", **headers: str) -> tuple[int, Any, dict[str, str]]:
    """``(status, first snapshot or refusal body, headers)`` of the dashboard's event stream."""
    async with aiohttp.ClientSession() as http, http.get(f"{node.admin_url}{path}", headers=headers) as response:
        if response.status != 200:
            return response.status, await response.json(), dict(response.headers)
        async for line in response.content:
            if line.startswith(b"data: "):
                return response.status, json.loads(line[6:]), dict(response.headers)
    raise AssertionError("the event stream ended before its first snapshot")


async def test_the_dashboard_opened_from_the_node_itself_works(open_node: BrokerProcess) -> None:
    status, page, headers = await call(open_node, "GET", "/", headers=BROWSER_HEADERS)
    assert status == 200 and "/api/v1/events" in page and "/api/v1/config" in page
    assert "Access-Control-Allow-Origin" not in headers
    fetch = {**BROWSER_HEADERS, "Accept": "*/*", "Sec-Fetch-Mode": "cors", "Sec-Fetch-Site": "same-origin", "Referer": f"{open_node.admin_url}/"}
    for path in ("/api/v1/config?stale=true", "/api/v1/stats", "/api/v1/topology"):
        status, body, headers = await call(open_node, "GET", path, headers=fetch)
        assert status == 200 and "Access-Control-Allow-Origin" not in headers, (path, body)
    status, snapshot, headers = await first_snapshot(open_node, **{**fetch, "Accept": "text/event-stream"})
    assert status == 200 and snapshot["self"] == open_node.node_id, snapshot
    assert headers["Content-Type"] == "text/event-stream" and "Access-Control-Allow-Origin" not in headers


async def test_the_dashboard_feed_takes_the_token_in_its_header_only(secured: BrokerProcess) -> None:
    token = str(secured.admin_token)
    for path in ("/api/v1/events", "/api/v1/stats", f"/api/v1/events?token={token}", f"/api/v1/events?access_token={token}"):
        status, body, _ = await call(secured, "GET", path)
        assert status == 401 and "requires 'Authorization: Bearer <token>'" in body["error"], (path.split("?")[0], status, body)
    status, snapshot, _ = await first_snapshot(secured, Authorization=f"Bearer {token}")
    assert status == 200 and snapshot["self"] == secured.node_id, snapshot


async def test_an_event_stream_ends_when_its_token_expires(secured: BrokerProcess, pki: Pki) -> None:
    """A stream is one long request: it must not outlive the credential it was opened with
    (``secured`` has no clock-skew leeway). The page then reconnects and is asked again."""
    token = pki.token("operator", ("admin",), ttl=8)
    snapshots = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=STREAM_OUTLIVES_S)) as http:
        async with http.get(f"{secured.admin_url}/api/v1/events", headers={"Authorization": f"Bearer {token}"}) as response:
            assert response.status == 200, await response.text()
            try:
                async for line in response.content:  # until the node ends the stream
                    snapshots += line.startswith(b"data: ")
            except asyncio.TimeoutError:
                pytest.fail(f"the event stream went on {STREAM_OUTLIVES_S:.0f} s after opening with an 8 s token ({snapshots} snapshots)")
    assert snapshots >= 1
    status, body, _ = await call(secured, "GET", "/api/v1/events", token=token)
    assert status == 401 and "expired" in body["error"], body


async def test_rsbroker_status_needs_and_takes_an_admin_token(secured: BrokerProcess) -> None:
    refused = await asyncio.to_thread(run_rsbroker, "status", "--admin", str(secured.admin))
    assert refused.returncode == 1 and "HTTP 401" in refused.stderr and "--token" in refused.stderr, refused.stderr
    done = await asyncio.to_thread(run_rsbroker, "status", "--admin", str(secured.admin), "--token", str(secured.admin_token))
    assert done.returncode == 0 and secured.node_id in done.stdout, done.stderr
