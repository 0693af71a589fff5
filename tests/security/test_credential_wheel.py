"""Credential expiry rides the relay's deadline wheel (issue 13: idle CPU with authentication on).

A real relay (``Broker`` with ``--jwt-keys``) and real sessions fed real SETUP frames with
bearer tokens; only the sockets are lists (``MemorySession``) and the clocks are set by
the test. ``Security.stats["credential_checks"]`` counts every principal looked at: an
idle node must look at the connections whose tokens run out, not at every connection on
every housekeeping pass (19,000 devices x 4 passes a second before).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from broker.auth.certs import write_keypair
from broker.auth.tokens import load_private_key, mint_token
from broker.frames import ErrorCode, FrameType
from broker.relay import HOUSEKEEPING_INTERVAL_S, Broker
from broker.settings import Settings
from tests.e2e_security.clients import auth_setup
from tests.support.memory_session import MemorySession

IDLE = 200
START = 1_000_000.0  # the wall clock the tokens are minted against


def _node(tmp_path: Path, wall: list[float], mono: list[float], leeway_s: float = 0.0) -> tuple[Broker, object]:
    files = write_keypair("ed25519", tmp_path)
    loop = asyncio.new_event_loop()
    broker = Broker(Settings(jwt_keys=str(files.cert), jwt_leeway_s=leeway_s), loop)
    broker.clock = lambda: mono[0]
    broker.security.clock = lambda: wall[0]
    assert broker.security.verifier is not None
    broker.security.verifier._clock = lambda: wall[0]  # admission by the same test clock
    return broker, load_private_key(files.key)


def _connect(broker: Broker, key: object, name: str, ttl: float, port: int, jti: str | None = None) -> MemorySession:
    session = MemorySession(broker, port)
    session.feed(auth_setup(mint_token(key, sub=name, roles=("admin",), ttl=ttl, now=START, jti=jti)))  # type: ignore[arg-type]
    assert session.principal is not None and session.principal.name == name, session.take()
    return session


def _passes(broker: Broker, wall: list[float], mono: list[float], seconds: float) -> None:
    """Housekeeping passes, as the relay's loop runs them, over ``seconds`` of both clocks."""
    for _ in range(int(seconds / HOUSEKEEPING_INTERVAL_S)):
        wall[0] += HOUSEKEEPING_INTERVAL_S
        mono[0] += HOUSEKEEPING_INTERVAL_S
        broker.housekeeping(mono[0])
        broker.security.enforce(broker)


def _closed_by(session: MemorySession, text: str) -> bool:
    return any(f.type == FrameType.ERROR and f.error[0] == ErrorCode.CONNECTION_CLOSE and text in f.error[1]
               for f in session.take())


def test_an_idle_node_checks_only_the_expiring_connection(tmp_path: Path) -> None:
    wall, mono = [START], [100.0]
    broker, key = _node(tmp_path, wall, mono)
    idle = [_connect(broker, key, f"device-{i}", 3600, 40000 + i) for i in range(IDLE)]
    short = _connect(broker, key, "short-lived", 10, 39999)
    checks = broker.security.stats["credential_checks"]
    _passes(broker, wall, mono, 9.5)
    assert not short.closing, "closed before its token expired"
    _passes(broker, wall, mono, 1.0)
    assert short.closing and _closed_by(short, "token of 'short-lived' expired at ")
    assert broker.stats["credential_closes"] == 1
    # each connection is looked at when the wheel visits it anyway (its SETUP deadline here,
    # each keepalive lifetime later): 201 in 10.5 s, where a scan looked at 201 per pass (8,442)
    assert broker.security.stats["credential_checks"] - checks <= IDLE + 1 + 5
    checks = broker.security.stats["credential_checks"]
    _passes(broker, wall, mono, 30.0)
    assert not any(s.closing for s in idle)
    assert broker.security.stats["credential_checks"] == checks, "idle connections were looked at again"


def test_the_leeway_delays_the_close(tmp_path: Path) -> None:
    wall, mono = [START], [100.0]
    broker, key = _node(tmp_path, wall, mono, leeway_s=5.0)
    session = _connect(broker, key, "lenient", 2, 40000)
    _passes(broker, wall, mono, 6.5)
    assert not session.closing, "closed inside the leeway that admitted it"
    _passes(broker, wall, mono, 1.0)
    assert session.closing and _closed_by(session, "token of 'lenient' expired at ")


def test_a_revocation_closes_its_connection_with_one_pass(tmp_path: Path) -> None:
    wall, mono = [START], [100.0]
    broker, key = _node(tmp_path, wall, mono)
    idle = [_connect(broker, key, f"device-{i}", 3600, 40000 + i) for i in range(IDLE)]
    revoked = _connect(broker, key, "revocable", 3600, 39999, jti="bad-jti")
    _passes(broker, wall, mono, 15.0)  # past the wheel's SETUP-deadline visit of each
    before = broker.security.stats["credential_checks"]
    broker.security.set_revoked(["bad-jti"])
    _passes(broker, wall, mono, 1.0)
    assert revoked.closing and _closed_by(revoked, "token of 'revocable' has been revoked")
    assert not any(s.closing for s in idle)
    # one pass over the connections for the change, none after it
    assert broker.security.stats["credential_checks"] - before == IDLE + 1
    _passes(broker, wall, mono, 10.0)
    assert broker.security.stats["credential_checks"] - before == IDLE + 1
