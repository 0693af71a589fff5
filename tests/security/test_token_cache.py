"""The verified-token cache inside ``JwtVerifier``: what a hit skips and what it still checks.

The end-to-end attacks on a real node are in ``tests/e2e_security/test_token_cache.py``; these
pin the bounds and the bookkeeping with an injected clock.
"""

from __future__ import annotations

import pytest

from broker.auth import JwtVerifier
from broker.auth.token_cache import MAX_CACHED_TOKEN_BYTES, TokenCache
from broker.security import Security
from broker.settings import Settings, SettingsError, from_env

from .conftest import NOW, KeyPair
from .test_jwt import claims, rejected, sign


class Clock:
    """A clock a test moves by hand."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def ed(keypairs: dict[str, KeyPair]) -> KeyPair:
    return keypairs["ed25519"]


def test_a_repeated_token_is_verified_once_and_counted(ed: KeyPair) -> None:
    verifier = JwtVerifier(ed.public_path, clock=lambda: NOW, cache_size=10)
    token = sign(ed, claims())
    for _ in range(3):
        assert verifier.verify(token).name == "alice"
    assert (verifier.cache.misses, verifier.cache.hits, len(verifier.cache)) == (1, 2, 1)


def test_a_hit_checks_expiry_and_revocation_again_and_drops_the_entry(ed: KeyPair) -> None:
    clock = Clock()
    verifier = JwtVerifier(ed.public_path, clock=clock, leeway=30, cache_size=10)
    token = sign(ed, claims(exp=int(NOW) + 60, jti="t-9"))
    verifier.verify(token)
    verifier.set_revoked(["t-9"])
    assert rejected(verifier, token) == "token id 't-9' has been revoked"
    assert len(verifier.cache) == 0
    verifier.set_revoked([])
    verifier.verify(token)
    clock.now = NOW + 60 + 30  # exp plus the leeway
    assert rejected(verifier, token).startswith("token expired at ")
    assert len(verifier.cache) == 0


def test_refused_tokens_are_not_stored(ed: KeyPair, stranger: KeyPair) -> None:
    verifier = JwtVerifier(ed.public_path, clock=lambda: NOW, cache_size=10)
    rejected(verifier, sign(stranger, claims()))
    rejected(verifier, sign(ed, claims(exp=int(NOW) - 100)))
    assert len(verifier.cache) == 0


def test_new_stored_keys_empty_the_cache(ed: KeyPair) -> None:
    verifier = JwtVerifier(ed.public_path, clock=lambda: NOW, cache_size=10)
    verifier.verify(sign(ed, claims()))
    verifier.set_extra_keys({})
    assert len(verifier.cache) == 0


def test_the_least_recently_used_token_goes_first() -> None:
    cache = TokenCache(2)
    a, b, c = (TokenCache.key(name) for name in ("a.b.c", "d.e.f", "g.h.i"))
    cache.put(a, {"sub": "a"})
    cache.put(b, {"sub": "b"})
    assert cache.get(a) == {"sub": "a"}  # a is now the most recent
    cache.put(c, {"sub": "c"})
    assert cache.get(b) is None and cache.get(a) is not None and cache.get(c) is not None
    assert len(cache) == 2


def test_size_zero_stores_nothing_and_long_tokens_are_never_stored() -> None:
    off = TokenCache(0)
    key = TokenCache.key("a.b.c")
    off.put(key, {"sub": "a"})
    assert off.get(key) is None and (off.hits, off.misses, len(off)) == (0, 0, 0)
    assert TokenCache.key("x" * (MAX_CACHED_TOKEN_BYTES + 1)) is None
    with pytest.raises(ValueError):
        TokenCache(-1)


def test_the_setting_comes_from_the_environment_and_is_validated(ed: KeyPair) -> None:
    sized = Settings(jwt_keys=str(ed.public_path), **from_env({"RSBROKER_JWT_CACHE_SIZE": "3"}))
    sized.validate()
    security = Security(sized)
    assert security.verifier is not None and security.verifier.cache.max_entries == 3
    with pytest.raises(SettingsError, match="jwt_cache_size must be 0"):
        Settings(jwt_cache_size=-1).validate()
