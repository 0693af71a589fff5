"""Fixtures shared by every suite: real broker processes, always cleaned up.

* ``broker_factory`` — a :class:`tests.support.brokerproc.BrokerFactory` for one test.
* ``module_broker_factory`` — the same for one test module: start a broker once and share
  it between tests that do not disturb each other (starting a process costs about a second
  on a busy machine).

Both stop every broker they started by PID (SIGTERM, then SIGKILL after a timeout) and
remove their temporary directories at teardown, even when the test failed. Raw frame
clients and admin helpers live in ``tests.support.rawclient`` and ``tests.support.admin``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.brokerproc import BrokerFactory


@pytest.fixture
def broker_factory() -> Iterator[BrokerFactory]:
    factory = BrokerFactory()
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture(scope="module")
def module_broker_factory() -> Iterator[BrokerFactory]:
    factory = BrokerFactory()
    try:
        yield factory
    finally:
        factory.close()
