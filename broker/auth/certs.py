"""Making the keys and certificates a secured deployment needs, with ``cryptography``.

A private CA (``ca.pem`` + ``ca-key.pem``) signs node certificates (server and client
use: nodes serve clients and dial each other) and client certificates (client use; the
subject CN becomes the mTLS principal's name and each OU one of its roles). JWT signing
key pairs are separate from the PKI: the private half mints tokens, the public half is
what ``--jwt-keys`` points at.

Certificates carry the extensions strict verifiers (Python 3.13's ``VERIFY_X509_STRICT``,
Go, browsers) insist on: basic constraints, key usage, extended key usage, subject and
authority key identifiers, and subject alternative names on server certificates.
Private keys are written with mode 0600. The CA and JWT key pairs are never overwritten
(losing them orphans everything they signed); leaf certificates may be re-issued.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .keys import PrivateKey

__all__ = [
    "CA_CERT",
    "CA_KEY",
    "KEYPAIR_TYPES",
    "IssuedFiles",
    "create_ca",
    "generate_private_key",
    "issue_client_cert",
    "issue_node_cert",
    "public_pem",
    "write_keypair",
]

CA_CERT = "ca.pem"
CA_KEY = "ca-key.pem"
KEYPAIR_TYPES = ("rsa", "ec", "ed25519")
#: Issued certificates start this far in the past so a peer with a slow clock accepts them.
_BACKDATE = datetime.timedelta(minutes=5)
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


@dataclass(frozen=True, slots=True)
class IssuedFiles:
    """Where a certificate (or public key) and its private key were written."""

    cert: Path
    key: Path


def generate_private_key(kind: str) -> PrivateKey:
    """A fresh private key: ``rsa`` (3072 bits), ``ec`` (P-256) or ``ed25519``."""
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"unknown key type {kind!r} (choose from {', '.join(KEYPAIR_TYPES)})")


def _check_name(name: str) -> str:
    if not _SAFE_NAME.fullmatch(name):
        raise ValueError(f"name {name!r} must be 1-64 characters of letters, digits, '.', '_', '@', '-'")
    return name


def _private_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_pem(key: PrivateKey) -> bytes:
    """``key``'s public half as PEM (SubjectPublicKeyInfo): what ``--jwt-keys`` and ``keys/`` take."""
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _write(path: Path, data: bytes, *, secret: bool, overwrite: bool) -> Path:
    """Write ``data``; secrets get mode 0600 from creation, never a window of wider access."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600 if secret else 0o644)
    except FileExistsError:
        raise FileExistsError(f"{path} already exists; refusing to overwrite it") from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return path


def _load_ca(ca_dir: Path) -> tuple[x509.Certificate, PrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate((ca_dir / CA_CERT).read_bytes())
        key = serialization.load_pem_private_key((ca_dir / CA_KEY).read_bytes(), password=None)
    except FileNotFoundError as exc:
        raise FileNotFoundError(
            f"{exc.filename}: not found; run `rsbroker certs init --out {ca_dir}` first"
        ) from None
    return cert, key  # type: ignore[return-value]


def _builder(subject: x509.Name, issuer: x509.Name, public_key: object, days: int) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)  # type: ignore[arg-type]
    )


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    """ECDSA keys only sign: certificates and CRLs for the CA, TLS handshakes for the others."""
    return x509.KeyUsage(
        digital_signature=True,
        key_cert_sign=ca,
        crl_sign=ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        encipher_only=False,
        decipher_only=False,
    )


def _signature_hash(key: PrivateKey) -> hashes.HashAlgorithm | None:
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def create_ca(
    out_dir: str | os.PathLike[str], *, common_name: str = "rsbroker CA", days: int = 3650
) -> IssuedFiles:
    """A self-signed CA that may sign end-entity certificates only (path length 0)."""
    out = Path(out_dir)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        _builder(name, name, key.public_key(), days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            _key_usage(ca=True),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    key_path = _write(out / CA_KEY, _private_pem(key), secret=True, overwrite=False)
    cert_path = _write(
        out / CA_CERT, cert.public_bytes(serialization.Encoding.PEM), secret=False, overwrite=False
    )
    return IssuedFiles(cert_path, key_path)


def _issue(
    ca_dir: Path,
    out_dir: Path,
    name: str,
    subject: x509.Name,
    usages: Sequence[x509.ObjectIdentifier],
    sans: list[x509.GeneralName],
    days: int,
) -> IssuedFiles:
    ca_cert, ca_key = _load_ca(ca_dir)
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        _builder(subject, ca_cert.subject, key.public_key(), days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            _key_usage(ca=False),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, _signature_hash(ca_key))  # type: ignore[arg-type]
    key_path = _write(out_dir / f"{name}-key.pem", _private_pem(key), secret=True, overwrite=True)
    cert_path = _write(
        out_dir / f"{name}.pem", cert.public_bytes(serialization.Encoding.PEM), secret=False, overwrite=True
    )
    return IssuedFiles(cert_path, key_path)


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def issue_node_cert(
    ca_dir: str | os.PathLike[str],
    name: str,
    hosts: Iterable[str],
    *,
    out_dir: str | os.PathLike[str] | None = None,
    days: int = 825,
) -> IssuedFiles:
    """A broker node certificate valid for ``hosts`` (IP addresses and DNS names) as server and client."""
    host_list = [h.strip() for h in hosts if h.strip()]
    if not host_list:
        raise ValueError("a node certificate needs at least one host name or IP address")
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, _check_name(name))])
    ca = Path(ca_dir)
    return _issue(
        ca,
        Path(out_dir) if out_dir else ca,
        name,
        subject,
        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        [_general_name(h) for h in host_list],
        days,
    )


def issue_client_cert(
    ca_dir: str | os.PathLike[str],
    name: str,
    *,
    roles: Iterable[str] = (),
    out_dir: str | os.PathLike[str] | None = None,
    days: int = 365,
) -> IssuedFiles:
    """A client certificate: CN = principal name, one OU per role."""
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, _check_name(name))]
    attributes += [x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role) for role in roles if role]
    ca = Path(ca_dir)
    return _issue(
        ca,
        Path(out_dir) if out_dir else ca,
        name,
        x509.Name(attributes),
        [ExtendedKeyUsageOID.CLIENT_AUTH],
        [],
        days,
    )


def write_keypair(kind: str, out_dir: str | os.PathLike[str], *, name: str = "jwt") -> IssuedFiles:
    """A JWT signing key pair: ``<name>-private.pem`` (0600) and ``<name>-public.pem``.

    The returned ``cert`` field is the public key file (what ``--jwt-keys`` takes).
    """
    key = generate_private_key(kind)
    out = Path(out_dir)
    public = public_pem(key)
    key_path = _write(
        out / f"{_check_name(name)}-private.pem", _private_pem(key), secret=True, overwrite=False
    )
    public_path = _write(out / f"{name}-public.pem", public, secret=False, overwrite=False)
    return IssuedFiles(public_path, key_path)
