"""Rate limits and deadlines on a real node, over RSocket and the HTTP gateway.

The config file's ``[limits.<name>]`` and a service's ``deadline_ms`` (the config store's
``limits/`` and ``services/`` are covered on a cluster in ``test_cluster.py``).
"""

from __future__ import annotations

import asyncio
import json

import pytest

from broker.client import CanceledError, RejectedError, connect
from tests.gateway.peers import SERVICE, Seen, gateway_router, http, wait_served
from tests.support.admin import get_text
from tests.support.brokerproc import BrokerFactory, BrokerProcess

CONFIG = f"""
[limits.callers]
principal = "*"
rate = 0.001
burst = 3

[services.{SERVICE}]
deadline_ms = 1500
"""


@pytest.fixture
def node(broker_factory: BrokerFactory) -> BrokerProcess:
    return broker_factory.start(config=CONFIG)


async def metric_value(node: BrokerProcess, series: str) -> float | None:
    status, text = await get_text(node, "/metrics")
    assert status == 200
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_a_principal_rate_limit_refuses_past_its_burst_naming_the_limit(node: BrokerProcess) -> None:
    seen = Seen()
    async with connect(str(node.tcp), services=[SERVICE], router=gateway_router(seen)):
        await wait_served(node)
        async with connect(str(node.tcp)) as client:
            for _ in range(3):  # the burst; the rate (one per 1000 s) adds nothing meanwhile
                assert await client.request_response(f"{SERVICE}.echo", b"x") == b"p1 echo x"
            with pytest.raises(RejectedError, match=r"rate limit 'callers' exceeded by principal 'anonymous'"):
                await client.request_response(f"{SERVICE}.echo", b"x")
        status, headers, body = await http("POST", f"http://{node.ws}/rpc/{SERVICE}.echo", data=b"x")
        assert status == 429 and headers["Retry-After"] == "1"
        assert json.loads(body)["message"].startswith("rate limit 'callers'")
        assert len(seen.calls) == 3
        assert await metric_value(node, 'rsbroker_rate_limited_total{limit="callers"}') == 2.0
        # and the route's meter counts both refusals as rejected requests of gw.echo
        assert await metric_value(node, 'rsbroker_route_requests_total{outcome="rejected",route="gw.echo",service="gw"}') == 2.0


async def test_a_request_past_its_deadline_gets_an_error_and_the_provider_a_cancel(node: BrokerProcess) -> None:
    seen = Seen()
    async with connect(str(node.tcp), services=[SERVICE], router=gateway_router(seen)):
        await wait_served(node)
        async with connect(str(node.tcp)) as client:
            with pytest.raises(CanceledError, match=r"deadline of 1500 ms exceeded for route 'gw.slow'"):
                await asyncio.wait_for(client.request_response(f"{SERVICE}.slow", b"x"), 60)
        await asyncio.wait_for(seen.slow_cancelled.wait(), 30)
        assert await metric_value(node, 'rsbroker_deadline_timeouts_total{service="gw"}') == 1.0
        # the route's meter ends the stream once, as a timeout
        assert await metric_value(node, 'rsbroker_route_requests_total{outcome="timeout",route="gw.slow",service="gw"}') == 1.0


async def test_the_requesters_shorter_deadline_wins_and_http_gets_504(node: BrokerProcess) -> None:
    seen = Seen()
    async with connect(str(node.tcp), services=[SERVICE], router=gateway_router(seen)):
        await wait_served(node)
        status, _, body = await http("POST", f"http://{node.ws}/rpc/{SERVICE}.slow", data=b"x", headers={"RSBroker-Deadline-Ms": "200"})
        assert status == 504
        assert json.loads(body) == {"error": "CANCELED", "message": "deadline of 200 ms exceeded for route 'gw.slow' (service 'gw')"}
        await asyncio.wait_for(seen.slow_cancelled.wait(), 30)
        # a longer deadline from the requester does not extend the service's
        status, _, body = await http("POST", f"http://{node.ws}/rpc/{SERVICE}.slow", data=b"x", headers={"RSBroker-Deadline-Ms": "600000"})
        assert status == 504 and "deadline of 1500 ms" in json.loads(body)["message"]


async def test_bad_limits_in_the_config_file_stop_the_start_with_the_reason(broker_factory: BrokerFactory) -> None:
    from tests.support.brokerproc import BrokerStartError

    with pytest.raises(BrokerStartError, match=r"rate limit 'x': 'rate' must be a number > 0"):
        broker_factory.start(config='[limits.x]\nservice = "gw"\nrate = -1\n')
