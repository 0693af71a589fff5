"""Access rules and revocations from the config store, applied to a running broker.

A single node runs the Raft config store too, so the admin API's ``PUT /api/v1/config/<key>``
reaches it. Store rules are laid over the ``--config`` file's rules (a store rule of the same
name replaces the file's); a revoked token id closes the live connection that carries it and
refuses it at the next SETUP.
"""

from __future__ import annotations

from typing import Any

import jwt
import pytest

from broker.frames import ErrorCode, FrameType
from tests.e2e_security.clients import Provider, raw_with_token
from tests.e2e_security.pki import Pki
from tests.support.admin import send_json, wait_for
from tests.support.brokerproc import BrokerFactory, BrokerProcess
from tests.support.rawclient import RawClient

SERVICE = "live.svc"
ACL = f"""
[acl.file-callers]
principals = ["file-caller"]
call = ["{SERVICE}.*"]
"""


@pytest.fixture(scope="module")
def node(module_broker_factory: BrokerFactory, pki: Pki) -> BrokerProcess:
    return module_broker_factory.start(*pki.jwt_args(), config=ACL, admin_token=pki.admin_token())


async def config(node: BrokerProcess, method: str, key: str, value: Any = None) -> None:
    status, body = await send_json(node, method, f"/api/v1/config/{key}", value)
    assert status == 200, body


async def allowed(raw: RawClient) -> bool:
    """Whether a request on ``raw`` reaches the provider (True) or is denied by the rules (False)."""
    sid = await raw.request(FrameType.REQUEST_RESPONSE, f"{SERVICE}.echo", b"?")
    frame = await raw.recv()
    assert frame.stream_id == sid, frame
    if frame.type == FrameType.ERROR:
        assert "access denied" in frame.error[1], frame
        return False
    return True


async def test_store_rules_are_laid_over_the_file_rules(node: BrokerProcess, pki: Pki) -> None:
    async with Provider(node, SERVICE, token=pki.token("live-provider", ("admin",))):
        file_caller = await raw_with_token(node, pki.token("file-caller"))
        store_caller = await raw_with_token(node, pki.token("store-caller"))
        try:
            assert await allowed(file_caller)
            assert not await allowed(store_caller)
            await config(node, "PUT", "acl/store-callers", {"principals": ["store-caller"], "call": [f"{SERVICE}.*"]})
            await wait_for(lambda: allowed(store_caller), message="the store rule in force")
            assert await allowed(file_caller)  # the file's rule still holds beside it
            await config(node, "PUT", "acl/file-callers", {"principals": ["file-caller"], "call": []})
            await wait_for(lambda: _denied(file_caller), message="the file rule replaced by the store's")
            await config(node, "DELETE", "acl/file-callers")
            await wait_for(lambda: allowed(file_caller), message="the file rule back after the delete")
        finally:
            await config(node, "DELETE", "acl/store-callers")
            await file_caller.close()
            await store_caller.close()


async def _denied(raw: RawClient) -> bool:
    return not await allowed(raw)


async def test_revoked_token_closes_its_connection_and_is_refused_after(node: BrokerProcess, pki: Pki) -> None:
    token = pki.token("revocable", ("admin",))
    claims = jwt.decode(token, options={"verify_signature": False})
    jti = claims["jti"]
    bystander = await raw_with_token(node, pki.token("bystander", ("admin",)))
    async with await raw_with_token(node, token) as raw:
        sid = await raw.request(FrameType.REQUEST_RESPONSE, "live.nobody.ping")
        await raw.expect_error(ErrorCode.REJECTED, stream_id=sid, contains="no provider")  # admitted
        await config(node, "PUT", f"revoked/{jti}", {"expires_at": claims["exp"]})
        await raw.expect_error(ErrorCode.CONNECTION_CLOSE, contains="token of 'revocable' has been revoked")
        await raw.wait_closed()
    async with await raw_with_token(node, token) as again:
        await again.expect_error(ErrorCode.REJECTED_SETUP, contains=f"token id '{jti}' has been revoked")
    try:  # other connections are untouched
        sid = await bystander.request(FrameType.REQUEST_RESPONSE, "live.nobody.ping")
        await bystander.expect_error(ErrorCode.REJECTED, stream_id=sid, contains="no provider")
    finally:
        await bystander.close()
        await config(node, "DELETE", f"revoked/{jti}")


async def test_a_route_called_again_and_again_is_denied_after_its_rule_goes(node: BrokerProcess, pki: Pki) -> None:
    """The relay remembers a connection's admitted routes (``Session.open_cache``) so that a
    repeat request skips resolving and the access check; a rule taken away at run time must
    still deny the very connection that has called the route many times, on its next requests."""
    rule = {"principals": ["repeat-caller"], "call": [f"{SERVICE}.*"]}
    async with Provider(node, SERVICE, token=pki.token("repeat-provider", ("admin",))):
        caller = await raw_with_token(node, pki.token("repeat-caller"))
        try:
            await config(node, "PUT", "acl/repeat-callers", rule)
            await wait_for(lambda: allowed(caller), message="the store rule in force")
            for _ in range(20):  # the same metadata bytes each time: the route is remembered
                assert await allowed(caller)
            await config(node, "PUT", "acl/repeat-callers", {**rule, "call": []})
            await wait_for(lambda: _denied(caller), message="the remembered route denied after the rule changed")
            assert not await allowed(caller)
        finally:
            await config(node, "DELETE", "acl/repeat-callers")
            await caller.close()
