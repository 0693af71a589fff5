"""``--jwt-max-ttl-s`` (issue 11 §6): a token valid for longer than the limit is refused.

A token's lifetime is ``exp`` minus the earlier of ``iat`` and now (so a token that claims
to be issued in the future cannot stretch it); the clock-skew leeway is tolerated on top.
Refused at SETUP with a message naming the setting, and at the admin API alike.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import jwt
import pytest

from broker.auth.tokens import load_private_key
from broker.frames import ErrorCode, FrameType
from tests.e2e_security.clients import raw_with_token
from tests.e2e_security.pki import AUDIENCE, ISSUER, Pki
from tests.support.brokerproc import BrokerFactory, BrokerProcess

DAY = 86_400


@pytest.fixture(scope="module")
def node(module_broker_factory: BrokerFactory, pki: Pki) -> BrokerProcess:
    return module_broker_factory.start(*pki.jwt_args())


def signed(pki: Pki, **claims: Any) -> str:
    """A token with exactly ``claims`` (plus issuer and audience), signed by a trusted key."""
    body = {"sub": "long-lived", "iss": ISSUER, "aud": AUDIENCE, **claims}
    return jwt.encode(body, load_private_key(pki.private_key("ed25519")), algorithm="EdDSA")


async def admitted(node: BrokerProcess, token: str) -> bool:
    """True if the SETUP was accepted (a request then gets its own ERROR), False if it was refused."""
    async with await raw_with_token(node, token) as raw:
        sid = await raw.request(FrameType.REQUEST_RESPONSE, "ttl.nobody.ping")
        frame = await raw.expect(FrameType.ERROR)
        if frame.stream_id == 0:
            assert frame.error[0] == ErrorCode.REJECTED_SETUP, frame
            return False
        assert frame.stream_id == sid and frame.error[0] == ErrorCode.REJECTED, frame
        return True


async def test_a_token_valid_for_a_month_is_refused_at_setup(node: BrokerProcess, pki: Pki) -> None:
    token = pki.token("month", ("greeter",), ttl=30 * DAY)
    async with await raw_with_token(node, token) as raw:
        await raw.expect_error(
            ErrorCode.REJECTED_SETUP,
            contains=f"token lifetime of {30 * DAY} s exceeds the limit of {DAY} s (--jwt-max-ttl-s)",
        )
    assert await admitted(node, pki.token("day", ("greeter",), ttl=DAY - 60))


async def test_lifetime_counts_from_now_without_iat_or_with_a_future_iat(node: BrokerProcess, pki: Pki) -> None:
    now = int(time.time())
    assert not await admitted(node, signed(pki, exp=now + 2 * DAY))
    assert not await admitted(node, signed(pki, iat=now + 3650 * DAY, exp=now + 3650 * DAY + 3600))
    assert await admitted(node, signed(pki, exp=now + 3600))


async def test_the_limit_is_a_setting_and_holds_at_the_admin_api(broker_factory: BrokerFactory, pki: Pki) -> None:
    node = await asyncio.to_thread(broker_factory.start, *pki.jwt_args(), "--jwt-max-ttl-s", "600")
    assert not await admitted(node, pki.token("hour", ("greeter",), ttl=3600))
    assert await admitted(node, pki.token("minutes", ("greeter",), ttl=300))
    async with aiohttp.ClientSession() as http:
        long_admin = {"Authorization": f"Bearer {pki.token('ops', ('admin',), ttl=3600)}"}
        async with http.get(f"{node.admin_url}/api/v1/node", headers=long_admin) as response:
            assert response.status == 401
            assert "exceeds the limit of 600 s (--jwt-max-ttl-s)" in await response.text()
