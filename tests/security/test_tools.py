"""`rsbroker token` and `rsbroker certs` through the real command-line entry point."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

import jwt
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from broker.auth import JwtVerifier
from rsbroker.cli import main

EXPECTED_ALG = {"rsa": "RS256", "ec": "ES256", "ed25519": "EdDSA"}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("kind", ["rsa", "ec", "ed25519"])
def test_keypair_then_token_verifies(tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str) -> None:
    code, out, _ = run(capsys, "certs", "keypair", "--type", kind, "--out", str(tmp_path))
    assert code == 0
    private, public = tmp_path / "jwt-private.pem", tmp_path / "jwt-public.pem"
    assert str(public) in out and str(private) in out
    assert stat.S_IMODE(private.stat().st_mode) == 0o600

    code, out, _ = run(
        capsys,
        "token",
        "--key",
        str(private),
        "--sub",
        "alice",
        "--roles",
        "a, b",
        "--ttl",
        "600",
        "--iss",
        "https://id.example",
        "--aud",
        "rsbroker",
        "--kid",
        "k1",
    )
    assert code == 0
    token = out.strip()
    assert jwt.get_unverified_header(token) == {"alg": EXPECTED_ALG[kind], "kid": "k1", "typ": "JWT"}
    principal = JwtVerifier(public, issuer="https://id.example", audience="rsbroker").verify(token)
    assert (principal.name, principal.roles) == ("alice", frozenset({"a", "b"}))
    assert principal.expires_at is not None and principal.expires_at - principal.claims["iat"] == 600


def test_token_jti_is_settable_for_revocation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "certs", "keypair", "--type", "ec", "--out", str(tmp_path))
    code, out, _ = run(
        capsys, "token", "--key", str(tmp_path / "jwt-private.pem"), "--sub", "a", "--jti", "j-9"
    )
    assert code == 0
    assert jwt.decode(out.strip(), options={"verify_signature": False})["jti"] == "j-9"


def test_token_help_documents_the_algorithm_choice(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "token", "--help")
    assert code == 0
    assert "Ed25519/Ed448 -> EdDSA" in out and "--kid" in out and "--ttl" in out


def test_token_failures_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "token", "--key", str(tmp_path / "missing.pem"), "--sub", "a")
    assert code == 1 and err.startswith("error: ") and "Traceback" not in err
    run(capsys, "certs", "keypair", "--type", "ed25519", "--out", str(tmp_path))
    code, _, err = run(capsys, "token", "--key", str(tmp_path / "jwt-public.pem"), "--sub", "a")
    assert code == 1 and "not an unencrypted PEM private key" in err
    code, _, err = run(
        capsys, "token", "--key", str(tmp_path / "jwt-private.pem"), "--sub", "a", "--ttl", "0"
    )
    assert code == 2 and "--ttl must be positive" in err
    code, _, _ = run(capsys, "token", "--sub", "a")
    assert code == 2


def test_certs_help_documents_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "certs", "--help")
    assert code == 0
    for word in ("init", "node", "client", "keypair", "--tls-client-ca"):
        assert word in out
    for command in ("init", "node", "client", "keypair"):
        code, out, _ = run(capsys, "certs", command, "--help")
        assert code == 0 and "--" in out


def test_certs_make_a_consistent_pki(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pki = tmp_path / "pki"
    assert run(capsys, "certs", "init", "--out", str(pki))[0] == 0
    assert (
        run(
            capsys, "certs", "node", "--ca-dir", str(pki), "--name", "n1", "--host", "127.0.0.1,localhost,::1"
        )[0]
        == 0
    )
    assert (
        run(capsys, "certs", "client", "--ca-dir", str(pki), "--name", "alice", "--roles", "greeter,ops")[0]
        == 0
    )
    assert stat.S_IMODE((pki / "ca-key.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE((pki / "n1-key.pem").stat().st_mode) == 0o600

    ca = x509.load_pem_x509_certificate((pki / "ca.pem").read_bytes())
    node = x509.load_pem_x509_certificate((pki / "n1.pem").read_bytes())
    client = x509.load_pem_x509_certificate((pki / "alice.pem").read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for cert in (node, client):
        cert.verify_directly_issued_by(ca)
        assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    sans = node.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    assert sans.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    node_usage = node.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(node_usage) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert list(client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]
    assert client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "alice"
    assert [a.value for a in client.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)] == [
        "greeter",
        "ops",
    ]


def test_certs_refuse_to_clobber_the_ca_and_signing_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "certs", "init", "--out", str(tmp_path))[0] == 0
    ca_before = (tmp_path / "ca.pem").read_bytes()
    code, _, err = run(capsys, "certs", "init", "--out", str(tmp_path))
    assert code == 1 and "refusing to overwrite" in err
    assert (tmp_path / "ca.pem").read_bytes() == ca_before
    assert run(capsys, "certs", "keypair", "--type", "ec", "--out", str(tmp_path))[0] == 0
    code, _, err = run(capsys, "certs", "keypair", "--type", "ec", "--out", str(tmp_path))
    assert code == 1 and "refusing to overwrite" in err


def test_certs_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "certs", "node", "--ca-dir", str(tmp_path), "--name", "n1", "--host", "x")
    assert code == 1 and "run `rsbroker certs init" in err
    run(capsys, "certs", "init", "--out", str(tmp_path))
    code, _, err = run(capsys, "certs", "client", "--ca-dir", str(tmp_path), "--name", "../evil")
    assert code == 1 and "must be 1-64 characters" in err
    code, _, err = run(capsys, "certs", "node", "--ca-dir", str(tmp_path), "--name", "n1", "--host", ",")
    assert code == 1 and "at least one host" in err
    assert run(capsys, "certs", "keypair", "--type", "dsa", "--out", str(tmp_path))[0] == 2
    assert run(capsys, "certs")[0] == 2
