"""Two providers of one service share the load per the service's policy.

Policies come from a ``--config`` TOML file: per service (``[services."svc"]``) and the
node's ``default_policy``. Every policy is deterministic, so the counts are exact.
"""

from __future__ import annotations

import collections

import pytest

from broker.frames import FrameType
from tests.support.admin import services, wait_for
from tests.support.brokerproc import BrokerFactory, BrokerProcess
from tests.support.peers import Responder, raw_provider, raw_requester
from tests.support.rawclient import RawClient

CONFIG = """
default_policy = "weighted"

[services."lb.rr"]
policy = "round_robin"

[services."lb.lo"]
policy = "least_outstanding"

[services."lb.w"]
policy = "weighted"
weights = { a = 3, b = 1 }
"""


@pytest.fixture(scope="module")
def node(module_broker_factory: BrokerFactory) -> BrokerProcess:
    return module_broker_factory.start(config=CONFIG)


async def _providers(node: BrokerProcess, service: str, weights: dict[str, int]) -> list[RawClient]:
    return [await raw_provider(node, [service], name, weight=w) for name, w in weights.items()]


async def _call(requester: RawClient, route: str, n: int) -> collections.Counter[bytes]:
    """``n`` requests one after the other; counts of which provider answered."""
    counts: collections.Counter[bytes] = collections.Counter()
    for _ in range(n):
        sid = await requester.request(FrameType.REQUEST_RESPONSE, route)
        counts[(await requester.expect(FrameType.PAYLOAD, stream_id=sid)).data] += 1
    return counts


async def _shared(node: BrokerProcess, service: str, weights: dict[str, int], n: int) -> collections.Counter[bytes]:
    providers = await _providers(node, service, weights)
    requester = await raw_requester(node)
    try:
        async with Responder(providers[0], lambda f: b"a"), Responder(providers[1], lambda f: b"b"):
            return await _call(requester, f"{service}.m", n)
    finally:
        await requester.close()
        for p in providers:
            await p.close()


async def test_round_robin(node: BrokerProcess) -> None:
    assert await _shared(node, "lb.rr", {"a": 5, "b": 1}, 10) == {b"a": 5, b"b": 5}


async def test_weighted_with_configured_weights(node: BrokerProcess) -> None:
    # the config's weights (3:1) win over the weights the providers registered with (1:1)
    assert await _shared(node, "lb.w", {"a": 1, "b": 1}, 12) == {b"a": 9, b"b": 3}


async def test_default_policy_weighted_with_registered_weights(node: BrokerProcess) -> None:
    assert await _shared(node, "lb.default", {"a": 2, "b": 1}, 9) == {b"a": 6, b"b": 3}


async def test_policies_are_shown_by_the_admin_api(node: BrokerProcess) -> None:
    providers = await _providers(node, "lb.rr", {"x": 1}) + await _providers(node, "lb.other", {"y": 4})
    try:
        view = await services(node.admin)
        assert view["lb.rr"]["policy"] == "round_robin"
        assert view["lb.other"]["policy"] == "weighted"
        assert view["lb.other"]["providers"][0]["weight"] == 4
    finally:
        for p in providers:
            await p.close()


async def test_least_outstanding(node: BrokerProcess) -> None:
    """Provider a holds every request it gets; b answers at once. Once a holds one request,
    everything goes to b, the provider with fewer open streams; round robin would give a half."""
    holder, answerer = await _providers(node, "lb.lo", {"a": 1, "b": 1})
    requester = await raw_requester(node)
    try:
        async with Responder(holder, lambda f: None) as held, Responder(answerer, lambda f: b"b") as answered:
            for i in range(10):
                sid = await requester.request(FrameType.REQUEST_RESPONSE, "lb.lo.m", b"%d" % i)
                await wait_for(
                    lambda: len(held.received) + len(answered.received) == i + 1,  # noqa: B023
                    message=f"request {i} reached a provider",
                )
                if answered.received and answered.received[-1].data == b"%d" % i:
                    assert (await requester.expect(FrameType.PAYLOAD, stream_id=sid)).data == b"b"
            assert len(held.received) == 1
            assert len(answered.received) == 9
    finally:
        await requester.close()
        await holder.close()
        await answerer.close()
