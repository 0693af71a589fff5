"""Retries of idempotent request-responses on a real node.

Two providers of a service, round robin. One refuses every request (ERROR REJECTED) or dies
on the first request it gets (its process exits: connection lost before it answered). For a
service marked ``idempotent`` the requester never sees either: the request goes to the
other provider. For a service without the mark, the refusal reaches the requester.

A refusal is caught in the relay's hot path (before the ERROR is relayed), which exists twice
(``broker/_hotpath.py`` and its compiled twin): each test runs on a node of each. Nodes do
not inherit ``RSBROKER_*`` from the test runner, so the choice is passed explicitly.
"""

from __future__ import annotations

import asyncio
import sys
import textwrap

import pytest

from broker.client import RejectedError, Router, connect
from tests.support.admin import get_text, service_instances, wait_for
from tests.support.brokerproc import BrokerFactory, BrokerProcess

CONFIG = """
max_retry_frame_size = 4096

[services.safe]
idempotent = true
retries = 1

[services.unsafe]
"""


@pytest.fixture(params=["compiled", "pure-python"])
def node(request: pytest.FixtureRequest, broker_factory: BrokerFactory) -> BrokerProcess:
    no_extensions = "1" if request.param == "pure-python" else "0"
    return broker_factory.start(config=CONFIG, env={"RSBROKER_NO_EXTENSIONS": no_extensions})


def answering(service: str, answers: list[str]) -> Router:
    router = Router()

    @router.response(f"{service}.get")
    async def get(data: bytes) -> bytes:
        answers.append(service)
        return b"good"

    return router


def refusing(service: str, refusals: list[str]) -> Router:
    router = Router()

    @router.response(f"{service}.get")
    async def get(data: bytes) -> bytes:
        refusals.append(service)
        raise RejectedError("overloaded, try another")

    return router


async def retries(node: BrokerProcess, service: str) -> float:
    status, text = await get_text(node, "/metrics")
    assert status == 200
    prefix = f'rsbroker_retries_total{{service="{service}"}} '
    return next((float(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix)), 0.0)


async def wait_instances(node: BrokerProcess, service: str, count: int) -> None:
    async def ready() -> bool:
        return len(await service_instances(node, service)) == count

    await wait_for(ready, message=f"{count} providers of {service}")


async def test_a_refused_idempotent_request_goes_to_another_provider(node: BrokerProcess) -> None:
    answers: list[str] = []
    refusals: list[str] = []
    async with connect(str(node.tcp), services=["safe", "unsafe"], router=refusing("safe", refusals), instance="bad"):
        async with connect(str(node.tcp), services=["safe", "unsafe"], router=answering("safe", answers), instance="good"):
            await wait_instances(node, "safe", 2)
            async with connect(str(node.tcp)) as client:
                for _ in range(4):  # round robin: some go to the refusing provider first
                    assert await client.request_response("safe.get", b"") == b"good"
    assert len(answers) == 4 and refusals  # every request answered, though some were refused
    assert await retries(node, "safe") == len(refusals)
    # each request is metered once, as answered: a refusal that was retried is no outcome of its own
    _, text = await get_text(node, "/metrics")
    assert 'rsbroker_route_requests_total{outcome="ok",route="safe.get",service="safe"} 4.0' in text.splitlines()
    assert 'outcome="rejected",route="safe.get"' not in text


async def test_a_request_over_max_retry_frame_size_is_not_kept_nor_sent_again(node: BrokerProcess) -> None:
    """The node keeps no copy of a request over ``max_retry_frame_size`` (4096 here): the one
    that round robin gives the refusing provider fails with its refusal, counted as a retry
    refused for its size; a small request after it is retried as usual."""
    answers: list[str] = []
    refusals: list[str] = []
    async with connect(str(node.tcp), services=["safe"], router=refusing("safe", refusals), instance="bad"):
        async with connect(str(node.tcp), services=["safe"], router=answering("safe", answers), instance="good"):
            await wait_instances(node, "safe", 2)
            async with connect(str(node.tcp)) as client:
                outcomes = []
                for _ in range(2):  # round robin: one of the two goes to the refusing provider
                    try:
                        outcomes.append(await client.request_response("safe.get", b"x" * 8000))
                    except RejectedError as exc:
                        outcomes.append(str(exc).encode())
                assert sorted(outcomes) == [b"REJECTED: overloaded, try another", b"good"], outcomes
                for _ in range(2):
                    assert await client.request_response("safe.get", b"small") == b"good"
    status, text = await get_text(node, "/metrics")
    assert 'rsbroker_retries_refused_total{reason="too_large",service="safe"} 1.0' in text.splitlines()
    assert await retries(node, "safe") == 1.0  # the small one refused, and sent again


async def test_a_request_of_a_service_not_marked_idempotent_is_never_sent_twice(node: BrokerProcess) -> None:
    answers: list[str] = []
    refusals: list[str] = []
    async with connect(str(node.tcp), services=["unsafe"], router=refusing("unsafe", refusals), instance="bad"):
        async with connect(str(node.tcp), services=["unsafe"], router=answering("unsafe", answers), instance="good"):
            await wait_instances(node, "unsafe", 2)
            async with connect(str(node.tcp)) as client:
                outcomes = []
                for _ in range(4):
                    try:
                        outcomes.append(await client.request_response("unsafe.get", b""))
                    except RejectedError as exc:
                        outcomes.append(exc.message.encode())
    assert sorted(outcomes) == [b"good", b"good", b"overloaded, try another", b"overloaded, try another"]
    assert len(answers) + len(refusals) == 4
    assert await retries(node, "unsafe") == 0.0


DYING_PROVIDER = textwrap.dedent(
    """
    import asyncio, os, sys
    from broker.client import Router, connect

    router = Router()

    @router.response("safe.get")
    async def get(data: bytes) -> bytes:
        os._exit(3)  # the connection is lost before any answer

    async def main() -> None:
        async with connect(sys.argv[1], services=["safe"], router=router, instance="dying"):
            print("registered", flush=True)
            await asyncio.Event().wait()

    asyncio.run(main())
    """
)


async def test_an_idempotent_request_whose_provider_dies_goes_to_another(node: BrokerProcess) -> None:
    dying = await asyncio.create_subprocess_exec(sys.executable, "-c", DYING_PROVIDER, str(node.tcp), stdout=asyncio.subprocess.PIPE)
    try:
        assert await asyncio.wait_for(dying.stdout.readline(), 60) == b"registered\n"  # type: ignore[union-attr]
        answers: list[str] = []
        async with connect(str(node.tcp), services=["safe"], router=answering("safe", answers), instance="good"):
            await wait_instances(node, "safe", 2)
            async with connect(str(node.tcp)) as client:
                for _ in range(2):  # round robin: one of them goes to the dying provider first
                    assert await client.request_response("safe.get", b"") == b"good"
        assert await asyncio.wait_for(dying.wait(), 60) == 3
        assert answers == ["safe", "safe"]
        assert await retries(node, "safe") == 1.0
    finally:
        if dying.returncode is None:
            dying.kill()
            await dying.wait()


async def test_retries_stop_when_the_budget_is_spent(node: BrokerProcess) -> None:
    """Every provider refuses: retries would double the load; the budget (10, plus 20 % of the
    requests) bounds them, and the requests beyond it fail at once with the refusal."""
    refusals: list[str] = []
    async with connect(str(node.tcp), services=["safe"], router=refusing("safe", refusals), instance="bad-1"):
        async with connect(str(node.tcp), services=["safe"], router=refusing("safe", refusals), instance="bad-2"):
            await wait_instances(node, "safe", 2)
            async with connect(str(node.tcp)) as client:
                for _ in range(40):
                    with pytest.raises(RejectedError, match="overloaded"):
                        await client.request_response("safe.get", b"")
    sent_again = await retries(node, "safe")
    assert 0 < sent_again <= 10 + 0.2 * 40
    status, text = await get_text(node, "/metrics")
    assert 'rsbroker_retries_refused_total{reason="budget",service="safe"}' in text
    assert len(refusals) == 40 + sent_again
