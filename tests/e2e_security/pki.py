"""Keys, certificates and tokens for the end-to-end security tests, made with ``rsbroker certs``.

Going through the real CLI (not the library) means the files a test uses are the files an
operator would make. Tokens are minted with ``broker.auth.tokens.mint_token`` because
tests need claims the CLI deliberately cannot produce (already expired, other issuer).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broker.auth.tokens import load_private_key, mint_token
from tests.support.brokerproc import run_rsbroker

__all__ = ["AUDIENCE", "ISSUER", "KEY_TYPES", "Pki", "make_pki"]

ISSUER = "https://id.rsbroker.test"
AUDIENCE = "rsbroker"
#: ``rsbroker certs keypair --type`` values and the JWT algorithm each one signs with
KEY_TYPES = {"rsa": "RS256", "ec": "ES256", "ed25519": "EdDSA"}


def _certs(*args: str) -> None:
    done = run_rsbroker("certs", *args)
    assert done.returncode == 0, f"rsbroker certs {' '.join(args)} failed:\n{done.stdout}{done.stderr}"


@dataclass(frozen=True)
class Pki:
    """Paths of the material ``make_pki`` wrote, and a token minter bound to it."""

    root: Path

    @property
    def ca(self) -> Path:
        return self.root / "ca" / "ca.pem"

    @property
    def node_cert(self) -> Path:
        return self.root / "ca" / "n1.pem"

    @property
    def node_key(self) -> Path:
        return self.root / "ca" / "n1-key.pem"

    def client_cert(self, name: str, *, trusted: bool = True) -> tuple[Path, Path]:
        """``(cert, key)`` of a client certificate from the trusted CA or from the rogue one."""
        directory = self.root / ("ca" if trusted else "rogue")
        return directory / f"{name}.pem", directory / f"{name}-key.pem"

    @property
    def jwt_keys(self) -> Path:
        """Every trusted public key (RSA, EC, Ed25519) in one PEM file, for ``--jwt-keys``."""
        return self.root / "jwt-keys.pem"

    def private_key(self, kind: str) -> Path:
        """A signing key: ``rsa``, ``ec``, ``ed25519`` (trusted) or ``stranger`` (not trusted)."""
        return self.root / "keys" / f"{kind}-private.pem"

    def token(
        self,
        sub: str,
        roles: tuple[str, ...] = (),
        *,
        kind: str = "ed25519",
        ttl: float = 3600,
        issuer: str | None = ISSUER,
        audience: str | None = AUDIENCE,
        now: float | None = None,
        **extra: Any,
    ) -> str:
        """A bearer token signed with the ``kind`` key; defaults fit the brokers of this suite."""
        return mint_token(
            load_private_key(self.private_key(kind)),
            sub=sub,
            roles=roles,
            ttl=ttl,
            issuer=issuer,
            audience=audience,
            now=time.time() if now is None else now,
            extra_claims=extra or None,
        )

    def admin_token(self) -> str:
        """A bearer token with role admin, for the admin API of a broker with :meth:`jwt_args`."""
        return self.token("operator", ("admin",))

    def jwt_args(self, *, leeway_s: float = 0) -> list[str]:
        """``rsbroker serve`` flags that turn JWT authentication on with this suite's keys."""
        return [
            "--jwt-keys", str(self.jwt_keys),
            "--jwt-issuer", ISSUER,
            "--jwt-audience", AUDIENCE,
            "--jwt-leeway-s", str(leeway_s),
        ]  # fmt: skip

    def tls_args(self, *, client_ca: bool = False) -> list[str]:
        """Flags for TLS listeners with the node certificate; ``client_ca`` adds mTLS."""
        args = ["--tls-cert", str(self.node_cert), "--tls-key", str(self.node_key)]
        return args + (["--tls-client-ca", str(self.ca)] if client_ca else [])


def make_pki(root: Path) -> Pki:
    """Write a CA, node and client certificates, a rogue CA, and JWT key pairs under ``root``."""
    _certs("init", "--out", str(root / "ca"))
    _certs("node", "--ca-dir", str(root / "ca"), "--name", "n1", "--host", "127.0.0.1,localhost")
    _certs("client", "--ca-dir", str(root / "ca"), "--name", "device-7", "--roles", "iot")
    _certs("client", "--ca-dir", str(root / "ca"), "--name", "ops", "--roles", "admin")
    _certs("init", "--out", str(root / "rogue"))
    _certs("client", "--ca-dir", str(root / "rogue"), "--name", "intruder")
    (root / "keys").mkdir()
    for kind in (*KEY_TYPES, "stranger"):
        key_type = "ed25519" if kind == "stranger" else kind
        _certs("keypair", "--type", key_type, "--out", str(root / "keys"), "--name", kind)
    pki = Pki(root)
    pki.jwt_keys.write_bytes(b"".join((root / "keys" / f"{kind}-public.pem").read_bytes() for kind in KEY_TYPES))
    return pki
