"""Protected mode and rule layering of ``broker.security.Security``, without sockets.

A broker without authentication accepts anonymous clients only from loopback addresses
unless ``--allow-anonymous`` is given. Tests of real processes cannot reach a broker from a
non-loopback address on this machine, so the decision is checked here with a session
stand-in that carries just what ``Security.authenticate`` reads (peer, TLS principal, stats).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any

import pytest

from broker.auth import ANONYMOUS, Principal, parse_rule
from broker.frames import ErrorCode, FrameError
from broker.security import Security, is_loopback
from broker.settings import Settings


@dataclass
class _Broker:
    stats: collections.Counter[str] = field(default_factory=collections.Counter)


@dataclass
class PeerSession:
    """What ``Security.authenticate`` reads from a session."""

    peer: tuple[Any, ...] | None
    tls_principal: Principal | None = None
    broker: _Broker = field(default_factory=_Broker)
    id: int = 1

    @property
    def peer_text(self) -> str:
        return f"{self.peer[0]}:{self.peer[1]}" if self.peer else "?"


@pytest.mark.parametrize(
    ("peer", "loopback"),
    [
        (("127.0.0.1", 5000), True),
        (("127.8.9.10", 5000), True),
        (("::1", 5000, 0, 0), True),
        (("::ffff:127.0.0.1", 5000, 0, 0), True),  # an IPv4 client of a dual-stack listener
        (("::ffff:192.0.2.10", 5000, 0, 0), False),
        (("192.0.2.10", 5000), False),
        (("fe80::1%eth0", 5000, 0, 2), False),
        (("not-an-address", 5000), False),
        (None, False),
        ((), False),
    ],
)
def test_is_loopback(peer: tuple[Any, ...] | None, loopback: bool) -> None:
    assert is_loopback(peer) is loopback


def test_anonymous_remote_client_is_refused_in_protected_mode() -> None:
    security = Security(Settings())
    with pytest.raises(FrameError) as refused:
        security.authenticate(PeerSession(("192.0.2.10", 5000)), None)  # type: ignore[arg-type]
    assert refused.value.code == ErrorCode.REJECTED_SETUP
    assert "anonymous clients are accepted only on loopback addresses" in str(refused.value)
    assert "--allow-anonymous" in str(refused.value)


def test_anonymous_loopback_client_is_accepted() -> None:
    security = Security(Settings())
    assert security.authenticate(PeerSession(("127.0.0.1", 5000)), None) is ANONYMOUS  # type: ignore[arg-type]


def test_allow_anonymous_accepts_remote_clients() -> None:
    security = Security(Settings(allow_anonymous=True))
    assert security.authenticate(PeerSession(("192.0.2.10", 5000)), None) is ANONYMOUS  # type: ignore[arg-type]


def test_mtls_only_broker_refuses_a_session_without_a_verified_certificate(tmp_path: Any) -> None:
    session = PeerSession(("192.0.2.10", 5000))
    security = Security(Settings(tls_client_ca=str(tmp_path / "ca.pem")))
    with pytest.raises(FrameError) as refused:
        security.authenticate(session, None)  # type: ignore[arg-type]
    assert refused.value.code == ErrorCode.REJECTED_SETUP
    assert "no verified client certificate (this broker requires mTLS)" in str(refused.value)
    assert session.broker.stats["auth_failures"] == 1
    device = Principal("device-7", frozenset({"iot"}), source="mtls")
    assert security.authenticate(PeerSession(("192.0.2.10", 5000), device), None) is device  # type: ignore[arg-type]


def test_config_store_rules_are_laid_over_the_config_files() -> None:
    acl = {"devices": {"roles": ["iot"], "call": ["tls.*"]}, "ops": {"principals": ["ops"], "call": ["*"]}}
    security = Security(Settings(tls_client_ca="ca.pem", acl=acl))
    device = Principal("device-7", frozenset({"iot"}), source="mtls")
    ops = Principal("ops", source="jwt")
    security.set_rules({})  # a fresh config store: the file's rules stay
    assert security.access.can_call(device, "tls.greeter.hello")
    security.set_rules({"devices": parse_rule({"roles": ["iot"], "call": ["tls.readonly.*"]})})  # same name: replaces
    assert not security.access.can_call(device, "tls.greeter.hello")
    assert security.access.can_call(device, "tls.readonly.get")
    assert security.access.can_call(ops, "anything.at.all")  # the other file rule is untouched
