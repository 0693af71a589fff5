"""Hostile input on the open TCP and WebSocket ports of ONE shared broker with auth on.

Hypothesis drives random bytes and mutated valid frame streams (see ``hostile.py``) at the
broker, one connection per example. After each example:

* the node is alive: ``/health/live`` answers and an authorised requester completes a real
  request through the provider;
* nothing leaked: once the hostile connection closed, the admin API lists exactly the
  provider's and the checker's connections, and no stream is left on the provider's;
* nothing unauthenticated or unauthorised got through: unless the example carried the
  ``trusted`` token intact, the provider received no request from it.

The broker, the provider and the checker live across examples on one event loop
(``asyncio.Runner``), so an example costs a connection, not a process.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from rsocket.rsocket_client import RSocketClient

from broker.frames import FrameType, request_frame, with_length_prefix
from broker.metadata import route_metadata
from tests.e2e_security.clients import Provider, echo, requester
from tests.e2e_security.hostile import (
    TARGET,
    Credentials,
    HostileSession,
    mutated_frame_sessions,
    random_byte_sessions,
    setup_frame,
)
from tests.e2e_security.pki import Pki
from tests.support.admin import connections, get_json, wait_for
from tests.support.brokerproc import BrokerFactory, BrokerProcess
from tests.support.peers import address_of
from tests.support.rawclient import ConnectionClosed, RawClient

ACL = f"""
[acl.target-provider]
principals = ["target-provider"]
register = ["{TARGET}"]

[acl.trusted-callers]
principals = ["trusted", "checker"]
call = ["{TARGET}.*"]
"""

#: how long a hostile connection is read after its last chunk, so the broker acts on it
#: before the client closes; a bound on waiting, not an assertion
LINGER_S = 0.05
EXAMPLES = 30

HYPOTHESIS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],  # each example is a real connection to a real broker
)


@dataclass
class Harness:
    """The shared broker, its provider and checker, and the loop they run on."""

    runner: asyncio.Runner
    node: BrokerProcess
    provider: Provider
    checker: RSocketClient
    credentials: Credentials
    baseline: frozenset[int]


def _credentials(pki: Pki) -> Credentials:
    return Credentials(
        {
            "none": None,
            "garbage": "garbage",
            "expired": pki.token("trusted", (), now=time.time() - 7200),
            "stranger": pki.token("trusted", (), kind="stranger"),
            "alg-none": "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ0cnVzdGVkIn0.",
            "mallory": pki.token("mallory", ("greeter",)),
            "trusted": pki.token("trusted"),
        }
    )


@pytest.fixture(scope="module")
def harness(module_broker_factory: BrokerFactory, pki: Pki) -> Iterator[Harness]:
    node = module_broker_factory.start(*pki.jwt_args(), config=ACL, admin_token=pki.admin_token())
    with asyncio.Runner() as runner:
        stack = contextlib.AsyncExitStack()
        try:
            provider = runner.run(stack.enter_async_context(Provider(node, TARGET, token=pki.token("target-provider"))))
            checker = runner.run(stack.enter_async_context(requester(node, token=pki.token("checker"))))
            baseline = frozenset(c["id"] for c in runner.run(connections(node)))
            assert len(baseline) == 2, baseline
            yield Harness(runner, node, provider, checker, _credentials(pki), baseline)
        finally:
            runner.run(stack.aclose())


async def _send(client: RawClient, session: HostileSession) -> None:
    """Send every chunk, then read until the broker closes or goes quiet; the broker may cut us off anytime."""
    with contextlib.suppress(ConnectionClosed, ConnectionError, aiohttp.ClientError, TimeoutError):
        for chunk in session.chunks:
            await client.send_raw(chunk)
        while True:
            await client.recv(timeout=LINGER_S)


async def _settled(h: Harness) -> bool:
    """Only the provider and the checker are connected, and no stream is open on the provider."""
    current = await connections(h.node)
    if frozenset(c["id"] for c in current) != h.baseline:
        return False
    return all(c["streams"] == 0 for c in current if c["instance"] == h.provider.instance)


async def _attack(h: Harness, session: HostileSession, transport: str) -> None:
    before = h.provider.requests
    client = await RawClient.connect(address_of(h.node, transport), transport)
    try:
        await _send(client, session)
    finally:
        await client.close()
    await wait_for(lambda: _settled(h), message="the hostile connection and its streams gone")
    status, body = await get_json(h.node, "/health/live")
    assert status == 200, body
    assert await echo(h.checker, f"{TARGET}.echo", b"check") == b"check"
    # The checker's request came after every hostile one on the provider's connection.
    hostile = h.provider.requests - before - 1
    if not session.carries(h.credentials.trusted):
        assert hostile == 0, f"{hostile} request(s) from an unauthorised connection reached the provider"


def assert_no_credential_logged(h: Harness) -> None:
    """The broker's log (the tail the factory keeps) names refusals by reason, never with a token's signature."""
    output = h.node.output()
    for token in h.credentials.tokens.values():
        signature = (token or "").rpartition(".")[2]
        assert len(signature) < 8 or signature not in output


@pytest.mark.parametrize("transport", ["tcp", "ws"])
def test_streams_held_by_the_provider_are_released_when_the_requester_goes(harness: Harness, transport: str) -> None:
    """The leak check is not vacuous: an admitted hostile connection does leave streams open."""
    frames = [
        setup_frame(harness.credentials.trusted),
        *(request_frame(FrameType.REQUEST_RESPONSE, sid, route_metadata(f"{TARGET}.hold"), b"x") for sid in (1, 3)),
        request_frame(FrameType.REQUEST_STREAM, 5, route_metadata(f"{TARGET}.hold"), b"x"),
    ]
    chunks = tuple(frames) if transport == "ws" else (b"".join(with_length_prefix(f) for f in frames),)
    before = len(harness.provider.received)

    async def provider_holds_them() -> bool:
        return len(harness.provider.received) - before >= 2

    async def scenario() -> None:
        client = await RawClient.connect(address_of(harness.node, transport), transport)
        try:
            for chunk in chunks:
                await client.send_raw(chunk)
            await wait_for(provider_holds_them, message="the held requests at the provider")
            provider = [c for c in await connections(harness.node) if c["instance"] == harness.provider.instance]
            assert provider[0]["streams"] >= 2
        finally:
            await client.close()
        await wait_for(lambda: _settled(harness), message="the held streams released")

    harness.runner.run(scenario())
    assert harness.provider.received[before : before + 2] == [f"{TARGET}.hold"] * 2


@pytest.mark.parametrize("transport", ["tcp", "ws"])
def test_random_bytes(harness: Harness, transport: str) -> None:
    @HYPOTHESIS
    @given(random_byte_sessions(harness.credentials, websocket=transport == "ws"))
    def attack(session: HostileSession) -> None:
        harness.runner.run(_attack(harness, session, transport))

    attack()
    assert harness.node.running
    assert_no_credential_logged(harness)


@pytest.mark.parametrize("transport", ["tcp", "ws"])
def test_mutated_frame_streams(harness: Harness, transport: str) -> None:
    @HYPOTHESIS
    @given(mutated_frame_sessions(harness.credentials, websocket=transport == "ws"))
    def attack(session: HostileSession) -> None:
        harness.runner.run(_attack(harness, session, transport))

    attack()
    assert harness.node.running
    assert_no_credential_logged(harness)
