"""The admin API from tests, and waiting on conditions instead of sleeping.

::

    status, body = await get_json(node.admin, "/api/v1/services")
    await wait_for(lambda: service_instances(node.admin, "svc"), message="svc registered")

``wait_for`` polls a (sync or async) predicate until it returns something truthy and
returns that value; its timeout is a bound on waiting, not a claim about speed.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any, Callable

import aiohttp

__all__ = ["get_json", "services", "service_instances", "connections", "wait_for", "WAIT_TIMEOUT_S"]

#: Upper bound for conditions that normally hold within milliseconds; the machine is busy.
WAIT_TIMEOUT_S = 30.0


async def get_json(admin: str | None, path: str) -> tuple[int, Any]:
    """``(status, decoded JSON body)`` of ``GET http://{admin}{path}``."""
    assert admin is not None, "this node has no admin listener"
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://{admin}{path}") as response:
            return response.status, await response.json(content_type=None)


async def services(admin: str | None) -> dict[str, Any]:
    """``GET /api/v1/services`` → ``{service: {"policy": ..., "providers": [...]}}``."""
    status, body = await get_json(admin, "/api/v1/services")
    assert status == 200, body
    return body["services"]


async def service_instances(admin: str | None, service: str) -> list[str]:
    """Instances currently providing ``service`` on this node (empty when none)."""
    entry = (await services(admin)).get(service)
    return [p["instance"] for p in entry["providers"]] if entry else []


async def connections(admin: str | None) -> list[dict[str, Any]]:
    """``GET /api/v1/connections`` → one dict per connection."""
    status, body = await get_json(admin, "/api/v1/connections")
    assert status == 200, body
    return body["connections"]


async def wait_for(
    predicate: Callable[[], Any],
    *,
    timeout: float = WAIT_TIMEOUT_S,
    interval: float = 0.05,
    message: str = "condition",
) -> Any:
    """Poll ``predicate`` until it returns a truthy value; fail with ``message`` after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {message} (last value {value!r})")
        await asyncio.sleep(interval)
