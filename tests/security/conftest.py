"""Shared key material for the security tests, made once per session (RSA generation is slow)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from broker.auth.certs import public_pem
from broker.auth.keys import PrivateKey

#: A fixed "now" for every verifier under test: 2027-01-15T08:00:00Z.
NOW = 1_800_000_000.0


@dataclass(frozen=True)
class KeyPair:
    kind: str
    private: PrivateKey
    public_pem: bytes
    public_path: Path


def _make(kind: str, directory: Path) -> KeyPair:
    private: PrivateKey
    if kind == "rsa":
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif kind == "ec":
        private = ec.generate_private_key(ec.SECP256R1())
    else:
        private = ed25519.Ed25519PrivateKey.generate()
    pem = public_pem(private)
    path = directory / f"{kind}-public.pem"
    path.write_bytes(pem)
    return KeyPair(kind, private, pem, path)


@pytest.fixture(scope="session")
def keypairs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, KeyPair]:
    """One key pair per supported type: rsa (RS256), ec (ES256), ed25519 (EdDSA)."""
    directory = tmp_path_factory.mktemp("jwt-keys")
    return {kind: _make(kind, directory) for kind in ("rsa", "ec", "ed25519")}


@pytest.fixture(scope="session")
def stranger(tmp_path_factory: pytest.TempPathFactory) -> KeyPair:
    """A key pair the broker does not know (for wrong-key tests)."""
    return _make("ed25519", tmp_path_factory.mktemp("stranger"))
