"""The authentication-extension parser: interop with rsocket-py and arbitrary hostile bytes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rsocket.extensions.authentication import AuthenticationBearer, AuthenticationSimple
from rsocket.extensions.authentication_content import AuthenticationContent

from broker.auth import AuthError, bearer_token, encode_bearer, parse_auth_metadata
from broker.auth.metadata import AuthMetadata, encode_auth_metadata

TOKEN = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhbGljZSJ9.c2ln"


def test_well_known_bearer_starts_with_0x81() -> None:
    data = encode_bearer(TOKEN)
    assert data[0] == 0x81
    assert data[1:] == TOKEN.encode()
    assert bearer_token(data) == TOKEN


def test_reads_what_rsocket_py_writes() -> None:
    data = bytes(AuthenticationContent(AuthenticationBearer(TOKEN)).serialize())
    assert bearer_token(data) == TOKEN


def test_rsocket_py_reads_what_we_write() -> None:
    content = AuthenticationContent()
    content.parse(encode_bearer(TOKEN))
    assert isinstance(content.authentication, AuthenticationBearer)
    assert content.authentication.token == TOKEN.encode()


def test_bearer_spelled_out_as_a_type_name_is_accepted() -> None:
    data = bytes((len(b"bearer") - 1,)) + b"bearer" + TOKEN.encode()
    assert parse_auth_metadata(data) == AuthMetadata("bearer", TOKEN.encode())
    assert bearer_token(data) == TOKEN


def test_custom_type_names_round_trip() -> None:
    data = encode_auth_metadata("x-api-key", b"secret")
    assert data[0] == len("x-api-key") - 1
    assert parse_auth_metadata(data) == AuthMetadata("x-api-key", b"secret")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (None, "no bearer token in SETUP"),
        (b"", "no bearer token in SETUP"),
        (b"\x81", "no bearer token in SETUP"),
        (
            bytes(AuthenticationContent(AuthenticationSimple("alice", "pw")).serialize()),
            "authentication type 'simple' is not accepted; send a bearer JWT",
        ),
        (b"\x05apikeyXYZ", "authentication type 'apikey' is not accepted; send a bearer JWT"),
        (b"\x82token", "malformed authentication metadata: unknown well-known auth type id 0x02"),
        (b"\x10short", "malformed authentication metadata: auth type name needs 17 bytes, 5 present"),
        (b"\x01\xff\xfe", "malformed authentication metadata: auth type name is not US-ASCII"),
        (b"\x81\xff\xfe", "malformed token: bearer token is not UTF-8"),
    ],
)
def test_refusals_name_the_problem(data: bytes | None, message: str) -> None:
    with pytest.raises(AuthError) as info:
        bearer_token(data)
    assert info.value.reason == message


def test_type_names_longer_than_128_bytes_cannot_be_encoded() -> None:
    with pytest.raises(ValueError, match=r"1..128"):
        encode_auth_metadata("x" * 129, b"")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_parse_or_raise_auth_error(data: bytes) -> None:
    try:
        entry = parse_auth_metadata(data)
    except AuthError as exc:
        assert exc.reason.startswith(("malformed authentication metadata:", "no bearer token"))
        return
    assert entry.payload == data[len(data) - len(entry.payload) :]
    try:
        assert isinstance(bearer_token(data), str)
    except AuthError as exc:
        assert exc.reason


@settings(max_examples=200, deadline=None)
@given(
    auth_type=st.text(
        alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=128
    ),
    payload=st.binary(max_size=200),
)
def test_encode_then_parse_is_identity(auth_type: str, payload: bytes) -> None:
    assert parse_auth_metadata(encode_auth_metadata(auth_type, payload)) == AuthMetadata(auth_type, payload)


@settings(max_examples=200, deadline=None)
@given(token=st.text(min_size=1, max_size=200))
def test_any_bearer_token_survives_the_round_trip(token: str) -> None:
    assert bearer_token(encode_bearer(token)) == token
