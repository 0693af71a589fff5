"""Sessions are slotted (issue 13: an idle device is mostly its session object).

A session class that forgets ``__slots__`` gets a ``__dict__`` again and costs about
1.5 KiB more per connection, silently; these tests catch that, and check that the
attributes other parts set on a session from outside still take.
"""

from __future__ import annotations

import asyncio
import os
import weakref

from broker.gateway import GatewaySession
from broker.relay import Broker
from broker.session import Session
from broker.settings import Settings
from broker.transports import TcpSession, WsSession
from cluster.crypto import Keyring
from cluster.links import Links, LinkSession


async def _sessions(broker: Broker) -> list[Session]:
    links = Links(broker, "a", Keyring([os.urandom(32)]))
    return [TcpSession(broker), WsSession(broker), GatewaySession(broker, ("127.0.0.1", 1)), LinkSession(broker, links, "b")]


def test_every_session_class_is_slotted_and_takes_what_others_set() -> None:
    async def main() -> None:
        broker = Broker(Settings(node_id="a"), asyncio.get_running_loop())
        for session in await _sessions(broker):
            name = type(session).__name__
            assert not hasattr(session, "__dict__"), f"{name} has a __dict__: a class in its MRO lacks __slots__"
            assert weakref.ref(session)() is session  # cluster.links keeps pending links in a WeakKeyDictionary
            # set from outside the class: relay (registration, timed_out, leases, stalls), gateway
            # (TLS name), links (principal, close_reason)
            session.transport_name = "https"
            session.timed_out = True
            session.registration = None
            session.lease_granted_until = 1.0
            session.last_recv += 1.0
            session.connected_at += 1.0
            session.principal = None
            session.close_reason = "test"
            assert session.transport_name == "https" and session.timed_out

    asyncio.run(main())


def test_transport_names_follow_the_class_and_tls() -> None:
    async def main() -> None:
        broker = Broker(Settings(node_id="a"), asyncio.get_running_loop())
        names = [s.transport_name for s in await _sessions(broker)]
        assert names == ["tcp", "ws", "http", "link-out"]

    asyncio.run(main())
