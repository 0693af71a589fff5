"""The gateway and the traffic rules across two real nodes.

A provider on n2, HTTP to n1: the request crosses the broker link like any other. A rate
limit written once to the config store applies on both nodes, each enforcing half of it,
and the surviving node takes the whole limit once the other has died.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from broker.client import RejectedError, connect
from tests.gateway.peers import SERVICE, Seen, gateway_router, http, wait_served
from tests.support.admin import get_json, get_text, send_json, wait_for
from tests.support.cluster import Cluster, ClusterFactory, put_config


@pytest.fixture(scope="module")
def pair() -> Iterator[Cluster]:
    factory = ClusterFactory()
    try:
        yield factory.start(2, "--cluster-key", str(factory.key_file()))
    finally:
        factory.close()


async def node_rate(node: object, limit: str) -> float | None:
    status, text = await get_text(node, "/metrics")  # type: ignore[arg-type]
    assert status == 200
    prefix = f'rsbroker_rate_limit_node_rate{{limit="{limit}"}} '
    return next((float(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix)), None)


async def test_http_to_n1_reaches_a_provider_on_n2(pair: Cluster) -> None:
    await pair.wait_converged()
    seen = Seen()
    async with connect(str(pair["n2"].tcp), services=[SERVICE], router=gateway_router(seen, "on-n2")):
        await wait_served(pair["n1"])
        status, _, body = await http("POST", f"http://{pair['n1'].ws}/rpc/{SERVICE}.echo", data=b"hop")
        assert (status, body) == (200, b"on-n2 echo hop")
        status, _, body = await http("GET", f"http://{pair['n1'].ws}/rpc/{SERVICE}.count?data=50", headers={"Accept": "application/x-ndjson"})
        assert status == 200 and body.split(b"\n")[:-1] == [str(i).encode() for i in range(50)]


async def test_a_stored_deadline_ends_a_request_to_another_node_and_cancels_its_provider(pair: Cluster) -> None:
    await pair.wait_converged()
    await put_config(pair["n2"], f"services/{SERVICE}", {"deadline_ms": 1000})
    seen = Seen()
    async with connect(str(pair["n2"].tcp), services=[SERVICE], router=gateway_router(seen, "on-n2")):
        await wait_served(pair["n1"])

        async def applied() -> bool:  # n1's own copy of the store has the policy
            status, body = await get_json(pair["n1"], f"/api/v1/config/services/{SERVICE}?stale=true")
            return status == 200 and "1000" in json.dumps(body)

        await wait_for(applied, message="the stored policy applied on n1")
        status, _, body = await asyncio.wait_for(http("POST", f"http://{pair['n1'].ws}/rpc/{SERVICE}.slow", data=b"x"), 60)
        assert status == 504 and json.loads(body)["message"].startswith("deadline of 1000 ms exceeded")
        await asyncio.wait_for(seen.slow_cancelled.wait(), 30)  # the CANCEL crossed the link
    status, text = await get_text(pair["n1"], "/metrics")
    assert f'rsbroker_deadline_timeouts_total{{service="{SERVICE}"}}' in text
    status, _ = await send_json(pair["n1"], "DELETE", f"/api/v1/config/services/{SERVICE}")
    assert status == 200


async def test_requests_over_a_broker_link_are_not_held_to_the_limits_again(pair: Cluster) -> None:
    """Requests from n1 to a provider on n2 spend n1's share of a limit, never n2's: n2 opens
    the first from the link as it comes, and the repeats from the link's route cache, and its own
    requesters still get its whole share."""
    await pair.wait_converged()
    await put_config(pair["n1"], "limits/gw-edge", {"service": SERVICE, "rate": 0.002, "burst": 4})
    seen = Seen()
    echo = f"{SERVICE}.echo"
    async with connect(str(pair["n2"].tcp), services=[SERVICE], router=gateway_router(seen, "on-n2")):
        await wait_served(pair["n1"])
        for node in pair:
            await wait_for(lambda node=node: _rate_is(node, 0.001, "gw-edge"), message=f"half the limit on {node.node_id}")
        async with connect(str(pair["n1"].tcp)) as far, connect(str(pair["n2"].tcp)) as near:
            assert [await far.request_response(echo, b"x") for _ in range(2)] == [b"on-n2 echo x"] * 2  # n1's share: 2
            with pytest.raises(RejectedError, match="rate limit 'gw-edge' exceeded"):
                await far.request_response(echo, b"x")
            assert [await near.request_response(echo, b"y") for _ in range(2)] == [b"on-n2 echo y"] * 2  # n2's, whole
            with pytest.raises(RejectedError, match="rate limit 'gw-edge' exceeded"):
                await near.request_response(echo, b"y")
    assert len(seen.calls) == 4
    status, body = await send_json(pair["n1"], "DELETE", "/api/v1/config/limits/gw-edge")
    assert status == 200, body
    for node in pair:
        await wait_for(lambda node=node: _rate_is(node, None, "gw-edge"), message=f"the limit gone on {node.node_id}")


async def test_a_stored_limit_is_shared_between_live_nodes_and_rebalanced(pair: Cluster) -> None:
    await pair.wait_converged()
    status, body = await send_json(pair["n1"], "PUT", "/api/v1/config/limits/bad", {"service": SERVICE, "rate": 0})
    assert status == 400 and "'rate' must be a number > 0" in json.dumps(body)

    await put_config(pair["n1"], "limits/gw-total", {"service": SERVICE, "rate": 0.002, "burst": 4})
    seen = Seen()
    async with connect(str(pair["n1"].tcp), services=[SERVICE], router=gateway_router(seen)):
        await wait_served(pair["n1"])
        for node in pair:
            await wait_for(lambda node=node: _rate_is(node, 0.001), message=f"half the limit on {node.node_id}")
        # n1's share of the burst is 2: the third request on n1 is refused
        url = f"http://{pair['n1'].ws}/rpc/{SERVICE}.echo"
        answers = [(await http("POST", url, data=b"x"))[0] for _ in range(3)]
        assert answers == [200, 200, 429]
        pair["n2"].kill()
        await wait_for(lambda: _rate_is(pair["n1"], 0.002), timeout=90, message="n1 takes the whole limit once n2 is dead")


async def _rate_is(node: object, rate: float | None, limit: str = "gw-total") -> bool:
    return await node_rate(node, limit) == (rate if rate is None else pytest.approx(rate))
