"""``max_setups_per_s``: a connect storm is refused with REJECTED_SETUP and a retry hint,
and the node keeps serving (issue 13, storms).

The real-process test sets the limit through ``RSBROKER_MAX_SETUPS_PER_S`` so that it
fails, rather than not starting, on a broker without the limit.
"""

from __future__ import annotations

import asyncio
import re

import pytest

from broker.client import SetupError, connect_cluster, open_connection
from broker.client.errors import retry_after_s
from broker.frames import ErrorCode
from broker.limits import SetupRate
from tests.support.admin import get_text
from tests.support.brokerproc import BrokerFactory


def test_the_bucket_takes_a_second_of_burst_then_spreads_the_refused() -> None:
    rate = SetupRate(4)
    assert [rate.retry_after_ms(10.0) for _ in range(4)] == [0, 0, 0, 0]
    hints = [rate.retry_after_ms(10.0) for _ in range(4)]
    assert hints == sorted(hints) and len(set(hints)) == 4, hints  # each refused one a later slot
    assert hints[0] >= 250 and hints[1] - hints[0] == 250
    assert rate.retry_after_ms(10.0 + 0.26) == 0  # a token came back
    assert SetupRate(0).retry_after_ms(0.0) == 0  # 0 turns the limit off


def test_the_hint_is_read_back_by_clients() -> None:
    assert retry_after_s(SetupError("... (max_setups_per_s); retry after 250 ms")) == 0.25
    assert retry_after_s(SetupError("bad token")) is None


@pytest.mark.asyncio
async def test_a_connect_storm_is_refused_with_a_retry_hint_and_the_node_keeps_serving(broker_factory: BrokerFactory) -> None:
    node = broker_factory.start(env={"RSBROKER_MAX_SETUPS_PER_S": "2"})
    assert node.tcp and node.admin
    results = await asyncio.gather(*(open_connection(node.tcp, setup_timeout_s=30) for _ in range(30)), return_exceptions=True)
    accepted = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, SetupError)]
    assert len(accepted) + len(refused) == 30, [r for r in results if isinstance(r, BaseException) and not isinstance(r, SetupError)]
    assert refused, "no SETUP was refused at 2 per second"
    assert accepted, "the node accepted nobody"
    for error in refused:
        assert error.code == ErrorCode.REJECTED_SETUP
        assert "max_setups_per_s" in str(error) and re.search(r"retry after \d+ ms", str(error)), error
    status, metrics = await get_text(node.admin, "/metrics")
    hits = re.search(r'rsbroker_limit_hits_total\{limit="max_setups_per_s"\} (\d+)', metrics)
    assert status == 200 and hits and int(hits.group(1)) >= len(refused)
    for connection in accepted:
        connection.close()
    # a cluster client told to come back later does, and gets in
    async with connect_cluster([node.tcp], backoff_max_s=0.5) as client:
        assert client.connection is not None and not client.connection.is_closed
