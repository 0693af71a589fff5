"""Typed configuration keys and their validators.

Every key has a prefix that decides its type:

=============  =====================================================================
``app/...``    any JSON value, for operators' own use
``services/S`` load-balancing policy of service S:
               ``{"policy": "round_robin"|"least_outstanding"|"weighted",
               "weights": {instance: int >= 0}, "prefer_local": bool,
               "deadline_ms": int, "idempotent": bool, "retries": int,
               "forward_principal": bool}`` (each optional)
``keys/KID``   a JWT verification key: a public JWK (object), ``{"pem": PEM}`` or PEM text
``revoked/J``  a revoked token id: ``{"expires_at": unix seconds}``
``limits/N``   a rate limit: ``{"principal": glob | "service": name, "rate": per second,
               "burst": requests}`` (``broker.traffic.RateLimit.from_obj``)
``acl/NAME``   an access rule: ``{"principals": [glob], "roles": [str],
               "register": [glob], "call": [glob]}`` (missing lists mean empty)
=============  =====================================================================

Validators are pure functions of (name, value) that raise ``ValidationError`` with a
message a human can act on. They run before a proposal enters the log and again when it
is applied, on every node, so they must be deterministic (no clock, no network).

One validator per value: access rules, service policies and keys are checked by the very
parsers the node applies them with (``broker.auth.acl.parse_rule``,
``broker.registry.ServicePolicy.from_obj``, ``broker.auth.keys.key_from_config``), which
also read the config file; a value the store accepts is a value every node uses.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from broker.auth.acl import parse_rule
from broker.auth.keys import key_from_config
from broker.registry import ServicePolicy
from broker.traffic import RateLimit

__all__ = ["KeyValidator", "ValidationError", "Validators", "validate_acl_rule"]

#: (name after the prefix, value) -> None, raising ValidationError if the value is bad.
KeyValidator = Callable[[str, Any], None]

MAX_KEY_LENGTH = 512


class ValidationError(ValueError):
    """A config key or value was refused; the message says what is wrong."""


def _require_dict(value: Any, what: str, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValidationError(f"{what} must be a JSON object, got {type(value).__name__}")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise ValidationError(f"{what}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
    return value


def validate_acl_rule(name: str, value: Any) -> None:
    """An access rule, parsed by the node's own parser (``broker.auth.acl.parse_rule``)."""
    try:
        parse_rule(value)
    except ValueError as exc:
        raise ValidationError(f"acl rule '{name}': {exc}") from None


def validate_service_policy(name: str, value: Any) -> None:
    """A service policy, parsed as the config file's are (``ServicePolicy.from_obj``)."""
    try:
        ServicePolicy.from_obj(value)
    except ValueError as exc:
        raise ValidationError(f"policy of service '{name}': {exc}") from None


def validate_rate_limit(name: str, value: Any) -> None:
    """A rate limit, parsed as the config file's are (``RateLimit.from_obj``)."""
    try:
        RateLimit.from_obj(name, value)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


def validate_public_key(name: str, value: Any) -> None:
    """A JWT key, loaded as the node loads it (``key_from_config``: JWK, ``{"pem"}`` or PEM)."""
    try:
        key_from_config(name, value)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


def validate_revocation(name: str, value: Any) -> None:
    what = f"revocation '{name}'"
    entry = _require_dict(value, what, {"expires_at"})
    expires = entry.get("expires_at")
    if isinstance(expires, bool) or not isinstance(expires, (int, float)) or not math.isfinite(expires) or expires < 0:
        raise ValidationError(f"{what}: 'expires_at' must be unix seconds (a number >= 0)")


def validate_app_value(name: str, value: Any) -> None:
    _check_json(value, f"app value '{name}'", depth=0)


def _check_json(value: Any, what: str, depth: int) -> None:
    if depth > 64:
        raise ValidationError(f"{what}: nested deeper than 64 levels")
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationError(f"{what}: NaN and infinities are not JSON")
        return
    if isinstance(value, list):
        for item in value:
            _check_json(item, what, depth + 1)
        return
    if isinstance(value, dict):
        for k, item in value.items():
            if not isinstance(k, str):
                raise ValidationError(f"{what}: object keys must be strings")
            _check_json(item, what, depth + 1)
        return
    raise ValidationError(f"{what}: {type(value).__name__} is not a JSON value")


class Validators:
    """Prefix -> validator table; ``check(key, value)`` refuses unknown prefixes and bad values."""

    def __init__(self, acl_validator: KeyValidator = validate_acl_rule) -> None:
        self._by_prefix: dict[str, KeyValidator] = {
            "app": validate_app_value,
            "services": validate_service_policy,
            "limits": validate_rate_limit,
            "keys": validate_public_key,
            "revoked": validate_revocation,
            "acl": acl_validator,
        }

    @property
    def prefixes(self) -> tuple[str, ...]:
        return tuple(self._by_prefix)

    def check_key(self, key: str) -> tuple[str, str]:
        """Split ``prefix/name`` and check its shape; return (prefix, name)."""
        if not isinstance(key, str) or not key:
            raise ValidationError("a config key must be a non-empty string")
        if len(key) > MAX_KEY_LENGTH:
            raise ValidationError(f"config key longer than {MAX_KEY_LENGTH} characters")
        if any(ord(c) < 0x20 or c == "\x7f" for c in key):
            raise ValidationError("config key contains control characters")
        prefix, sep, name = key.partition("/")
        if not sep or not name:
            raise ValidationError(f"config key '{key}' must look like <prefix>/<name>")
        if prefix not in self._by_prefix:
            raise ValidationError(
                f"unknown config prefix '{prefix}/'; known: {', '.join(p + '/' for p in self._by_prefix)}"
            )
        return prefix, name

    def check(self, key: str, value: Any) -> None:
        prefix, name = self.check_key(key)
        _check_json(value, f"value of '{key}'", depth=0)
        self._by_prefix[prefix](name, value)
