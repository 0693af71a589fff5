"""The admin API from tests, and waiting on conditions instead of sleeping.

::

    status, body = await get_json(node, "/api/v1/services")
    status, body = await send_json(node, "PUT", "/api/v1/config/app/x", 1)
    await wait_for(lambda: service_instances(node, "svc"), message="svc registered")

Every helper takes the node (a :class:`BrokerProcess`, whose ``admin_token`` goes along as
a bearer token: the admin API requires one whenever authentication is on) or a bare
``host:port`` admin address (no token: authentication off).

``wait_for`` polls a (sync or async) predicate until it returns something truthy and
returns that value; its timeout is a bound on waiting, not a claim about speed.
"""

from __future__ import annotations

import asyncio
import inspect
import ssl
from typing import Any, Callable

import aiohttp

from tests.support.brokerproc import BrokerProcess

__all__ = ["Admin", "get_json", "get_text", "send_json", "services", "service_instances", "connections", "wait_for", "WAIT_TIMEOUT_S"]

#: a node, or the bare ``host:port`` of an admin listener that needs no token
Admin = BrokerProcess | str | None

#: Upper bound for conditions that normally hold within milliseconds; the machine is busy.
WAIT_TIMEOUT_S = 30.0


def _endpoint(admin: Admin) -> tuple[str, dict[str, str], ssl.SSLContext | None]:
    """Base URL of the admin API, the headers and the TLS context that authenticate to it."""
    if not isinstance(admin, BrokerProcess):
        assert admin is not None, "this node has no admin listener"
        return f"http://{admin}", {}, None
    token = admin.admin_token
    return admin.admin_url, ({"Authorization": f"Bearer {token}"} if token else {}), admin.admin_ssl


async def send_json(admin: Admin, method: str, path: str, value: Any = None) -> tuple[int, Any]:
    """``(status, decoded JSON body)`` of ``METHOD {admin}{path}`` with ``value`` as a JSON body."""
    base, headers, context = _endpoint(admin)
    async with aiohttp.ClientSession() as session:
        async with session.request(method, f"{base}{path}", json=value, headers=headers, ssl=context or True) as response:
            return response.status, await response.json(content_type=None)


async def get_text(admin: Admin, path: str) -> tuple[int, str]:
    """``(status, body text)`` of ``GET {admin}{path}`` (e.g. ``/metrics``)."""
    base, headers, context = _endpoint(admin)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}{path}", headers=headers, ssl=context or True) as response:
            return response.status, await response.text()


async def get_json(admin: Admin, path: str) -> tuple[int, Any]:
    """``(status, decoded JSON body)`` of ``GET {admin}{path}``."""
    return await send_json(admin, "GET", path)


async def services(admin: Admin) -> dict[str, Any]:
    """``GET /api/v1/services`` → ``{service: {"policy": ..., "providers": [...]}}``."""
    status, body = await get_json(admin, "/api/v1/services")
    assert status == 200, body
    return body["services"]


async def service_instances(admin: Admin, service: str) -> list[str]:
    """Instances currently providing ``service`` on this node (empty when none)."""
    entry = (await services(admin)).get(service)
    return [p["instance"] for p in entry["providers"]] if entry else []


async def connections(admin: Admin) -> list[dict[str, Any]]:
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
