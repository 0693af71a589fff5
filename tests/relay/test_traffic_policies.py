"""Outlier ejection, canary routing and p2c's latency on a real ``rsbroker serve``, configured live through
the config store (``PUT /api/v1/config/services/<service>``), with ``broker.client``
providers and requesters.

Requests are sent one after the other, so round robin's turns, and with them every count
below, are exact; the canary's percentage path is checked within a wide binomial margin.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from broker import metadata as md
from broker.canary import TAGS_MIME
from broker.client import Connection, connect
from broker.client.errors import CanceledError, RejectedError, RSocketError
from tests.cluster.peers import client_who_router
from tests.support.admin import get_text, send_json, service_instances, services, wait_for
from tests.support.brokerproc import BrokerFactory, BrokerProcess, BrokerStartError
from tests.support.cluster import put_config


@contextlib.asynccontextmanager
async def _provider(
    node: BrokerProcess,
    service: str,
    instance: str,
    tags: dict[str, str] | None = None,
    broken: Callable[[], bool] = lambda: False,
    delay_s: float = 0.0,
) -> AsyncIterator[Connection]:
    """A provider answering its instance name after ``delay_s``, or failing (APPLICATION_ERROR) while ``broken()``."""
    router = client_who_router(service, instance, broken, delay_s)
    async with connect(str(node.tcp), services=[service], router=router, instance=instance, tags=tags) as conn:
        await wait_for(lambda: _lists(node, service, instance), message=f"'{instance}' registered for '{service}'")
        yield conn


async def _lists(node: BrokerProcess, service: str, instance: str) -> bool:
    return instance in await service_instances(str(node.admin), service)


async def _ask(client: Connection, service: str, metadata: bytes | None = None) -> str:
    """Who answered, or ``error`` for an APPLICATION_ERROR."""
    try:
        return (await client.request_response(f"{service}.who", b"", metadata)).decode()
    except RSocketError as exc:
        assert "is broken" in str(exc), exc
        return "error"


async def _counter(node: BrokerProcess, name: str, service: str) -> float:
    status, text = await get_text(str(node.admin), "/metrics")
    assert status == 200
    found = re.search(rf'^{name}{{service="{re.escape(service)}"}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


async def _provider_view(node: BrokerProcess, service: str, instance: str) -> dict[str, Any]:
    return next(p for p in (await services(str(node.admin)))[service]["providers"] if p["instance"] == instance)


async def test_a_failing_provider_is_ejected_then_probed_back(node: BrokerProcess, service: str) -> None:
    await put_config(
        node, f"services/{service}",
        {"outlier": {"consecutive_errors": 3, "base_ejection_ms": 2000, "max_ejection_percent": 50}},
    )
    state = {"broken": True}
    async with _provider(node, service, "bad", broken=lambda: state["broken"]), _provider(node, service, "good"):
        async with connect(str(node.tcp)) as client:
            answers = [await _ask(client, service) for _ in range(20)]
            # round robin alternates until the third error in a row ejects "bad"; then "good" takes all
            assert answers.count("error") == 3, answers
            assert answers[6:] == ["good"] * 14, answers
            assert await _counter(node, "rsbroker_ejections_total", service) == 1
            assert (await _provider_view(node, service, "bad"))["ejected"] is True

            state["broken"] = False

            async def probed_back() -> bool:
                return await _ask(client, service) == "bad"

            await wait_for(probed_back, message="the ejected provider answered a half-open probe")
            after = collections.Counter([await _ask(client, service) for _ in range(10)])
            assert after == {"bad": 5, "good": 5}  # circuit closed: round robin again
            assert (await _provider_view(node, service, "bad"))["ejected"] is False
            assert await _counter(node, "rsbroker_ejections_total", service) == 1


async def test_without_an_outlier_policy_errors_never_eject(node: BrokerProcess, service: str) -> None:
    async with _provider(node, service, "bad", broken=lambda: True), _provider(node, service, "good"):
        async with connect(str(node.tcp)) as client:
            answers = collections.Counter([await _ask(client, service) for _ in range(20)])
    assert answers == {"error": 10, "good": 10}
    assert await _counter(node, "rsbroker_ejections_total", service) == 0


async def _ask_timed(client: Connection, service: str, metadata: bytes | None = None) -> str:
    """Who answered, or ``timeout`` when the request's deadline ran out."""
    try:
        return (await asyncio.wait_for(client.request_response(f"{service}.who", b"", metadata), 60)).decode()
    except CanceledError as exc:
        assert "deadline of" in str(exc), exc
        return "timeout"


async def test_timeouts_at_the_services_deadline_eject_a_provider(node: BrokerProcess, service: str) -> None:
    """Envoy's consecutive gateway failures: a provider that lets requests run into the
    service's ``deadline_ms`` is ejected like one that answers errors."""
    await put_config(
        node, f"services/{service}",
        {"deadline_ms": 300, "outlier": {"consecutive_errors": 2, "base_ejection_ms": 60_000, "max_ejection_percent": 50}},
    )
    async with _provider(node, service, "hung", delay_s=3600.0), _provider(node, service, "good"):
        async with connect(str(node.tcp)) as client:
            answers = [await _ask_timed(client, service) for _ in range(12)]
            # round robin alternates until the second timeout in a row ejects "hung"
            assert answers.count("timeout") == 2, answers
            assert answers[4:] == ["good"] * 8, answers
            assert await _counter(node, "rsbroker_ejections_total", service) == 1
            assert await _counter(node, "rsbroker_deadline_timeouts_total", service) == 2
            assert (await _provider_view(node, service, "hung"))["ejected"] is True


async def test_a_requesters_own_short_deadline_cannot_eject_a_provider(node: BrokerProcess, service: str) -> None:
    """Attack: a requester asks for a 100 ms deadline on requests a provider needs 1 s for,
    to get that provider ejected for everyone. Only the service's own deadline counts."""
    await put_config(
        node, f"services/{service}",
        {"deadline_ms": 30_000, "outlier": {"consecutive_errors": 2, "base_ejection_ms": 60_000, "max_ejection_percent": 50}},
    )
    short = md.composite_entry(md.DEADLINE_MIME, b"100")
    async with _provider(node, service, "slow", delay_s=1.0), _provider(node, service, "good"):
        async with connect(str(node.tcp)) as client:
            answers = [await _ask_timed(client, service, short) for _ in range(8)]
            assert answers.count("timeout") == 4, answers  # every request to "slow" ran out ...
            assert await _counter(node, "rsbroker_deadline_timeouts_total", service) == 4
            # ... and "slow" still serves: nobody ejected it
            assert await _counter(node, "rsbroker_ejections_total", service) == 0
            assert (await _provider_view(node, service, "slow"))["ejected"] is False
            assert collections.Counter([await _ask_timed(client, service) for _ in range(4)]) == {"slow": 2, "good": 2}


async def test_p2c_weighs_round_trips_a_slow_provider_loses_to_a_fast_one(node: BrokerProcess, service: str) -> None:
    """One request at a time, so both providers have no open stream at every pick: open
    streams alone would split evenly; the round trip measured (peak EWMA, broker.latency)
    sends every request to the fast provider once both answered once (until then, a provider
    not measured yet is weighed as the other: the open streams decide)."""
    await put_config(node, f"services/{service}", {"policy": "p2c"})
    async with _provider(node, service, "slow", delay_s=1.0), _provider(node, service, "fast"):
        async def applied() -> bool:
            return (await services(str(node.admin)))[service]["policy"] == "p2c"

        await wait_for(applied, message="the node to apply p2c")
        async with connect(str(node.tcp)) as client:
            seen: set[str] = set()

            async def both_measured() -> bool:
                seen.add(await _ask(client, service))
                return seen == {"slow", "fast"}

            await wait_for(both_measured, message="both providers answered once")
            answers = collections.Counter([await _ask(client, service) for _ in range(20)])
            view = {p["instance"]: p for p in (await services(str(node.admin)))[service]["providers"]}
    assert answers == {"fast": 20}, (answers, [(p["rtt_ms"], p["outstanding"], p["load"]) for p in view.values()])
    assert view["slow"]["rtt_ms"] >= 500.0, view  # 1 s, decayed by at most a third since
    assert 0.0 < view["fast"]["rtt_ms"] < view["slow"]["rtt_ms"], view


async def _node_rate(node: BrokerProcess, limit: str) -> float | None:
    """This node's share of ``limit`` per second, as /metrics shows it (None: no such limit)."""
    status, text = await get_text(str(node.admin), "/metrics")
    assert status == 200
    found = re.search(rf'^rsbroker_rate_limit_node_rate{{limit="{re.escape(limit)}"}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else None


async def test_a_limit_changed_live_applies_to_the_next_request_of_a_connection(node: BrokerProcess, service: str) -> None:
    """A connection's route cache holds the buckets its repeats spend: a limit replaced, then
    removed, in the config store must hold for the very next request of a connection that
    already called the route, not the bucket it spent before."""
    limit = f"{service}-limit"
    async with _provider(node, service, "p1"), connect(str(node.tcp)) as client:
        await put_config(node, f"limits/{limit}", {"service": service, "rate": 0.001, "burst": 1})
        await wait_for(lambda: _node_rate(node, limit), message="the limit applied")
        assert await _ask(client, service) == "p1"  # the one token; the route is remembered
        with pytest.raises(RejectedError, match=rf"rate limit '{limit}' exceeded by service '{service}'"):
            await client.request_response(f"{service}.who", b"")
        await put_config(node, f"limits/{limit}", {"service": service, "rate": 0.002, "burst": 2})
        await wait_for(lambda: _is(_node_rate(node, limit), 0.002), message="the changed limit applied")
        assert [await _ask(client, service) for _ in range(2)] == ["p1", "p1"]  # a changed limit starts full
        with pytest.raises(RejectedError, match=rf"rate limit '{limit}' exceeded .* 0.002/s, burst 2"):
            await client.request_response(f"{service}.who", b"")
        status, body = await send_json(str(node.admin), "DELETE", f"/api/v1/config/limits/{limit}")
        assert status == 200, body
        await wait_for(lambda: _is(_node_rate(node, limit), None), message="the limit removed")
        assert [await _ask(client, service) for _ in range(5)] == ["p1"] * 5


async def _is(value: Any, expected: object) -> bool:
    return await value == expected


def _tags(tags: dict[str, str]) -> bytes:
    return md.composite_entry(TAGS_MIME, json.dumps(tags).encode())


async def test_canary_by_tag_and_by_percentage(node: BrokerProcess, service: str) -> None:
    await put_config(
        node, f"services/{service}",
        {"canary": {"tags": {"version": "2"}, "percent": 20, "header": {"canary": "1"}}},
    )
    v1, v2 = {"version": "1"}, {"version": "2"}
    async with _provider(node, service, "v1a", v1), _provider(node, service, "v1b", v1), _provider(node, service, "v2", v2):
        async with connect(str(node.tcp)) as client:
            tagged = collections.Counter([await _ask(client, service, _tags({"canary": "1"})) for _ in range(30)])
            assert tagged == {"v2": 30}  # the tag path is deterministic
            plain = collections.Counter([await _ask(client, service) for _ in range(400)])
    assert set(plain) <= {"v1a", "v1b", "v2"}
    assert 40 <= plain["v2"] <= 120, plain  # 20 % of 400: mean 80, sd 8; a ±5 sd margin
    assert abs(plain["v1a"] - plain["v1b"]) <= 1  # the stable set shares by round robin
    assert await _counter(node, "rsbroker_canary_requests_total", service) == 30 + plain["v2"]


async def test_a_bad_policy_is_refused_with_the_field_named(node: BrokerProcess, service: str) -> None:
    status, body = await send_json(
        str(node.admin), "PUT", f"/api/v1/config/services/{service}", {"outlier": {"consecutive_errors": 0}}
    )
    assert status == 400, body
    assert "'outlier.consecutive_errors' must be an integer >= 1" in json.dumps(body)


@pytest.fixture
def service(request: pytest.FixtureRequest) -> str:
    return "tp." + re.sub(r"[^a-z0-9]+", "_", request.node.name.lower()).strip("_")


def test_the_config_file_door_uses_the_same_parser(broker_factory: BrokerFactory) -> None:
    """A traffic policy in ``[services."<service>"]`` is read by the parser the store uses:
    a good one starts the node, a bad one stops it with the field named."""
    good = '[services."tp.file"]\npolicy = "p2c"\noutlier = { consecutive_errors = 3 }\n' \
           'canary = { tags = { version = "2" }, percent = 10 }\n'
    broker_factory.start(config=good).stop()
    with pytest.raises(BrokerStartError, match=r"'canary' needs a 'percent' above 0 or a 'header'"):
        broker_factory.start(config='[services."tp.file"]\ncanary = { tags = { version = "2" } }\n')
