"""One validator per value (issue 12 §9): the config file and the config store agree.

Each value goes in through both doors of a real ``rsbroker serve``: the config file (or
``--jwt-keys`` file, for keys) at start, and ``PUT /api/v1/config/<key>`` on a running node.
Both must give the same verdict — before, a PUT answered 200 for values every node then
skipped (globs with spaces, 1024-bit RSA keys) and 400 for values the file accepts
(``{"pem": ...}`` keys, a service policy without ``policy``). An accepted key takes effect:
a token it signed is admitted.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from broker.auth.certs import public_pem
from broker.auth.tokens import load_private_key, mint_token
from tests.e2e_security.pki import AUDIENCE, ISSUER, Pki
from tests.e2e_security.test_key_rotation import admitted
from tests.support.brokerproc import BrokerFactory, BrokerProcess, BrokerStartError

#: (accepted?, rule) — access rules
ACL = [
    (True, {"principals": ["alice", "svc-*"], "roles": ["ops"], "register": ["com.acme.*"], "call": ["com.acme.*"]}),
    (True, {}),
    (False, {"principals": ["alice smith"]}),
    (False, {"call": ["com.acme.*\t"]}),
    (False, {"call": [""]}),
    (False, {"call": "com.acme.*"}),
    (False, {"calls": ["com.acme.*"]}),
    (False, {"call": ["x" * 600]}),
]
#: (accepted?, policy) — service policies
SERVICES = [
    (True, {"policy": "weighted", "weights": {"a": 3, "b": 0}, "prefer_local": True}),
    (True, {"weights": {"a": 1}}),
    (True, {"prefer_local": False}),
    (False, {"policy": "random"}),
    (False, {"weights": {"a": -1}}),
    (False, {"weights": {"a": True}}),
    (False, {"prefer_local": "no"}),
    (False, {"policy": "round_robin", "extra": 1}),
    (False, {"weights": [1]}),
]


def toml_value(value: Any) -> str:
    """The TOML text of a JSON-like value (inline tables; JSON's string escapes are TOML's)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value)


def file_verdict(factory: BrokerFactory, *args: str, config: str | None = None) -> tuple[bool, str]:
    """Does ``rsbroker serve`` start with these settings? A refusal must be exit code 2 with a reason."""
    try:
        node = factory.start(*args, config=config)
    except BrokerStartError as exc:
        assert "exit code 2" in str(exc), exc  # refused by the settings check, not a crash
        return False, str(exc).splitlines()[-1]
    node.stop()
    return True, "serving"


async def put_verdict(node: BrokerProcess, key: str, value: Any) -> tuple[bool, str]:
    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {node.admin_token}"}
        async with http.put(f"{node.admin_url}/api/v1/config/{key}", data=json.dumps(value), headers=headers) as response:
            text = await response.text()
            assert response.status in (200, 400), text  # a refusal is a 400 with a reason, never a 500
            return response.status == 200, text


@pytest.fixture(scope="module")
def node(module_broker_factory: BrokerFactory, pki: Pki) -> BrokerProcess:
    """A node whose key file trusts only the Ed25519 key: RSA and EC tokens need a stored key."""
    key_file = module_broker_factory.tmpdir() / "ed25519-only.pem"
    key_file.write_bytes((pki.root / "keys" / "ed25519-public.pem").read_bytes())
    args = pki.jwt_args()
    args[args.index(str(pki.jwt_keys))] = str(key_file)
    return module_broker_factory.start(*args, admin_token=pki.admin_token())


@pytest.fixture(scope="module")
def keys(pki: Pki) -> dict[str, tuple[bool, Any, str]]:
    """name -> (accepted?, stored value, content of the equivalent --jwt-keys file)."""
    rsa_pem = (pki.root / "keys" / "rsa-public.pem").read_text()
    ec_pem = (pki.root / "keys" / "ec-public.pem").read_text()
    ec_key = serialization.load_pem_public_key(ec_pem.encode())
    ec_jwk = dict(jwt.get_algorithm_by_name("ES256").to_jwk(ec_key, as_dict=True))  # type: ignore[arg-type]
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    small_pem = public_pem(small).decode()
    private_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()

    def jwks(jwk: dict[str, Any]) -> str:
        return json.dumps({"keys": [jwk]})

    return {
        "rsa-pem": (True, rsa_pem, rsa_pem),
        "ec-pem-object": (True, {"pem": ec_pem}, ec_pem),
        "ec-jwk": (True, ec_jwk, jwks(ec_jwk)),
        "rsa-1024": (False, small_pem, small_pem),
        "rsa-1024-object": (False, {"pem": small_pem}, small_pem),
        "private-pem": (False, private_pem, private_pem),
        "private-jwk": (False, {**ec_jwk, "d": ec_jwk["x"]}, jwks({**ec_jwk, "d": ec_jwk["x"]})),
        "symmetric-jwk": (False, {"kty": "oct", "k": "c2VjcmV0"}, jwks({"kty": "oct", "k": "c2VjcmV0"})),
    }


@pytest.mark.parametrize("index", range(len(ACL)))
async def test_access_rules_get_one_verdict_from_the_config_file_and_the_store(
    module_broker_factory: BrokerFactory, node: BrokerProcess, index: int
) -> None:
    good, rule = ACL[index]
    by_file = file_verdict(module_broker_factory, config=f'acl."r{index}" = {toml_value(rule)}\n')
    by_put = await put_verdict(node, f"acl/r{index}", rule)
    assert by_file[0] == by_put[0] == good, (by_file, by_put)


@pytest.mark.parametrize("index", range(len(SERVICES)))
async def test_service_policies_get_one_verdict_from_the_config_file_and_the_store(
    module_broker_factory: BrokerFactory, node: BrokerProcess, index: int
) -> None:
    good, policy = SERVICES[index]
    by_file = file_verdict(module_broker_factory, config=f'services."s{index}" = {toml_value(policy)}\n')
    by_put = await put_verdict(node, f"services/s{index}", policy)
    assert by_file[0] == by_put[0] == good, (by_file, by_put)


@pytest.mark.parametrize(
    "name", ["rsa-pem", "ec-pem-object", "ec-jwk", "rsa-1024", "rsa-1024-object", "private-pem", "private-jwk", "symmetric-jwk"]
)
async def test_keys_get_one_verdict_from_the_key_file_and_the_store_and_accepted_ones_verify_tokens(
    module_broker_factory: BrokerFactory,
    node: BrokerProcess,
    pki: Pki,
    keys: dict[str, tuple[bool, Any, str]],
    name: str,
) -> None:
    good, value, file_text = keys[name]
    kind = "rsa" if name.startswith("rsa") else "ec"
    token = mint_token(
        load_private_key(pki.private_key(kind)), sub="kid-user", roles=("admin",), issuer=ISSUER, audience=AUDIENCE, kid=name
    )
    assert not await admitted(node, token)  # nothing trusts this key under this kid yet
    key_file = module_broker_factory.tmpdir() / ("jwks.json" if file_text.startswith("{") else "key.pem")
    key_file.write_text(file_text)
    by_file = file_verdict(module_broker_factory, "--jwt-keys", str(key_file))
    by_put = await put_verdict(node, f"keys/{name}", value)
    assert by_file[0] == by_put[0] == good, (by_file, by_put)
    if good:  # an accepted key takes effect: a token naming it by kid is admitted
        assert await admitted(node, token)
