"""Bearer JWT verification: every accepted and every refused token of issue 4, by message."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.auth import AuthError, JwtVerifier, encode_bearer
from broker.auth.tokens import mint_token

from .conftest import NOW, KeyPair

EXPECTED_ALG = {"rsa": "RS256", "ec": "ES256", "ed25519": "EdDSA"}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64json(obj: Any) -> str:
    return b64(json.dumps(obj).encode())


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"sub": "alice", "roles": ["greeter"], "exp": int(NOW) + 600, "jti": "t-1"}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(pair: KeyPair, payload: dict[str, Any], kid: str | None = None) -> str:
    alg = EXPECTED_ALG[pair.kind]
    return jwt.encode(payload, pair.private, algorithm=alg, headers={"kid": kid} if kid else None)


def rejected(verifier: JwtVerifier, token: str | None) -> str:
    """The refusal message; it must never contain the token."""
    with pytest.raises(AuthError) as info:
        verifier.verify(token)
    message = info.value.reason
    assert str(info.value) == message
    if token:
        assert token not in message
        for part in token.split("."):
            assert len(part) < 8 or part not in message
    return message


@pytest.fixture
def ed(keypairs: dict[str, KeyPair]) -> KeyPair:
    return keypairs["ed25519"]


@pytest.fixture
def verifier(ed: KeyPair) -> JwtVerifier:
    return JwtVerifier(ed.public_path, clock=lambda: NOW, leeway=30)


# -- accepted -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["rsa", "ec", "ed25519"])
def test_valid_token_of_each_key_type_is_accepted(keypairs: dict[str, KeyPair], kind: str) -> None:
    pair = keypairs[kind]
    verifier = JwtVerifier(pair.public_path, clock=lambda: NOW)
    token = sign(pair, claims(roles=["greeter", "ops"]))
    assert jwt.get_unverified_header(token)["alg"] == EXPECTED_ALG[kind]
    principal = verifier.verify(token)
    assert principal.name == "alice"
    assert principal.roles == frozenset({"greeter", "ops"})
    assert principal.expires_at == NOW + 600
    assert principal.source == "jwt"
    assert principal.claims["jti"] == "t-1"


def test_every_key_in_a_pem_bundle_is_usable(keypairs: dict[str, KeyPair], tmp_path: Path) -> None:
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(b"".join(p.public_pem for p in keypairs.values()))
    verifier = JwtVerifier(bundle, clock=lambda: NOW)
    for pair in keypairs.values():
        assert verifier.verify(sign(pair, claims(sub=pair.kind))).name == pair.kind


def test_setup_metadata_is_unwrapped_and_verified(verifier: JwtVerifier, ed: KeyPair) -> None:
    principal = verifier.verify_setup(encode_bearer(sign(ed, claims())))
    assert principal.name == "alice"


def test_leeway_tolerates_small_clock_skew(ed: KeyPair) -> None:
    verifier = JwtVerifier(ed.public_path, clock=lambda: NOW, leeway=30)
    assert verifier.verify(sign(ed, claims(exp=int(NOW) - 10))).name == "alice"
    assert verifier.verify(sign(ed, claims(nbf=int(NOW) + 10))).name == "alice"


def test_roles_claim_is_optional(verifier: JwtVerifier, ed: KeyPair) -> None:
    assert verifier.verify(sign(ed, claims(roles=None))).roles == frozenset()


def test_issuer_and_audience_match(ed: KeyPair) -> None:
    verifier = JwtVerifier(
        ed.public_path, issuer="https://id.example", audience="rsbroker", clock=lambda: NOW
    )
    for aud in ("rsbroker", ["other", "rsbroker"]):
        token = sign(ed, claims(iss="https://id.example", aud=aud))
        assert verifier.verify(token).name == "alice"


# -- refused, each with its own message ---------------------------------------------------


def test_expired(verifier: JwtVerifier, ed: KeyPair) -> None:
    token = sign(ed, claims(exp=int(NOW) - 3600))
    assert rejected(verifier, token) == "token expired at 2027-01-15T07:00:00Z"


def test_expired_exactly_at_the_end_of_the_leeway(ed: KeyPair) -> None:
    verifier = JwtVerifier(ed.public_path, clock=lambda: NOW, leeway=30)
    token = sign(ed, claims(exp=int(NOW) - 30))
    assert rejected(verifier, token) == "token expired at 2027-01-15T07:59:30Z"


def test_not_yet_valid(verifier: JwtVerifier, ed: KeyPair) -> None:
    token = sign(ed, claims(nbf=int(NOW) + 3600))
    assert rejected(verifier, token) == "token not valid before 2027-01-15T09:00:00Z"


def test_wrong_issuer(ed: KeyPair) -> None:
    verifier = JwtVerifier(ed.public_path, issuer="https://id.example", clock=lambda: NOW)
    token = sign(ed, claims(iss="https://evil.example"))
    assert rejected(verifier, token) == "wrong issuer 'https://evil.example' (expected 'https://id.example')"


def test_missing_issuer(ed: KeyPair) -> None:
    verifier = JwtVerifier(ed.public_path, issuer="https://id.example", clock=lambda: NOW)
    assert (
        rejected(verifier, sign(ed, claims()))
        == "token has no 'iss' claim (expected issuer 'https://id.example')"
    )


def test_wrong_audience(ed: KeyPair) -> None:
    verifier = JwtVerifier(ed.public_path, audience="rsbroker", clock=lambda: NOW)
    token = sign(ed, claims(aud=["billing", "crm"]))
    assert rejected(verifier, token) == "wrong audience ['billing', 'crm'] (expected 'rsbroker')"


def test_missing_audience(ed: KeyPair) -> None:
    verifier = JwtVerifier(ed.public_path, audience="rsbroker", clock=lambda: NOW)
    assert rejected(verifier, sign(ed, claims())) == "token has no 'aud' claim (expected audience 'rsbroker')"


def test_audience_present_but_none_configured(verifier: JwtVerifier, ed: KeyPair) -> None:
    # RFC 7519 4.1.3: a recipient that cannot identify itself with 'aud' must reject.
    message = rejected(verifier, sign(ed, claims(aud="billing")))
    assert (
        message
        == "token is for audience ['billing'] but this broker has no audience configured (--jwt-audience)"
    )


def test_wrong_key(verifier: JwtVerifier, stranger: KeyPair) -> None:
    token = sign(stranger, claims())
    assert rejected(verifier, token) == "signature does not match any configured key"


def test_tampered_payload(verifier: JwtVerifier, ed: KeyPair) -> None:
    header, _, signature = sign(ed, claims()).split(".")
    forged = f"{header}.{b64json(claims(roles=['admin']))}.{signature}"
    # Cryptographically a changed payload and a foreign signer look the same: no key verifies it.
    assert rejected(verifier, forged) == "signature does not match any configured key"


def test_a_key_embedded_in_the_header_is_not_trusted(verifier: JwtVerifier, stranger: KeyPair) -> None:
    embedded = json.loads(jwt.get_algorithm_by_name("EdDSA").to_jwk(stranger.private.public_key()))
    token = jwt.encode(
        claims(roles=["admin"]), stranger.private, algorithm="EdDSA", headers={"jwk": embedded}
    )
    assert rejected(verifier, token) == "signature does not match any configured key"


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_alg_none(verifier: JwtVerifier, alg: str) -> None:
    token = f"{b64json({'alg': alg, 'typ': 'JWT'})}.{b64json(claims(roles=['admin']))}."
    assert rejected(verifier, token) == f"algorithm {alg!r} is not allowed"


@pytest.mark.parametrize("kind", ["rsa", "ec", "ed25519"])
@pytest.mark.parametrize("alg", ["HS256", "HS512"])
def test_hmac_signed_with_the_public_key_as_secret(keypairs: dict[str, KeyPair], kind: str, alg: str) -> None:
    pair = keypairs[kind]
    verifier = JwtVerifier(pair.public_path, clock=lambda: NOW)
    signing_input = f"{b64json({'alg': alg, 'typ': 'JWT'})}.{b64json(claims(roles=['admin']))}"
    digest = hashlib.sha256 if alg == "HS256" else hashlib.sha512
    mac = hmac.new(pair.public_pem, signing_input.encode(), digest).digest()
    token = f"{signing_input}.{b64(mac)}"
    assert rejected(verifier, token) == f"algorithm {alg!r} is not allowed"


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("garbage", "malformed token: expected a JWT (three base64url parts separated by dots)"),
        ("Bearer abc.def.ghi", "malformed token: expected a JWT (three base64url parts separated by dots)"),
        ("a.b.c.d", "malformed token: expected a JWT (three base64url parts separated by dots)"),
        ("abcde.eyJ9.sig", "malformed token: the header is not valid base64url"),
        (f"{b64(b'not json!')}.e30.sig", "malformed token: the header is not JSON"),
        (f"{b64json([1, 2])}.e30.sig", "malformed token: the header is not a JSON object"),
        (f"{b64json({'typ': 'JWT'})}.e30.sig", "malformed token: the header has no 'alg'"),
        (
            f"{b64json({'alg': 'EdDSA', 'kid': 7})}.e30.sig",
            "malformed token: the header's 'kid' is not a string",
        ),
    ],
)
def test_garbage_token(verifier: JwtVerifier, token: str, message: str) -> None:
    assert rejected(verifier, token) == message


def test_oversized_token_is_refused_unparsed(verifier: JwtVerifier) -> None:
    token = "a" * 20000 + ".b.c"
    assert rejected(verifier, token) == "malformed token: 20004 bytes is over the 16384-byte limit"


@pytest.mark.parametrize("token", [None, ""])
def test_no_token(verifier: JwtVerifier, token: str | None) -> None:
    assert rejected(verifier, token) == "no bearer token in SETUP"
    with pytest.raises(AuthError, match=r"^no bearer token in SETUP$"):
        verifier.verify_setup(None)


def test_token_without_expiry_is_refused_unless_allowed(ed: KeyPair) -> None:
    token = sign(ed, claims(exp=None))
    strict = JwtVerifier(ed.public_path, clock=lambda: NOW)
    assert rejected(strict, token) == "token has no 'exp' claim; tokens without an expiry are not accepted"
    lenient = JwtVerifier(ed.public_path, clock=lambda: NOW, require_exp=False)
    assert lenient.verify(token).expires_at is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"sub": None}, "token has no 'sub' claim (a non-empty string naming the principal)"),
        ({"sub": ""}, "token has no 'sub' claim (a non-empty string naming the principal)"),
        ({"sub": 42}, "token has no 'sub' claim (a non-empty string naming the principal)"),
        ({"roles": "admin"}, "malformed token: the 'roles' claim must be a list of strings"),
        ({"roles": ["ok", 1]}, "malformed token: the 'roles' claim must be a list of strings"),
        ({"exp": "tomorrow"}, "malformed token: the 'exp' claim must be a number of seconds since the epoch"),
        ({"exp": True}, "malformed token: the 'exp' claim must be a number of seconds since the epoch"),
        ({"nbf": [1]}, "malformed token: the 'nbf' claim must be a number of seconds since the epoch"),
        ({"iat": "now"}, "malformed token: the 'iat' claim must be a number of seconds since the epoch"),
    ],
)
def test_bad_claims(verifier: JwtVerifier, ed: KeyPair, overrides: dict[str, Any], message: str) -> None:
    payload = claims()
    payload.update(overrides)
    payload = {k: v for k, v in payload.items() if v is not None}
    assert rejected(verifier, jwt.encode(payload, ed.private, algorithm="EdDSA")) == message


def test_signed_non_object_payload(verifier: JwtVerifier, ed: KeyPair) -> None:
    token = jwt.api_jws.encode(b"[1,2,3]", ed.private, algorithm="EdDSA")
    assert rejected(verifier, token) == "malformed token: the payload is not a JSON object"


def test_algorithm_must_fit_the_key_type(keypairs: dict[str, KeyPair]) -> None:
    rsa_only = JwtVerifier(keypairs["rsa"].public_path, clock=lambda: NOW)
    token = sign(keypairs["ec"], claims())
    assert rejected(rsa_only, token) == "algorithm 'ES256' does not fit any configured key"


# -- key sources: JWKS rotation, config-store keys, revocation ----------------------------


def jwk(pair: KeyPair, kid: str, **extra: Any) -> dict[str, Any]:
    alg = jwt.get_algorithm_by_name(EXPECTED_ALG[pair.kind])
    document = json.loads(alg.to_jwk(pair.private.public_key()))
    document.update(kid=kid, use="sig", **extra)
    return document


def write_jwks(path: Path, *keys: dict[str, Any]) -> None:
    """Replace the file atomically, as an operator's rotation script should."""
    scratch = path.with_suffix(".tmp")
    scratch.write_text(json.dumps({"keys": list(keys)}))
    os.replace(scratch, path)


def test_jwks_rotation_without_restart(keypairs: dict[str, KeyPair], tmp_path: Path) -> None:
    old, new = keypairs["rsa"], keypairs["ec"]
    path = tmp_path / "jwks.json"
    write_jwks(path, jwk(old, "k1"))
    verifier = JwtVerifier(path, clock=lambda: NOW)
    old_token, new_token = sign(old, claims(sub="old"), kid="k1"), sign(new, claims(sub="new"), kid="k2")
    assert verifier.verify(old_token).name == "old"
    assert rejected(verifier, new_token) == "no configured key has id 'k2'"

    write_jwks(path, jwk(old, "k1"), jwk(new, "k2"))  # step 1: publish the new key beside the old
    assert verifier.verify(old_token).name == "old"
    assert verifier.verify(new_token).name == "new"

    write_jwks(path, jwk(new, "k2"))  # step 2: retire the old key
    assert rejected(verifier, old_token) == "no configured key has id 'k1'"
    assert verifier.verify(new_token).name == "new"


def test_a_broken_rewrite_keeps_the_last_good_keys(keypairs: dict[str, KeyPair], tmp_path: Path) -> None:
    pair = keypairs["ec"]
    path = tmp_path / "jwks.json"
    write_jwks(path, jwk(pair, "k1"))
    verifier = JwtVerifier(path, clock=lambda: NOW)
    path.write_text('{"keys": [')  # caught half-written
    assert verifier.reload() is False
    assert verifier.verify(sign(pair, claims(), kid="k1")).name == "alice"
    path.unlink()
    assert verifier.reload() is False
    assert verifier.verify(sign(pair, claims(), kid="k1")).name == "alice"
    write_jwks(path, jwk(keypairs["rsa"], "k2"))
    assert verifier.reload() is True
    assert [k.kid for k in verifier.keys] == ["k2"]


def test_jwk_alg_narrows_what_a_key_verifies(keypairs: dict[str, KeyPair], tmp_path: Path) -> None:
    pair = keypairs["rsa"]
    path = tmp_path / "jwks.json"
    write_jwks(path, jwk(pair, "k1", alg="RS256"))
    verifier = JwtVerifier(path, clock=lambda: NOW)
    ps_token = jwt.encode(claims(), pair.private, algorithm="PS256", headers={"kid": "k1"})
    assert rejected(verifier, ps_token) == "algorithm 'PS256' does not fit any configured key with id 'k1'"
    assert verifier.verify(sign(pair, claims(), kid="k1")).name == "alice"


def test_pem_keys_without_kid_accept_tokens_with_any_kid(verifier: JwtVerifier, ed: KeyPair) -> None:
    assert verifier.verify(sign(ed, claims(), kid="anything")).name == "alice"


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"", "no PEM public key or certificate found"),
        (b'{"keys": []}', "the JWKS holds no signature keys"),
        (
            b'{"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "h"}]}',
            "symmetric (kty 'oct') keys are not accepted",
        ),
        (b'{"nope": 1}', "a JWKS must be a JSON object with a 'keys' list"),
        (b"{broken", "not valid JSON"),
    ],
)
def test_unusable_key_files_are_refused_at_start(tmp_path: Path, content: bytes, fragment: str) -> None:
    path = tmp_path / "keys"
    path.write_bytes(content)
    with pytest.raises(ValueError) as info:
        JwtVerifier(path)
    assert fragment in str(info.value)


def test_private_and_weak_keys_are_refused(ed: KeyPair, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    private = tmp_path / "private.pem"
    private.write_bytes(
        ed.private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    with pytest.raises(ValueError, match="holds a private key"):
        JwtVerifier(private)
    weak = tmp_path / "weak.pem"
    weak_key = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    weak.write_bytes(
        weak_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(ValueError, match="RSA key has 1024 bits, at least 2048 are required"):
        JwtVerifier(weak)


def test_keys_from_the_config_store_apply_live(keypairs: dict[str, KeyPair]) -> None:
    verifier = JwtVerifier(clock=lambda: NOW)
    rsa_pair, ec_pair = keypairs["rsa"], keypairs["ec"]
    token_a, token_b = sign(rsa_pair, claims(), kid="a"), sign(ec_pair, claims(sub="bob"), kid="b")
    assert rejected(verifier, token_a) == "no JWT verification keys are configured"
    problems = verifier.set_extra_keys(
        {
            "a": jwk(rsa_pair, "ignored-own-kid"),
            "b": {"pem": ec_pair.public_pem.decode()},
            "bad": {"kty": "oct"},
        }
    )
    assert problems == [
        "config key 'bad': symmetric (kty 'oct') keys are not accepted; use RSA, EC or OKP public keys"
    ]
    assert verifier.verify(token_a).name == "alice"
    assert verifier.verify(token_b).name == "bob"
    verifier.set_extra_keys({"b": ec_pair.public_pem.decode()})
    assert rejected(verifier, token_a) == "no configured key has id 'a'"
    assert verifier.verify(token_b).name == "bob"


def test_revoked_token_ids_apply_live(verifier: JwtVerifier, ed: KeyPair) -> None:
    token = sign(ed, claims(jti="abc123"))
    principal = verifier.verify(token)
    assert not verifier.is_revoked(principal)
    verifier.set_revoked({"abc123"})
    assert rejected(verifier, token) == "token id 'abc123' has been revoked"
    assert verifier.is_revoked(principal)
    verifier.set_revoked([])
    assert verifier.verify(token).name == "alice"


def test_minted_tokens_verify_and_carry_what_was_asked(keypairs: dict[str, KeyPair]) -> None:
    for pair in keypairs.values():
        verifier = JwtVerifier(pair.public_path, issuer="iss", audience="aud", clock=lambda: NOW)
        token = mint_token(
            pair.private,
            sub="svc-1",
            roles=["a", "b"],
            ttl=60,
            issuer="iss",
            audience="aud",
            kid="k",
            now=NOW,
        )
        principal = verifier.verify(token)
        assert (principal.name, principal.roles, principal.expires_at) == ("svc-1", {"a", "b"}, NOW + 60)
        assert jwt.get_unverified_header(token) == {"alg": EXPECTED_ALG[pair.kind], "kid": "k", "typ": "JWT"}


# -- hostile input ------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    token=st.one_of(
        st.text(max_size=300), st.from_regex(r"[A-Za-z0-9_-]{0,40}\.[A-Za-z0-9_-]{0,40}\.[A-Za-z0-9_-]{0,40}")
    )
)
def test_any_string_is_refused_with_an_auth_error(keypairs: dict[str, KeyPair], token: str) -> None:
    ed = keypairs["ed25519"]
    verifier = JwtVerifier(ed.public_path, clock=lambda: NOW)
    with pytest.raises(AuthError) as info:
        verifier.verify(token)
    assert len(token) < 8 or token not in info.value.reason


@settings(max_examples=100, deadline=None)
@given(position=st.integers(min_value=0), flip=st.integers(min_value=1, max_value=255))
def test_any_mutated_byte_of_a_valid_token_is_refused(
    keypairs: dict[str, KeyPair], position: int, flip: int
) -> None:
    ed = keypairs["ed25519"]
    verifier = JwtVerifier(ed.public_path, clock=lambda: NOW)
    token = sign(ed, claims())
    raw = bytearray(token.encode())
    raw[position % len(raw)] ^= flip
    mutated = raw.decode("latin-1")
    try:
        principal = verifier.verify(mutated)
    except AuthError:
        return
    # base64url's last character may carry unused bits: only then can a changed token still verify.
    assert principal.claims == claims()
