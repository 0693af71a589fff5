"""Member host names → addresses for gossip's UDP sends (the re-resolution of a moved host is
tested on the multi-host test bed: ``tests/testbed/test_host_names.py``)."""

from __future__ import annotations

import asyncio

from cluster.swim.resolve import Resolver


async def test_addresses_pass_through_and_names_resolve_once_then_come_from_the_cache() -> None:
    resolver = Resolver(ttl_s=60)
    assert resolver.cached("127.0.0.1") == "127.0.0.1"
    assert resolver.cached("localhost") is None  # never waits on the send path
    first, second = await asyncio.gather(resolver.resolve("localhost"), resolver.resolve("localhost"))
    assert first == second == "127.0.0.1"
    assert resolver.cached("localhost") == "127.0.0.1"
    assert resolver.known("localhost") == "127.0.0.1"


async def test_an_unknown_name_has_no_address_and_is_counted() -> None:
    resolver = Resolver(negative_ttl_s=60)
    assert await resolver.resolve("no-such-host.invalid") is None
    assert resolver.failures == 1
    assert await resolver.resolve("no-such-host.invalid") is None  # remembered: no second lookup
    assert resolver.failures == 1


async def test_a_stale_entry_is_used_while_it_is_resolved_again() -> None:
    resolver = Resolver(ttl_s=0.0)
    assert await resolver.resolve("localhost") == "127.0.0.1"
    assert resolver.lookups == 1
    assert resolver.cached("localhost") == "127.0.0.1"  # stale: still answered, refresh started
    assert resolver.cached("localhost") == "127.0.0.1"  # one refresh at a time
    await asyncio.wait_for(resolver.resolve("localhost"), 10)  # joins the refresh in flight
    assert resolver.lookups == 2
