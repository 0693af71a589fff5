"""``max_ttl`` of the JWT verifier (``--jwt-max-ttl-s``) against a one-line reference rule.

Reference: a token is refused for its lifetime exactly when ``exp - min(iat, now)`` (``now``
when there is no ``iat``) exceeds ``max_ttl + leeway``. The verifier's clock is fixed.
"""

from __future__ import annotations

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.auth import AuthError, JwtVerifier

from .conftest import NOW, KeyPair

MAX_TTL = 86_400.0
LEEWAY = 30.0


def verifier(pair: KeyPair) -> JwtVerifier:
    return JwtVerifier(pair.public_path, leeway=LEEWAY, max_ttl=MAX_TTL, clock=lambda: NOW)


def token(pair: KeyPair, exp: int, iat: int | None) -> str:
    body = {"sub": "alice", "exp": exp, **({"iat": iat} if iat is not None else {})}
    return jwt.encode(body, pair.private, algorithm="EdDSA")


@settings(max_examples=200, deadline=None)
@given(
    exp_in=st.integers(min_value=1, max_value=10 * 86_400),
    iat_offset=st.one_of(st.none(), st.integers(min_value=-10 * 86_400, max_value=10 * 86_400)),
)
def test_lifetime_decision_matches_the_reference(keypairs: dict[str, KeyPair], exp_in: int, iat_offset: int | None) -> None:
    pair = keypairs["ed25519"]
    exp = int(NOW) + exp_in
    iat = None if iat_offset is None else int(NOW) + iat_offset
    start = NOW if iat is None else min(iat, NOW)
    too_long = exp - start > MAX_TTL + LEEWAY
    try:
        verifier(pair).verify(token(pair, exp, iat))
        refused = ""
    except AuthError as exc:
        refused = exc.reason
    assert ("(--jwt-max-ttl-s)" in refused) is too_long, (exp - start, refused)
    if not too_long:
        assert refused == "", refused  # nothing else is wrong with these tokens


def test_max_ttl_must_be_positive(keypairs: dict[str, KeyPair]) -> None:
    with pytest.raises(ValueError, match="max_ttl must be a positive number of seconds"):
        JwtVerifier(keypairs["ed25519"].public_path, max_ttl=0)
