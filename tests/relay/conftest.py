"""Fixtures of the single-node relay suite.

``node`` is one broker with default settings shared by the whole package; modules that
need other limits define their own (module-scoped) ``node`` fixture. Tests sharing a node use their own service
names (the ``service`` fixture), so they cannot see each other's providers.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.support.brokerproc import BrokerFactory, BrokerProcess


@pytest.fixture(scope="package")
def node() -> Iterator[BrokerProcess]:
    """One default broker for every module of this package that does not define its own:
    starting a process costs about a second, and tests keep apart by service name."""
    factory = BrokerFactory()
    try:
        yield factory.start()
    finally:
        factory.close()


@pytest.fixture(params=["tcp", "ws"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def service(request: pytest.FixtureRequest) -> str:
    """A service name unique to this test (and its parameters)."""
    return "t." + re.sub(r"[^a-z0-9]+", "_", request.node.name.lower()).strip("_")
