"""Verify a bearer JWT from SETUP and turn it into a :class:`Principal`.

Order of checks, and why:

1. Shape and size, before any decoding — hostile input is cut off cheaply.
2. The header's ``alg`` against the asymmetric allow-list — ``none`` and every HMAC
   algorithm are refused before a key is even looked at (see ``keys.py``).
3. The signature, with pyjwt, against the configured keys that fit the token's ``kid``
   and ``alg``. Nothing in the payload is trusted before this step.
4. The claims — expiry, lifetime, not-before, issuer, audience, subject, roles, revocation — checked
   here rather than by pyjwt so that the clock is injectable (tests never depend on the
   wall clock) and every failure has its own message a person can act on.

Header fields other than ``alg`` and ``kid`` (``jwk``, ``jku``, ``x5c``, ``x5u``) are
ignored: a token never brings its own key; keys come only from configuration.

Messages never contain the token (see ``errors.py``). Keys come from a file that is
re-read when it changes and from the cluster config store (``set_extra_keys``); revoked
token ids (``jti``) from the config store (``set_revoked``). Both apply to the next SETUP.

A token whose signature was verified once is remembered (``token_cache.TokenCache``, keyed
by SHA-256 of its exact text) and not verified again; its claims go through step 4 on every
use, and the cache is emptied whenever the keys change.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import jwt

from .errors import AuthError
from .keys import KeyFile, VerificationKey, key_from_config
from .metadata import NO_TOKEN, bearer_token
from .principal import Principal
from .token_cache import TokenCache

__all__ = ["ALLOWED_ALGORITHMS", "MAX_TOKEN_BYTES", "JwtVerifier"]

log = logging.getLogger(__name__)

#: Every algorithm any loadable key may verify. HMAC and ``none`` are deliberately absent.
ALLOWED_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
#: Tokens above this size are refused unparsed; real tokens are well under 2 KiB.
MAX_TOKEN_BYTES = 16 * 1024
_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_SHOWN_ALG = 32


def _iso(ts: float) -> str:
    """Epoch seconds as an ISO-8601 UTC instant, e.g. ``2026-11-26T14:00:00Z``."""
    try:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return f"{ts:.0f} (epoch seconds)"


def _json_object(raw: bytes, part: str) -> dict[str, Any]:
    """Parse one part of a token; it must be a JSON object."""
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise AuthError(f"malformed token: the {part} is not JSON") from None
    if not isinstance(value, dict):
        raise AuthError(f"malformed token: the {part} is not a JSON object")
    return value


def _header(token: str) -> dict[str, Any]:
    """The unverified JOSE header (only ``alg`` and ``kid`` are ever read from it)."""
    segment = token.split(".", 1)[0]
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise AuthError("malformed token: the header is not valid base64url") from None
    return _json_object(raw, "header")


def _without_token(message: str, token: str) -> str:
    """pyjwt's wording of a decoding failure, unless it quotes any part of the token."""
    if any(len(part) >= 8 and part in message for part in token.split(".")):
        return "the token could not be decoded"
    return message


def _numeric(claims: Mapping[str, Any], name: str) -> float | None:
    """A NumericDate claim (RFC 7519 §2), or None when absent."""
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise AuthError(f"malformed token: the {name!r} claim must be a number of seconds since the epoch")
    return float(value)


class JwtVerifier:
    """Checks bearer JWTs against configured public keys and policy; one per broker node.

    ``issuer``/``audience``: when set, tokens must carry exactly this ``iss`` / include this
    ``aud``. ``leeway``: seconds of clock skew tolerated on ``exp`` and ``nbf``.
    ``require_exp``: refuse tokens that never expire. ``max_ttl``: refuse tokens valid for
    longer than this many seconds, counted from ``iat`` or from now, whichever is earlier (a
    token claiming a future ``iat`` cannot stretch its life); None: no bound.
    ``cache_size``: verified tokens remembered so their signature is not checked again
    (0: every token is verified every time). ``clock``: epoch seconds, injectable.
    """

    def __init__(
        self,
        keys_file: str | os.PathLike[str] | None = None,
        *,
        issuer: str | None = None,
        audience: str | None = None,
        leeway: float = 30.0,
        require_exp: bool = True,
        max_ttl: float | None = None,
        cache_size: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if leeway < 0:
            raise ValueError("leeway must be >= 0 seconds")
        if max_ttl is not None and max_ttl <= 0:
            raise ValueError("max_ttl must be a positive number of seconds")
        self._file = KeyFile(keys_file) if keys_file is not None else None
        self.issuer = issuer
        self.audience = audience
        self.leeway = float(leeway)
        self.require_exp = require_exp
        self.max_ttl = max_ttl
        self._clock = clock
        self._extra: tuple[VerificationKey, ...] = ()
        self._revoked: frozenset[str] = frozenset()
        self._jws = jwt.PyJWS()
        self.cache = TokenCache(cache_size)

    # -- live configuration -------------------------------------------------------------

    def reload(self) -> bool:
        """Re-read the key file if it changed; ``verify`` does this itself on every call.

        New keys empty the token cache: a token verified with a key that is gone must be refused.
        """
        changed = self._file.refresh() if self._file is not None else False
        if changed:
            self.cache.clear()
        return changed

    def set_extra_keys(self, entries: Mapping[str, object]) -> list[str]:
        """Replace the keys from the config store (``{kid: stored value}``, see ``key_from_config``).

        Entries that cannot be used are skipped, logged and returned as messages, so one bad
        entry cannot lock every client out; the admin API should refuse them on write.
        """
        keys: list[VerificationKey] = []
        problems: list[str] = []
        for kid, value in entries.items():
            try:
                keys.append(key_from_config(kid, value))
            except ValueError as exc:
                problems.append(str(exc))
                log.warning("ignoring JWT key from the config store: %s", exc)
        self._extra = tuple(keys)
        self.cache.clear()  # a key removed or replaced must not keep its tokens admitted
        return problems

    def set_revoked(self, token_ids: Iterable[str]) -> None:
        """Replace the set of revoked token ids (``jti``); applies to the next verification."""
        self._revoked = frozenset(token_ids)

    def is_revoked(self, principal: Principal) -> bool:
        """Whether a connection's principal carries a token id revoked since it connected."""
        jti = principal.claims.get("jti")
        return isinstance(jti, str) and jti in self._revoked

    @property
    def keys(self) -> tuple[VerificationKey, ...]:
        """Every key a token may currently be verified with (file first, then config store)."""
        return (self._file.keys if self._file is not None else ()) + self._extra

    # -- verification -------------------------------------------------------------------

    def verify_setup(self, auth_metadata: bytes | None) -> Principal:
        """Principal for the ``message/x.rsocket.authentication.v0`` entry of a SETUP (None: absent)."""
        return self.verify(bearer_token(auth_metadata))

    def verify(self, token: str | None) -> Principal:
        """Principal for a bearer token, or AuthError saying why it is refused."""
        if not token:
            raise AuthError(NO_TOKEN)
        if len(token) > MAX_TOKEN_BYTES:
            raise AuthError(f"malformed token: {len(token)} bytes is over the {MAX_TOKEN_BYTES}-byte limit")
        if not _SHAPE.fullmatch(token):
            raise AuthError("malformed token: expected a JWT (three base64url parts separated by dots)")
        self.reload()
        key = self.cache.key(token)
        cached = self.cache.get(key)
        if cached is not None:
            try:
                return self._principal(cached)  # every claim checked again: expiry, revocation, ...
            except AuthError:
                self.cache.discard(key)
                raise
        header = _header(token)
        alg = header.get("alg")
        if not isinstance(alg, str):
            raise AuthError("malformed token: the header has no 'alg'")
        if alg not in ALLOWED_ALGORITHMS:
            raise AuthError(f"algorithm {alg[:_SHOWN_ALG]!r} is not allowed")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise AuthError("malformed token: the header's 'kid' is not a string")
        payload = self._verified_payload(token, alg, kid)
        claims = _json_object(payload, "payload")
        principal = self._principal(claims)
        self.cache.put(key, claims)
        return principal

    def _verified_payload(self, token: str, alg: str, kid: str | None) -> bytes:
        """The payload bytes once a fitting key verifies the signature."""
        keys = self.keys
        if not keys:
            raise AuthError("no JWT verification keys are configured")
        candidates = [k for k in keys if kid is None or k.kid is None or k.kid == kid]
        if kid is not None and not candidates:
            raise AuthError(f"no configured key has id {kid[:64]!r}")
        fitting = [k for k in candidates if alg in k.algorithms]
        if not fitting:
            where = f" with id {kid[:64]!r}" if kid is not None else ""
            raise AuthError(f"algorithm {alg!r} does not fit any configured key{where}")
        for candidate in fitting:
            try:
                decoded = self._jws.decode_complete(token, candidate.key, algorithms=[alg])
            except jwt.InvalidSignatureError:
                continue
            except jwt.InvalidTokenError as exc:
                raise AuthError(f"malformed token: {_without_token(str(exc), token)}") from None
            return bytes(decoded["payload"])
        raise AuthError("signature does not match any configured key")

    def _principal(self, claims: dict[str, Any]) -> Principal:
        """Check the verified claims against the clock and policy; build the principal."""
        now = self._clock()
        exp = _numeric(claims, "exp")
        if exp is None and self.require_exp:
            raise AuthError("token has no 'exp' claim; tokens without an expiry are not accepted")
        if exp is not None and now >= exp + self.leeway:
            raise AuthError(f"token expired at {_iso(exp)}")
        nbf = _numeric(claims, "nbf")
        if nbf is not None and now + self.leeway < nbf:
            raise AuthError(f"token not valid before {_iso(nbf)}")
        self._check_lifetime(exp, _numeric(claims, "iat"), now)
        self._check_issuer(claims.get("iss"))
        self._check_audience(claims.get("aud"))
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise AuthError("token has no 'sub' claim (a non-empty string naming the principal)")
        roles = claims.get("roles", [])
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise AuthError("malformed token: the 'roles' claim must be a list of strings")
        jti = claims.get("jti")
        if isinstance(jti, str) and jti in self._revoked:
            raise AuthError(f"token id {jti[:64]!r} has been revoked")
        return Principal(name=sub, roles=frozenset(roles), expires_at=exp, claims=claims, source="jwt")

    def _check_lifetime(self, exp: float | None, iat: float | None, now: float) -> None:
        """A stolen long-lived token is a long-lived break-in: bound what a token may claim."""
        if exp is None or self.max_ttl is None:
            return
        lifetime = exp - (now if iat is None else min(iat, now))
        if lifetime > self.max_ttl + self.leeway:
            raise AuthError(
                f"token lifetime of {lifetime:.0f} s exceeds the limit of {self.max_ttl:.0f} s (--jwt-max-ttl-s)"
            )

    def _check_issuer(self, iss: object) -> None:
        if self.issuer is None:
            return
        if iss is None:
            raise AuthError(f"token has no 'iss' claim (expected issuer {self.issuer!r})")
        if iss != self.issuer:
            shown = iss[:128] if isinstance(iss, str) else iss
            raise AuthError(f"wrong issuer {shown!r} (expected {self.issuer!r})")

    def _check_audience(self, aud: object) -> None:
        # RFC 7519 §4.1.3: a recipient that does not identify with a present 'aud' MUST reject.
        if aud is None:
            if self.audience is not None:
                raise AuthError(f"token has no 'aud' claim (expected audience {self.audience!r})")
            return
        audiences = [aud] if isinstance(aud, str) else aud
        if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
            raise AuthError("malformed token: the 'aud' claim must be a string or a list of strings")
        if self.audience is None:
            raise AuthError(
                f"token is for audience {audiences[:8]!r} but this broker has no audience configured (--jwt-audience)"
            )
        if self.audience not in audiences:
            raise AuthError(f"wrong audience {audiences[:8]!r} (expected {self.audience!r})")
