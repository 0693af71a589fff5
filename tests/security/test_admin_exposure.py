"""Settings that would expose the admin API are refused at start, naming the setting.

The end-to-end refusal (a real ``rsbroker serve`` that exits) is in
``tests/e2e_security/test_admin_lockdown.py``; here every address form and every source of
the new settings (flag, config key, ``RSBROKER_*``) without binding anything.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from broker.auth.certs import public_pem
from broker.settings import Settings, SettingsError, add_arguments, load


@pytest.mark.parametrize("address", ["0.0.0.0:7002", "[::]:7002", "10.0.0.5:7002", "broker.example:7002"])
def test_admin_off_loopback_without_authentication_is_refused(address: str) -> None:
    with pytest.raises(SettingsError, match=r"is not a loopback address.*--jwt-keys"):
        Settings(admin=address).validate()
    with pytest.raises(SettingsError):
        Settings(admin=address, allow_anonymous=True).validate()  # anonymous clients, still no anonymous admin


@pytest.mark.parametrize("address", ["127.0.0.1:7002", "[::1]:7002", "localhost:7002", "127.8.0.1:0"])
def test_admin_on_loopback_without_authentication_is_the_developer_case(address: str) -> None:
    settings = Settings(admin=address)
    settings.validate()
    assert not settings.admin_token_required


def test_admin_off_loopback_with_jwt_keys_requires_the_token(tmp_path: Path) -> None:
    keys = tmp_path / "jwt.pem"
    keys.write_bytes(public_pem(ed25519.Ed25519PrivateKey.generate()))
    settings = Settings(admin="0.0.0.0:7002", jwt_keys=str(keys))
    settings.validate()
    assert settings.admin_token_required


def test_mtls_only_admin_needs_admin_tls(tmp_path: Path) -> None:
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_text("")
    mtls = {"tls_cert": str(tmp_path / "cert.pem"), "tls_key": str(tmp_path / "key.pem"), "tls_client_ca": str(tmp_path / "ca.pem")}
    with pytest.raises(SettingsError, match="--admin-tls"):
        Settings(admin="127.0.0.1:7002", **mtls).validate()
    Settings(admin="0.0.0.0:7002", admin_tls=True, **mtls).validate()


def test_new_settings_from_flag_file_and_environment(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    config = tmp_path / "node.toml"
    config.write_text('admin_allowed_hosts = ["rsbroker", "rsbroker.ops"]\njwt_max_ttl_s = 3600\n')
    args = parser.parse_args(["--config", str(config), "--ws-allowed-origins", "https://a.example,https://b.example"])
    settings = load(args, environ={"RSBROKER_JWT_MAX_TTL_S": "600"})
    assert settings.admin_allowed_hosts == ["rsbroker", "rsbroker.ops"]
    assert settings.ws_allowed_origins == ["https://a.example", "https://b.example"]
    assert settings.jwt_max_ttl_s == 600.0
    with pytest.raises(SettingsError, match="jwt_max_ttl_s must be positive"):
        load(parser.parse_args(["--jwt-max-ttl-s", "0"]), environ={})
