"""TLS contexts for the listeners and for clients, and the principal of a verified peer.

Server contexts present the node certificate; given a client CA they also verify client
certificates (mTLS), required by default. Client contexts trust a given CA (or the system
store) and may present a client certificate. TLS 1.2 is the floor.

With mTLS the peer's certificate *is* the credential: its subject CN names the
principal, its OU attributes are its roles (``rsbroker certs client --roles`` writes
them), and its notAfter is when the credential runs out.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Mapping
from typing import Any

from .principal import Principal

__all__ = ["client_context", "peer_principal", "principal_from_peercert", "server_context"]

StrPath = str | os.PathLike[str]


def _load_chain(context: ssl.SSLContext, cert_file: StrPath, key_file: StrPath) -> None:
    try:
        context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot load TLS certificate {cert_file} with key {key_file}: {exc}") from None


def _load_ca(context: ssl.SSLContext, ca_file: StrPath) -> None:
    try:
        context.load_verify_locations(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot load CA certificates from {ca_file}: {exc}") from None


def server_context(
    cert_file: StrPath,
    key_file: StrPath,
    *,
    client_ca_file: StrPath | None = None,
    require_client_cert: bool = True,
) -> ssl.SSLContext:
    """Context for a TLS listener; with ``client_ca_file``, client certificates are verified (mTLS).

    ``require_client_cert=False`` verifies a certificate when one is offered but lets
    clients without one in (they then authenticate with a JWT instead).
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(context, cert_file, key_file)
    if client_ca_file is not None:
        _load_ca(context, client_ca_file)
        context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    return context


def client_context(
    *,
    ca_file: StrPath | None = None,
    cert_file: StrPath | None = None,
    key_file: StrPath | None = None,
    check_hostname: bool = True,
) -> ssl.SSLContext:
    """Context for dialling a TLS listener (clients, tests, broker-to-broker links).

    ``ca_file`` None trusts the system store. ``cert_file``/``key_file`` present a client
    certificate for mTLS.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = check_hostname
    if ca_file is not None:
        _load_ca(context, ca_file)
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if cert_file is not None or key_file is not None:
        if cert_file is None or key_file is None:
            raise ValueError("a client certificate needs both cert_file and key_file")
        _load_chain(context, cert_file, key_file)
    return context


def principal_from_peercert(cert: Mapping[str, Any] | None) -> Principal | None:
    """Principal for a *verified* peer certificate as ``SSLSocket.getpeercert()`` returns it.

    None when there is no certificate or its subject has no CN. Only call this on
    certificates the TLS layer verified (``verify_mode`` REQUIRED/OPTIONAL); an unverified
    ``getpeercert()`` is empty anyway.
    """
    if not cert:
        return None
    attributes = [pair for rdn in cert.get("subject", ()) for pair in rdn]
    names = [value for key, value in attributes if key == "commonName"]
    if not names or not names[0]:
        return None
    roles = frozenset(value for key, value in attributes if key == "organizationalUnitName" and value)
    not_after = cert.get("notAfter")
    expires_at = float(ssl.cert_time_to_seconds(not_after)) if isinstance(not_after, str) else None
    claims = {"subject": attributes, "serialNumber": cert.get("serialNumber"), "notAfter": not_after}
    return Principal(name=names[0], roles=roles, expires_at=expires_at, claims=claims, source="mtls")


def peer_principal(transport: asyncio.BaseTransport | None) -> Principal | None:
    """Principal for the verified client certificate of an accepted TLS connection, if any.

    Works for asyncio stream transports and aiohttp's ``request.transport`` alike (None,
    as aiohttp gives for a closed request, yields None).
    """
    if transport is None:
        return None
    return principal_from_peercert(transport.get_extra_info("peercert"))
