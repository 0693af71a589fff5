"""Fixtures of the ``broker.client`` suite: one broker per module, a provider per test.

* ``node`` — an ``rsbroker serve`` process shared by the module's tests (they keep apart by
  service name).
* ``service`` — a service name unique to the test; ``probe`` and ``provider`` — a
  ``broker.client`` provider of every model of :mod:`tests.client.service` on ``node``,
  connected over the transport the test is parametrized with (``transport``: tcp or ws).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest

from broker.client import Connection, connect
from tests.client.service import Probe, service_router
from tests.support.admin import service_instances, wait_for
from tests.support.brokerproc import BrokerFactory, BrokerProcess


def address(node: BrokerProcess, transport: str) -> str:
    """The address ``broker.client.connect`` takes for ``node`` over ``transport``."""
    return node.ws_url if transport == "ws" else str(node.tcp)


@pytest.fixture(scope="module")
def node(module_broker_factory: BrokerFactory) -> BrokerProcess:
    return module_broker_factory.start()


@pytest.fixture
def service(request: pytest.FixtureRequest) -> str:
    return "cl." + re.sub(r"[^a-z0-9]+", "_", request.node.name.lower()).strip("_")


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture(params=["tcp"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def provider(node: BrokerProcess, service: str, probe: Probe, transport: str) -> AsyncIterator[Connection]:
    async with connect(address(node, transport), services=[service], router=service_router(service, probe), instance="p1") as conn:
        await wait_for(lambda: service_instances(str(node.admin), service), message=f"{service} registered")
        yield conn


@pytest.fixture
async def requester(node: BrokerProcess, transport: str) -> AsyncIterator[Connection]:
    async with connect(address(node, transport)) as conn:
        yield conn

