"""The RSocket authentication extension (``message/x.rsocket.authentication.v0``), as bytes.

Wire form (rsocket/rsocket ``Extensions/Security/Authentication.md``)::

    byte 0: A(1 bit) | id or length (7 bits)
      A = 1: the 7 bits are a well-known auth type id (0x00 simple, 0x01 bearer);
      A = 0: the 7 bits are the length of an auth type name that follows, *minus one*
             (a zero-length name is meaningless, so 0 encodes 1 byte; this is how
             rsocket-java and rsocket-py encode it, and what clients actually send).
    then:   the auth payload; for ``bearer`` the token as UTF-8, to the end of the entry.

The bytes come straight from an unauthenticated peer, so the parser accepts any input
and raises only :class:`AuthError`; it never echoes payload bytes into a message.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import AuthError

__all__ = [
    "AUTHENTICATION_MIME",
    "AuthMetadata",
    "bearer_token",
    "encode_auth_metadata",
    "encode_bearer",
    "parse_auth_metadata",
]

AUTHENTICATION_MIME = "message/x.rsocket.authentication.v0"

#: Well-known auth type ids from the extension spec. Append-only: ids are wire values.
WELL_KNOWN_AUTH_TYPES: dict[int, str] = {0x00: "simple", 0x01: "bearer"}
_IDS_BY_NAME = {name: ident for ident, name in WELL_KNOWN_AUTH_TYPES.items()}
_WELL_KNOWN_FLAG = 0x80
_MAX_TYPE_NAME = 128

NO_TOKEN = "no bearer token in SETUP"


@dataclass(frozen=True, slots=True)
class AuthMetadata:
    """One decoded authentication entry: its type name and its raw payload."""

    auth_type: str
    payload: bytes


def parse_auth_metadata(data: bytes) -> AuthMetadata:
    """Decode an authentication entry; raise AuthError naming what is wrong with it."""
    if not data:
        raise AuthError(NO_TOKEN)
    first = data[0]
    if first & _WELL_KNOWN_FLAG:
        ident = first & 0x7F
        auth_type = WELL_KNOWN_AUTH_TYPES.get(ident)
        if auth_type is None:
            raise AuthError(
                f"malformed authentication metadata: unknown well-known auth type id 0x{ident:02x}"
            )
        return AuthMetadata(auth_type, bytes(data[1:]))
    length = (first & 0x7F) + 1
    if len(data) < 1 + length:
        raise AuthError(
            f"malformed authentication metadata: auth type name needs {length} bytes, {len(data) - 1} present"
        )
    try:
        auth_type = bytes(data[1 : 1 + length]).decode("ascii")
    except UnicodeDecodeError:
        raise AuthError("malformed authentication metadata: auth type name is not US-ASCII") from None
    return AuthMetadata(auth_type, bytes(data[1 + length :]))


def bearer_token(data: bytes | None) -> str:
    """The bearer token in an authentication entry (``None``: the client sent none)."""
    if data is None:
        raise AuthError(NO_TOKEN)
    entry = parse_auth_metadata(data)
    if entry.auth_type != "bearer":
        raise AuthError(f"authentication type {entry.auth_type!r} is not accepted; send a bearer JWT")
    if not entry.payload:
        raise AuthError(NO_TOKEN)
    try:
        return entry.payload.decode("utf-8")
    except UnicodeDecodeError:
        raise AuthError("malformed token: bearer token is not UTF-8") from None


def encode_auth_metadata(auth_type: str, payload: bytes) -> bytes:
    """Encode an authentication entry, using the well-known id when the type has one."""
    ident = _IDS_BY_NAME.get(auth_type)
    if ident is not None:
        return bytes((_WELL_KNOWN_FLAG | ident,)) + payload
    name = auth_type.encode("ascii")
    if not 1 <= len(name) <= _MAX_TYPE_NAME:
        raise ValueError(f"auth type name must be 1..{_MAX_TYPE_NAME} ASCII bytes, got {len(name)}")
    return bytes((len(name) - 1,)) + name + payload


def encode_bearer(token: str) -> bytes:
    """Authentication entry carrying ``token`` as a bearer credential (for clients and tests)."""
    return encode_auth_metadata("bearer", token.encode("utf-8"))
