"""Fixtures of the single-node relay suite.

``node`` is one broker per test module with default settings; modules that need other
limits define their own ``node`` fixture. Tests sharing a node use their own service
names (the ``service`` fixture), so they cannot see each other's providers.
"""

from __future__ import annotations

import re

import pytest

from tests.support.brokerproc import BrokerFactory, BrokerProcess


@pytest.fixture(scope="module")
def node(module_broker_factory: BrokerFactory) -> BrokerProcess:
    return module_broker_factory.start()


@pytest.fixture(params=["tcp", "ws"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def service(request: pytest.FixtureRequest) -> str:
    """A service name unique to this test (and its parameters)."""
    return "t." + re.sub(r"[^a-z0-9]+", "_", request.node.name.lower()).strip("_")
