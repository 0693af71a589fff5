"""Attacks on the verified-token cache (``--jwt-cache-size``) of a real ``rsbroker serve``.

A token whose signature was verified is remembered so the next SETUP with the same bytes is
not verified again. Each test first shows the token is served from the cache (a second SETUP
adds no miss to ``rsbroker_jwt_cache_total``), then attacks what the cache must not weaken:
revocation, expiry, a tampered signature, and keys that rotate (file and config store).
"""

from __future__ import annotations

import asyncio
import time

import jwt
import pytest
from prometheus_client.parser import text_string_to_metric_families

from broker.auth.tokens import load_private_key, mint_token
from broker.frames import ErrorCode, FrameType
from tests.e2e_security.clients import raw_with_token
from tests.e2e_security.pki import AUDIENCE, ISSUER, Pki
from tests.e2e_security.test_key_rotation import admitted, rotate
from tests.support.admin import get_text, send_json, wait_for
from tests.support.brokerproc import BrokerFactory, BrokerProcess


@pytest.fixture(scope="module")
def node(module_broker_factory: BrokerFactory, pki: Pki) -> BrokerProcess:
    return module_broker_factory.start(*pki.jwt_args(), admin_token=pki.admin_token())


async def cache_misses(node: BrokerProcess) -> float:
    """``rsbroker_jwt_cache_total{result="miss"}`` of ``node`` (the admin token it sends is a hit after the first scrape)."""
    status, text = await get_text(node, "/metrics")
    assert status == 200, text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "rsbroker_jwt_cache_total" and sample.labels == {"result": "miss"}:
                return sample.value
    raise AssertionError("no rsbroker_jwt_cache_total{result=\"miss\"} in /metrics")


async def assert_cached(node: BrokerProcess, token: str) -> None:
    """Admit ``token`` once (a miss that fills the cache), then again without a miss: a cache hit."""
    assert await admitted(node, token)
    before = await cache_misses(node)
    assert await admitted(node, token)
    assert await cache_misses(node) == before, "the second SETUP with the same token was verified again"


def _claims(token: str) -> dict[str, object]:
    return jwt.decode(token, options={"verify_signature": False})


async def _config(node: BrokerProcess, method: str, key: str, value: object = None) -> None:
    status, body = await send_json(node, method, f"/api/v1/config/{key}", value)
    assert status == 200, body


async def test_a_cached_token_revoked_is_refused_at_the_next_setup(node: BrokerProcess, pki: Pki) -> None:
    token = pki.token("cached-revocable", ("admin",))
    claims = _claims(token)
    await assert_cached(node, token)
    async with await raw_with_token(node, token) as live:
        sid = await live.request(FrameType.REQUEST_RESPONSE, "cache.nobody.ping")
        await live.expect_error(ErrorCode.REJECTED, stream_id=sid, contains="no provider")  # admitted
        await _config(node, "PUT", f"revoked/{claims['jti']}", {"expires_at": claims["exp"]})
        try:
            await live.expect_error(ErrorCode.CONNECTION_CLOSE, contains="token of 'cached-revocable' has been revoked")
            await live.wait_closed()
            async with await raw_with_token(node, token) as again:
                await again.expect_error(ErrorCode.REJECTED_SETUP, contains=f"token id '{claims['jti']}' has been revoked")
        finally:
            await _config(node, "DELETE", f"revoked/{claims['jti']}")


async def test_a_cached_token_is_refused_once_it_expires(node: BrokerProcess, pki: Pki) -> None:
    token = pki.token("cached-short-lived", ("admin",), ttl=8)  # the node runs with --jwt-leeway-s 0
    exp = float(_claims(token)["exp"])  # type: ignore[arg-type]
    await assert_cached(node, token)
    await wait_for(lambda: time.time() >= exp + 0.2, timeout=30, message="the token's exp to pass")
    async with await raw_with_token(node, token) as raw:
        await raw.expect_error(ErrorCode.REJECTED_SETUP, contains="token expired at ")


def _one_byte_changed(token: str) -> str:
    """``token`` with one character in the middle of its signature replaced (its bytes differ there)."""
    head, _, signature = token.rpartition(".")
    middle = len(signature) // 2
    swapped = "A" if signature[middle] != "A" else "B"
    return f"{head}.{signature[:middle]}{swapped}{signature[middle + 1:]}"


async def test_a_tampered_copy_of_a_cached_token_is_refused(node: BrokerProcess, pki: Pki) -> None:
    token = pki.token("cached-original", ("admin",))
    await assert_cached(node, token)
    assert not await admitted(node, _one_byte_changed(token))
    async with await raw_with_token(node, _one_byte_changed(token)) as raw:
        await raw.expect_error(ErrorCode.REJECTED_SETUP, contains="signature does not match any configured key")
    assert await admitted(node, token)  # the original still passes


async def test_after_the_key_file_rotates_a_cached_token_of_the_old_key_is_refused(
    broker_factory: BrokerFactory, pki: Pki
) -> None:
    keys_file = broker_factory.tmpdir() / "jwt-keys.pem"
    rotate(keys_file, pki, "ed25519")
    rotating = await asyncio.to_thread(
        broker_factory.start,
        "--jwt-keys", str(keys_file), "--jwt-issuer", ISSUER, "--jwt-audience", AUDIENCE,
        admin_token=pki.admin_token(),
    )  # fmt: skip
    old = pki.token("old-key-device", ("admin",), kind="ed25519")
    new = pki.token("new-key-device", ("admin",), kind="ec")
    await assert_cached(rotating, old)
    rotate(keys_file, pki, "ec")
    await wait_for(lambda: admitted(rotating, new), message="the new key in force")
    assert not await admitted(rotating, old)


async def test_after_a_stored_key_is_deleted_a_cached_token_of_it_is_refused(node: BrokerProcess, pki: Pki) -> None:
    kid = "cache-stranger"
    await _config(node, "PUT", f"keys/{kid}", {"pem": (pki.root / "keys" / "stranger-public.pem").read_text()})
    token = mint_token(
        load_private_key(pki.private_key("stranger")),
        sub="stored-key-device", roles=("admin",), issuer=ISSUER, audience=AUDIENCE, kid=kid,
    )  # fmt: skip
    try:
        await wait_for(lambda: admitted(node, token), message="the stored key in force")
        await assert_cached(node, token)
    finally:
        await _config(node, "DELETE", f"keys/{kid}")
    await wait_for(lambda: _refused(node, token), message="the deleted key's token refused")


async def _refused(node: BrokerProcess, token: str) -> bool:
    return not await admitted(node, token)
