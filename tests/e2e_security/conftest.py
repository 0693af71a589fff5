"""Fixtures of the end-to-end security suite: key material made with ``rsbroker certs``.

* ``pki`` — one :class:`tests.e2e_security.pki.Pki` per session: a CA with a node
  certificate for 127.0.0.1, a trusted client certificate (``device-7``, role ``iot``), a
  client certificate from a second, untrusted CA, and JWT key pairs of every supported type
  whose public halves sit together in one ``--jwt-keys`` file. RSA generation is slow on
  this machine, so all of it is made once.
* ``transport`` — ``"tcp"`` and ``"ws"`` for tests that run over both listeners.
"""

from __future__ import annotations

import pytest

from tests.e2e_security.pki import Pki, make_pki


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("e2e-pki"))


@pytest.fixture(params=["tcp", "ws"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)
