"""Access rules from the ``--config`` TOML file, enforced by a real broker on JWT principals.

Registration: allowed for the rule's principals, refused at SETUP with
ERROR(REJECTED_SETUP) "access denied …" otherwise. Calls: allowed routes reach the
provider; a denied one gets ERROR(REJECTED) "access denied …" and the provider never
sees it. Role ``admin`` needs no rule. Default deny: a principal no rule names may do nothing.
"""

from __future__ import annotations

import pytest

from broker import metadata as md
from broker.frames import ErrorCode, FrameType, metadata_push_frame
from tests.e2e_security.clients import Provider, echo, raw_with_token, requester
from tests.e2e_security.pki import Pki
from tests.support.admin import service_instances, wait_for
from tests.support.brokerproc import BrokerFactory, BrokerProcess

ACL = """
[acl.greeter-providers]
principals = ["greeter-svc-*"]
register = ["acl.greeter"]

[acl.greeter-callers]
roles = ["greeter"]
call = ["acl.greeter.echo"]
"""


@pytest.fixture(scope="module")
def node(module_broker_factory: BrokerFactory, pki: Pki) -> BrokerProcess:
    return module_broker_factory.start(*pki.jwt_args(), config=ACL, admin_token=pki.admin_token())


@pytest.mark.parametrize(
    ("principal", "service"),
    [("stranger", "acl.greeter"), ("greeter-svc-1", "acl.billing")],
    ids=["principal-without-rule", "service-outside-rule"],
)
async def test_registration_outside_the_rules_is_refused_at_setup(
    node: BrokerProcess, pki: Pki, transport: str, principal: str, service: str
) -> None:
    token = pki.token(principal, ("greeter",))
    async with await raw_with_token(node, token, transport, (service,), f"{principal}-1") as raw:
        await raw.expect_error(
            ErrorCode.REJECTED_SETUP,
            contains=f"access denied: principal '{principal}' may not register service '{service}'",
        )
        await raw.wait_closed()
    assert f"{principal}-1" not in await service_instances(node, service)


async def test_allowed_registration_and_call_and_denied_call(node: BrokerProcess, pki: Pki, transport: str) -> None:
    async with Provider(node, "acl.greeter", transport, token=pki.token("greeter-svc-1")) as provider:
        async with requester(node, transport, token=pki.token("carol", ("greeter",))) as client:
            assert await echo(client, "acl.greeter.echo", b"allowed") == b"allowed"
        for principal, roles, route in [
            ("carol", ("greeter",), "acl.greeter.hold"),  # her rule names .echo only
            ("dave", (), "acl.greeter.echo"),  # no rule names him: default deny
        ]:
            async with await raw_with_token(node, pki.token(principal, roles), transport) as raw:
                sid = await raw.request(FrameType.REQUEST_RESPONSE, route, b"denied")
                await raw.expect_error(
                    ErrorCode.REJECTED,
                    stream_id=sid,
                    contains=f"access denied: principal '{principal}' may not call '{route}'",
                )
                # the connection itself stays usable for what the rules allow
                if roles:
                    sid = await raw.request(FrameType.REQUEST_RESPONSE, "acl.greeter.echo", b"ok")
                    assert (await raw.expect(FrameType.PAYLOAD, stream_id=sid)).data == b"ok"
    assert provider.received == ["acl.greeter.echo", "acl.greeter.echo"]


async def test_role_admin_may_register_and_call_anything(node: BrokerProcess, pki: Pki) -> None:
    admin = pki.token("operator", ("admin",))
    async with Provider(node, "acl.billing", token=admin) as billing:
        async with Provider(node, "acl.greeter", token=pki.token("greeter-svc-2")) as greeter:
            async with requester(node, token=admin) as client:
                assert await echo(client, "acl.billing.echo", b"b") == b"b"
                assert await echo(client, "acl.greeter.echo", b"g") == b"g"
    assert billing.received == ["acl.billing.echo"]
    assert greeter.received == ["acl.greeter.echo"]


async def test_registration_by_metadata_push_obeys_the_rules(node: BrokerProcess, pki: Pki, transport: str) -> None:
    """Re-registering after SETUP (METADATA_PUSH) is checked like the SETUP's registration."""
    allowed = md.Registration(services=("acl.greeter",), instance=f"pushed-{transport}")
    denied = md.Registration(services=("acl.billing",), instance=f"pushed-{transport}")
    async with await raw_with_token(node, pki.token("greeter-svc-3"), transport) as raw:
        await raw.send(metadata_push_frame(md.composite_entry(md.REGISTER_MIME, allowed.to_json())))
        await wait_for(
            lambda: _provides(node, "acl.greeter", allowed.instance), message="the pushed registration in force"
        )
        await raw.send(metadata_push_frame(md.composite_entry(md.REGISTER_MIME, denied.to_json())))
        message = await raw.expect_error(ErrorCode.CONNECTION_ERROR)
        assert "access denied: principal 'greeter-svc-3' may not register service 'acl.billing'" in message
        await raw.wait_closed()
    assert denied.instance not in await service_instances(node, "acl.billing")


async def _provides(node: BrokerProcess, service: str, instance: str) -> bool:
    return instance in await service_instances(node, service)
