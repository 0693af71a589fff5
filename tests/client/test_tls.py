"""``broker.client`` over TLS (``tls://``) and secure WebSocket (``wss://``) to a node
serving a certificate from ``rsbroker certs``, trusting the CA with ``ca_file``."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from broker.auth.tools import certs_main
from broker.client import connect
from tests.client.service import Probe, service_router
from tests.support.brokerproc import BrokerFactory, BrokerProcess

SERVICE = "tls.greeter"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pki")
    assert certs_main(["init", "--out", str(root)]) == 0
    assert certs_main(["node", "--ca-dir", str(root), "--name", "n1", "--host", "127.0.0.1"]) == 0
    return root


@pytest.fixture(scope="module")
def tls_node(module_broker_factory: BrokerFactory, pki: Path) -> BrokerProcess:
    return module_broker_factory.start("--tls-cert", str(pki / "n1.pem"), "--tls-key", str(pki / "n1-key.pem"))


async def test_provider_over_tls_and_requester_over_wss(tls_node: BrokerProcess, pki: Path) -> None:
    ca = str(pki / "ca.pem")
    async with connect(f"tls://{tls_node.tcp}", services=[SERVICE], router=service_router(SERVICE, Probe()), ca_file=ca):
        async with connect(f"wss://{tls_node.ws}/rsocket", ca_file=ca) as client:
            assert await client.request_response(f"{SERVICE}.hello", b"tls") == b"hello tls"
            assert [item async for item in client.request_stream(f"{SERVICE}.count", b"3")] == [b"1", b"2", b"3"]


async def test_an_untrusted_certificate_is_refused(tls_node: BrokerProcess) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        async with connect(f"tls://{tls_node.tcp}"):
            pass
