"""Public keys that may sign tokens, and the algorithms each one may be used with.

The algorithm a token claims in its header is attacker-controlled. The classic JWT
attacks both abuse that: ``alg: none`` (no signature at all) and ``HS256`` with the
server's *public* key used as the HMAC secret. Both are closed here structurally: only
asymmetric public keys can be loaded (symmetric and private keys are refused), and every
key carries the short list of algorithms that fit its type — an RSA key never verifies
an ECDSA or HMAC signature, and a JWK's own ``alg`` narrows the list further.

Sources: a PEM file (one or more public keys or certificates), a JWKS file, and key
entries from the cluster config store (``keys/<kid>``). :class:`KeyFile` re-reads its
file when it changes, so keys can be rotated without a restart.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

__all__ = [
    "KeyFile",
    "PrivateKey",
    "PublicKey",
    "VerificationKey",
    "algorithms_for_key",
    "key_from_config",
    "load_jwks",
    "load_key_file",
    "load_public_pem",
    "signing_algorithm",
]

log = logging.getLogger(__name__)

PublicKey: TypeAlias = (
    rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
)
PrivateKey: TypeAlias = (
    rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey
)

#: Below this an RSA signature is forgeable with public effort (NIST SP 800-131A).
MIN_RSA_BITS = 2048
_RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
#: ECDSA algorithm per curve (RFC 7518 §3.4): the curve fixes the hash.
_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----.+?-----END \1-----", re.DOTALL)


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """A public key, its key id (None: matches tokens with any or no ``kid``), its algorithms."""

    kid: str | None
    key: PublicKey
    algorithms: frozenset[str]
    origin: str


def algorithms_for_key(key: object) -> frozenset[str]:
    """The JWS algorithms a public or private key of this type may verify or sign with."""
    if isinstance(key, (rsa.RSAPublicKey, rsa.RSAPrivateKey)):
        return _RSA_ALGORITHMS
    if isinstance(key, (ec.EllipticCurvePublicKey, ec.EllipticCurvePrivateKey)):
        alg = _EC_ALGORITHMS.get(key.curve.name)
        if alg is None:
            raise ValueError(f"unsupported elliptic curve {key.curve.name!r} (use P-256, P-384 or P-521)")
        return frozenset({alg})
    if isinstance(
        key,
        (ed25519.Ed25519PublicKey, ed25519.Ed25519PrivateKey, ed448.Ed448PublicKey, ed448.Ed448PrivateKey),
    ):
        return frozenset({"EdDSA"})
    raise ValueError(
        f"unsupported key type {type(key).__name__}; use RSA, EC (P-256/384/521) or Ed25519/Ed448"
    )


def signing_algorithm(private_key: PrivateKey) -> str:
    """The one algorithm a token minted with ``private_key`` uses (RS256, ES256/384/512, EdDSA)."""
    if isinstance(private_key, rsa.RSAPrivateKey):
        return "RS256"
    (alg,) = algorithms_for_key(private_key)
    return alg


def _checked(kid: str | None, key: object, origin: str, only: str | None = None) -> VerificationKey:
    """Wrap ``key`` after refusing anything too weak or not a public key."""
    where = f"{origin} key {kid!r}" if kid else origin
    if not isinstance(
        key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)
    ):
        raise ValueError(f"{where}: not an RSA, EC or EdDSA public key ({type(key).__name__})")
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        raise ValueError(f"{where}: RSA key has {key.key_size} bits, at least {MIN_RSA_BITS} are required")
    try:
        algorithms = algorithms_for_key(key)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    if only is not None:
        if only not in algorithms:
            raise ValueError(f"{where}: declared alg {only!r} does not fit a {sorted(algorithms)} key")
        algorithms = frozenset({only})
    return VerificationKey(kid, key, algorithms, origin)


def load_public_pem(data: bytes, origin: str) -> list[VerificationKey]:
    """Every public key and certificate in a PEM bundle; private keys are refused."""
    keys: list[VerificationKey] = []
    for match in _PEM_BLOCK.finditer(data):
        label = match.group(1).decode("ascii")
        block = match.group(0)
        if "PRIVATE" in label:
            raise ValueError(
                f"{origin}: holds a private key ({label}); give the broker only the public key "
                "(`rsbroker certs keypair` writes both)"
            )
        try:
            if label == "CERTIFICATE":
                key: object = x509.load_pem_x509_certificate(block).public_key()
            else:
                key = serialization.load_pem_public_key(block)
        except ValueError as exc:
            raise ValueError(f"{origin}: unreadable {label} block: {exc}") from None
        keys.append(_checked(None, key, origin))
    if not keys:
        raise ValueError(f"{origin}: no PEM public key or certificate found")
    return keys


def _key_from_jwk(jwk: Mapping[str, Any], origin: str, kid: str | None) -> VerificationKey:
    kty = jwk.get("kty")
    name = f"{origin} key {kid!r}" if kid else origin
    if kty == "oct":
        raise ValueError(
            f"{name}: symmetric (kty 'oct') keys are not accepted; use RSA, EC or OKP public keys"
        )
    if "d" in jwk:
        raise ValueError(f"{name}: is a private JWK; publish only the public part")
    try:
        key = jwt.PyJWK(dict(jwk)).key
    except jwt.PyJWTError as exc:
        raise ValueError(f"{name}: unusable JWK: {exc}") from None
    only = jwk.get("alg")
    if only is not None and not isinstance(only, str):
        raise ValueError(f"{name}: 'alg' must be a string")
    return _checked(kid, key, origin, only)


def load_jwks(document: object, origin: str) -> list[VerificationKey]:
    """The signature keys of a JWKS document (``{"keys": [...]}``); ``use: enc`` keys are skipped."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError(f"{origin}: a JWKS must be a JSON object with a 'keys' list")
    keys: list[VerificationKey] = []
    for index, jwk in enumerate(document["keys"]):
        if not isinstance(jwk, dict):
            raise ValueError(f"{origin}: keys[{index}] is not a JSON object")
        if jwk.get("use", "sig") != "sig":
            continue
        kid = jwk.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise ValueError(f"{origin}: keys[{index}] has a non-string 'kid'")
        keys.append(_key_from_jwk(jwk, origin, kid))
    if not keys:
        raise ValueError(f"{origin}: the JWKS holds no signature keys")
    return keys


def load_key_file(path: str | os.PathLike[str]) -> list[VerificationKey]:
    """Keys from a PEM file or a JWKS file (recognised by its first non-blank byte ``{``)."""
    origin = str(path)
    data = Path(path).read_bytes()
    if data.lstrip().startswith(b"{"):
        try:
            document = json.loads(data)
        except ValueError as exc:
            raise ValueError(f"{origin}: not valid JSON: {exc}") from None
        return load_jwks(document, origin)
    return load_public_pem(data, origin)


def key_from_config(kid: str, value: object) -> VerificationKey:
    """A key stored in the config store under ``keys/<kid>``.

    ``value`` is a public JWK (a JSON object with ``kty``), ``{"pem": "<PEM text>"}`` or the
    PEM text itself. The entry's name is the key id, whatever a JWK's own ``kid`` says,
    so a token names the key the operator stored.
    """
    origin = f"config keys/{kid}"
    if isinstance(value, dict) and "kty" in value:
        return _key_from_jwk(value, "config", kid)
    pem = value.get("pem") if isinstance(value, dict) else value
    if not isinstance(pem, str):
        raise ValueError(f'{origin}: expected a public JWK, {{"pem": "..."}} or PEM text')
    keys = load_public_pem(pem.encode("utf-8"), origin)
    if len(keys) != 1:
        raise ValueError(f"{origin}: holds {len(keys)} keys; store one key per id")
    return VerificationKey(kid, keys[0].key, keys[0].algorithms, origin)


class KeyFile:
    """A key file that is re-read when it changes (cheap to poll: one ``stat`` per call).

    The first load must succeed (a broker must not start with unusable keys). Later, a
    file that is missing or unreadable — e.g. caught half-written during rotation — keeps
    the keys last loaded and logs the problem once per distinct file state.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._stamp = self._stat()
        self._keys: tuple[VerificationKey, ...] = tuple(load_key_file(self.path))

    @property
    def keys(self) -> tuple[VerificationKey, ...]:
        """The keys of the last good version of the file."""
        return self._keys

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def refresh(self) -> bool:
        """Re-read the file if it changed since the last look; return whether the keys changed."""
        stamp = self._stat()
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        if stamp is None:
            log.warning(
                "JWT key file %s is gone; keeping the %d keys loaded before", self.path, len(self._keys)
            )
            return False
        try:
            keys = tuple(load_key_file(self.path))
        except (OSError, ValueError) as exc:
            log.warning(
                "JWT key file %s changed but is unusable (%s); keeping the previous keys", self.path, exc
            )
            return False
        self._keys = keys
        log.info("JWT key file %s reloaded: %d keys", self.path, len(keys))
        return True
