"""Key rotation without a restart: the broker re-reads ``--jwt-keys`` (PEM or JWKS) when it changes.

The file is replaced the way an operator (or a secret manager) would: write a new file, then
rename it over the old one. A token of a key not yet in the file is refused; after the
rotation it is admitted, and a token of a key dropped from the file is refused.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from broker.frames import ErrorCode, FrameType
from tests.e2e_security.clients import raw_with_token
from tests.e2e_security.pki import AUDIENCE, ISSUER, KEY_TYPES, Pki
from tests.support.admin import wait_for
from tests.support.brokerproc import BrokerFactory, BrokerProcess


def _jwk(kind: str, pem: Path) -> dict[str, Any]:
    key = serialization.load_pem_public_key(pem.read_bytes())
    jwk = dict(jwt.get_algorithm_by_name(KEY_TYPES[kind]).to_jwk(key, as_dict=True))  # type: ignore[arg-type]
    return {**jwk, "kid": f"{kind}-1", "use": "sig", "alg": KEY_TYPES[kind]}


def rotate(keys_file: Path, pki: Pki, *kinds: str) -> None:
    """Replace ``keys_file`` (PEM or, for a ``.json`` name, JWKS) by one holding the ``kinds`` keys."""
    publics = {kind: pki.root / "keys" / f"{kind}-public.pem" for kind in kinds}
    if keys_file.suffix == ".json":
        content = json.dumps({"keys": [_jwk(kind, pem) for kind, pem in publics.items()]}).encode()
    else:
        content = b"".join(pem.read_bytes() for pem in publics.values())
    staged = keys_file.with_name(keys_file.name + ".staged")
    staged.write_bytes(content)
    os.replace(staged, keys_file)


async def admitted(node: BrokerProcess, token: str) -> bool:
    """Whether a SETUP with ``token`` is accepted (a request then gets routed)."""
    async with await raw_with_token(node, token) as raw:
        sid = await raw.request(FrameType.REQUEST_RESPONSE, "rotation.nobody.ping")
        frame = await raw.recv()
        code, message = frame.error
        if frame.stream_id == 0:
            assert code == ErrorCode.REJECTED_SETUP and message.startswith("authentication failed: "), frame
            return False
        assert frame.stream_id == sid and "no provider" in message, frame
        return True


async def _refused(node: BrokerProcess, token: str) -> bool:
    return not await admitted(node, token)


@pytest.mark.parametrize("file_name", ["jwt-keys.pem", "jwks.json"])
async def test_rotated_key_file_is_picked_up_without_restart(
    broker_factory: BrokerFactory, pki: Pki, file_name: str
) -> None:
    keys_file = broker_factory.tmpdir() / file_name
    rotate(keys_file, pki, "ed25519")
    node = await asyncio.to_thread(
        broker_factory.start,
        "--jwt-keys", str(keys_file), "--jwt-issuer", ISSUER, "--jwt-audience", AUDIENCE,
    )  # fmt: skip
    old = pki.token("old-key-user", ("admin",), kind="ed25519")
    new = pki.token("new-key-user", ("admin",), kind="ec")
    assert await admitted(node, old)
    assert not await admitted(node, new)
    rotate(keys_file, pki, "ec")
    await wait_for(lambda: admitted(node, new), message="the new key in force")
    assert await _refused(node, old)
    assert node.running
