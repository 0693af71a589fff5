"""Fixtures shared by every suite: real broker processes, always cleaned up.

* ``broker_factory`` — a :class:`tests.support.brokerproc.BrokerFactory` for one test.
* ``module_broker_factory`` — the same for one test module: start a broker once and share
  it between tests that do not disturb each other (starting a process costs about a second
  on a busy machine).

* ``hosts`` — ``hosts(3)`` makes a multi-host test bed (:mod:`tests.support.netns`): three
  network namespaces named node1..node3 on one bridge. Without root it skips with the reason,
  except under ``CI=true``, where it fails: CI runs as root and must run these tests.

All of them stop every broker they started by PID (SIGTERM, then SIGKILL after a timeout) and
remove their temporary directories at teardown, even when the test failed. Raw frame
clients and admin helpers live in ``tests.support.rawclient`` and ``tests.support.admin``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.brokerproc import BrokerFactory
from tests.support.netns import Host, TestBed, unavailable_reason


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


@pytest.fixture
def hosts() -> Iterator[Callable[..., list[Host]]]:
    """``hosts(n)`` → ``n`` hosts of a fresh test bed, removed at teardown whatever happened
    (``hosts(n, names=[...], domain=...)`` names them; see :class:`TestBed`)."""
    reason = unavailable_reason()
    if reason is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"the multi-host test bed must run in CI, but: {reason}")
        pytest.skip(reason)
    beds: list[TestBed] = []

    def make(count: int, **options: Any) -> list[Host]:
        bed = TestBed(count, **options)
        beds.append(bed)
        return bed.hosts

    try:
        yield make
    finally:
        for bed in beds:
            bed.close()
