"""Access rules written once to the Raft config store take effect on every node, live.

Three nodes with JWT authentication on. A caller with no role is denied everywhere (default
deny); one ``PUT /api/v1/config/acl/<name>`` on n2 grants it, and from then on its requests
pass on n1, n2 and n3 without any restart. Deleting the rule denies it again everywhere.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.auth.certs import public_pem
from broker.auth.tokens import mint_token
from tests.cluster.peers import ask_who, provider, requester
from tests.support.admin import send_json, wait_for
from tests.support.cluster import Cluster, ClusterFactory, put_config


@pytest.fixture(scope="module")
def signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
async def secured(cluster_factory: ClusterFactory, signing_key: Ed25519PrivateKey) -> Cluster:
    keys = cluster_factory.brokers.tmpdir() / "jwt-keys.pem"
    Path(keys).write_bytes(public_pem(signing_key))
    admin = mint_token(signing_key, sub="operator", roles=["admin"])
    cluster = cluster_factory.start(3, "--jwt-keys", str(keys), "--cluster-key", str(cluster_factory.key_file()), admin_token=admin)
    await cluster.wait_converged()
    return cluster


async def _allowed(client: object, service: str, token: str) -> bool:
    """True if the call reached the provider, False if the node denied it."""
    try:
        return await ask_who(client, service, token) == "guarded"  # type: ignore[arg-type]
    except Exception as exc:  # noqa: BLE001 — whatever rsocket-py raises must name the denial
        assert "access denied" in str(exc), exc
        return False


async def test_an_acl_rule_put_on_one_node_grants_calls_on_every_node(
    secured: Cluster, signing_key: Ed25519PrivateKey, service: str
) -> None:
    provider_token = mint_token(signing_key, sub="provider", roles=["admin"])
    carol = mint_token(signing_key, sub="carol")
    async with provider(secured["n1"], service, "guarded", token=provider_token):
        await secured.wait_serves(service, {"guarded"})
        for node in secured:
            async with requester(node, token=carol) as client:
                assert not await _allowed(client, service, carol), f"carol allowed on {node.node_id} before the rule"

        rule = {"principals": ["carol"], "call": [f"{service}.*"]}
        await put_config(secured["n2"], "acl/carol", rule)
        for node in secured:
            async with requester(node, token=carol) as client:
                await wait_for(functools.partial(_allowed, client, service, carol), message=f"the rule applied on {node.node_id}")

        status, body = await send_json(secured["n3"], "DELETE", "/api/v1/config/acl/carol")
        assert status == 200, body
        for node in secured:
            async with requester(node, token=carol) as client:

                async def denied() -> bool:
                    return not await _allowed(client, service, carol)

                await wait_for(denied, message=f"the rule removed on {node.node_id}")
