"""Minting development tokens (``rsbroker token``) from a private key.

Production tokens come from an identity provider; this exists so an operator can try a
secured broker, and so tests and benchmarks can make real tokens. The algorithm follows
from the key type (``keys.signing_algorithm``), so a token always fits the matching public
key the broker holds.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization

from .keys import PrivateKey, algorithms_for_key, signing_algorithm

__all__ = ["load_private_key", "mint_token"]


def load_private_key(path: str | os.PathLike[str]) -> PrivateKey:
    """An unencrypted PEM private key (RSA, EC or EdDSA) from ``path``."""
    data = Path(path).read_bytes()
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: not an unencrypted PEM private key ({exc})") from None
    algorithms_for_key(key)  # refuses DSA, DH, X25519 and unknown curves with a clear message
    return key  # type: ignore[return-value]


def mint_token(
    private_key: PrivateKey,
    *,
    sub: str,
    roles: Iterable[str] = (),
    ttl: float | None = 3600,
    issuer: str | None = None,
    audience: str | None = None,
    kid: str | None = None,
    jti: str | None = None,
    now: float | None = None,
    extra_claims: Mapping[str, Any] | None = None,
) -> str:
    """A signed JWT for ``sub`` with ``roles``, valid from ``now`` for ``ttl`` seconds (None: forever).

    A fresh random ``jti`` is added unless given, so any minted token can be revoked.
    """
    issued = time.time() if now is None else now
    claims: dict[str, Any] = dict(extra_claims or {})
    claims.update(sub=sub, roles=list(roles), iat=int(issued), jti=jti or uuid.uuid4().hex)
    if ttl is not None:
        claims["exp"] = int(issued + ttl)
    if issuer is not None:
        claims["iss"] = issuer
    if audience is not None:
        claims["aud"] = audience
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(claims, private_key, algorithm=signing_algorithm(private_key), headers=headers)
