"""A bounded cache of tokens whose signature was verified, so a fleet's token is checked once.

Signature verification is most of what a SETUP with a JWT costs the node (about 0.4 ms of
CPU against 0.085 ms for the rest of a connect), and fleets send the same token bytes again
and again: a device class shares a few tokens, and every device reconnects with the same
token in a fail-over storm. This cache saves only that step. What it keeps is the payload's
claims, decoded after the signature matched; the verifier checks those claims again on every
hit (expiry with its leeway, not-before, lifetime, issuer, audience, revocation), so a hit can
never admit what a full verification would refuse.

Why it is safe:

* The key is SHA-256 of the exact token text: a token with any byte changed (a tampered
  signature or payload) is another key, a miss, and gets the full verification.
* Only verified tokens are stored; a refused token leaves no trace an attacker could use.
* The verifier empties the cache whenever its keys change (key file re-read, config store),
  so nothing verified with a key that is gone outlives it.
* Size is bounded twice: at most ``max_entries`` entries, least recently used first out, and
  tokens over :data:`MAX_CACHED_TOKEN_BYTES` are verified every time instead of stored.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any

__all__ = ["MAX_CACHED_TOKEN_BYTES", "TokenCache"]

#: Tokens longer than this are never stored, so one entry's claims stay small; real ones are well under.
MAX_CACHED_TOKEN_BYTES = 4096


class TokenCache:
    """SHA-256 of a verified token → its verified claims, LRU-bounded; ``max_entries`` 0: off.

    ``hits`` and ``misses`` count lookups (exported as ``rsbroker_jwt_cache_total{result}``);
    a cache that is off counts nothing.
    """

    def __init__(self, max_entries: int) -> None:
        if max_entries < 0:
            raise ValueError("max_entries must be 0 (off) or positive")
        self.max_entries = max_entries
        self._entries: OrderedDict[bytes, dict[str, Any]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def key(token: str) -> bytes | None:
        """The cache key of ``token``, or None when the cache must not hold it (too long)."""
        if len(token) > MAX_CACHED_TOKEN_BYTES:
            return None
        return hashlib.sha256(token.encode("ascii")).digest()

    def get(self, key: bytes | None) -> dict[str, Any] | None:
        """The claims stored under ``key`` (a hit makes it the most recently used), or None."""
        if not self.max_entries or key is None:
            return None
        claims = self._entries.get(key)
        if claims is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(key)
        return claims

    def put(self, key: bytes | None, claims: dict[str, Any]) -> None:
        """Remember ``claims`` of a token whose signature and claims were just verified."""
        if not self.max_entries or key is None:
            return
        self._entries[key] = claims
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def discard(self, key: bytes | None) -> None:
        """Forget one token (its claims no longer pass), so a stale entry does not hold a slot."""
        if key is not None:
            self._entries.pop(key, None)

    def clear(self) -> None:
        """Forget every token: the keys that verified them changed."""
        self._entries.clear()
