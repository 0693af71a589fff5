"""Node settings: one dataclass, four sources, one validator.

Precedence, lowest first: built-in defaults < ``--config`` TOML file < ``RSBROKER_*``
environment variables < command-line flags. Every flag has a config-file key of the same
name with dashes turned to underscores (``--max-frame-size`` ↔ ``max_frame_size`` ↔
``RSBROKER_MAX_FRAME_SIZE``). Contradictory or impossible settings are refused at start
with a message naming the setting, never discovered later under load.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from broker.frames import MAX_FRAME_LENGTH
from broker.registry import POLICIES, ServicePolicy


class SettingsError(ValueError):
    """A setting is missing, malformed or contradicts another one."""


def parse_hostport(text: str, what: str) -> tuple[str, int]:
    """``"127.0.0.1:7000"`` / ``"[::1]:7000"`` → ``(host, port)``."""
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise SettingsError(f"{what}: expected HOST:PORT, got '{text}'")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        number = int(port)
    except ValueError:
        raise SettingsError(f"{what}: port '{port}' is not a number") from None
    if not 0 <= number <= 65535:
        raise SettingsError(f"{what}: port {number} is out of range")
    return host, number


@dataclass
class Settings:
    """Everything a node needs to start. Values are the defaults, with why beside them."""

    node_id: str = "n1"
    tcp: str | None = "127.0.0.1:7000"
    ws: str | None = None
    admin: str | None = None
    #: gossip address (UDP + TCP on one port); None = a single node, no cluster
    cluster: str | None = None
    join: list[str] = field(default_factory=list)
    #: address other nodes and clients should use to reach this node's TCP listener (NAT, containers)
    advertise: str | None = None
    data_dir: str | None = None
    #: how a brand-new cluster starts (Consul's bootstrap-expect): 0 = a node with empty storage
    #: and no --join starts a cluster of its own; N = no node starts one alone, the N nodes with
    #: the smallest ids start it together once gossip shows N live nodes and none already in a
    #: cluster. A node with a data directory never bootstraps: it rejoins the peers it knew.
    bootstrap_expect: int = field(
        default=0,
        metadata={
            "help": "start a brand-new cluster only once this many nodes see each other, so that one "
            "command line (with --join) serves every node, the first included; 0 (default): a node "
            "without --join and without state starts a cluster alone. Ignored by a node with state."
        },
    )
    allow_anonymous: bool = False
    jwt_keys: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_leeway_s: float = 30.0  # clock skew tolerated on exp/nbf, as most IdPs suggest
    close_on_token_expiry: bool = True
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    cluster_key: str | None = None
    #: gossip timing: lan (memberlist's defaults: no false deaths through a 2 s pause, a crash
    #: found in ~5 s at 3 nodes), failover (crash found in ~3 s, but a pause over ~1.5 s is a
    #: death), wan, local — see cluster/swim/config.py for each value and its reason
    gossip_profile: str = "lan"
    #: the TCP length prefix is 24 bits: 16 MiB - 1 is the protocol's own ceiling
    max_frame_size: int = MAX_FRAME_LENGTH
    #: per connection; generous for multiplexed clients, small enough to bound memory
    max_streams: int = 100_000
    #: per source IP; protects against one host exhausting file descriptors
    max_connections_per_source: int = 10_000
    #: a connection that has not sent SETUP by then is closed (slowloris)
    setup_timeout_s: float = 10.0
    #: output queued for one connection before its sources are paused (back-pressure)
    max_pending_bytes: int = 4 << 20
    #: SIGTERM waits this long for in-flight streams before closing connections
    drain_timeout_s: float = 30.0
    #: LEASE granted to clients that negotiate leases: time to live and request count
    lease_ttl_ms: int = 30_000
    lease_requests: int = 0x7FFFFFFF
    default_policy: str = "round_robin"
    services: dict[str, dict[str, Any]] = field(default_factory=dict)
    acl: Any = None
    log_level: str = "info"
    #: the admin API on TLS (with the listeners' certificate) and/or behind a bearer JWT with role admin
    admin_tls: bool = False
    admin_require_token: bool = False

    def validate(self) -> None:
        if not self.node_id or any(c.isspace() for c in self.node_id):
            raise SettingsError("node_id must be a non-empty name without spaces")
        if self.tcp is None and self.ws is None:
            raise SettingsError("at least one of --tcp and --ws is needed, or no client can connect")
        for name in ("tcp", "ws", "admin", "cluster", "advertise"):
            value = getattr(self, name)
            if value is not None:
                parse_hostport(value, f"--{name}")
        for seed in self.join:
            parse_hostport(seed, "--join")
        if self.join and not self.cluster:
            raise SettingsError("--join needs --cluster (this node's own gossip address)")
        if self.bootstrap_expect < 0:
            raise SettingsError("bootstrap_expect must be 0 (off) or the number of nodes of a new cluster")
        if self.bootstrap_expect > 1 and not self.cluster:
            raise SettingsError("--bootstrap-expect needs --cluster: the nodes find each other by gossip")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise SettingsError("--tls-cert and --tls-key go together")
        if self.tls_client_ca and not self.tls_cert:
            raise SettingsError("--tls-client-ca (mTLS) needs --tls-cert and --tls-key")
        for name in ("jwt_keys", "tls_cert", "tls_key", "tls_client_ca", "cluster_key"):
            value = getattr(self, name)
            if value and not Path(value).is_file():
                raise SettingsError(f"--{name.replace('_', '-')}: no such file '{value}'")
        if (self.jwt_issuer or self.jwt_audience) and not self.jwt_keys:
            raise SettingsError("--jwt-issuer/--jwt-audience need --jwt-keys (which turns authentication on)")
        if not 64 <= self.max_frame_size <= MAX_FRAME_LENGTH:
            raise SettingsError(f"max_frame_size must be from 64 to {MAX_FRAME_LENGTH}")
        for name in ("max_streams", "max_connections_per_source", "max_pending_bytes", "lease_ttl_ms", "lease_requests"):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{name} must be positive")
        for name in ("setup_timeout_s", "drain_timeout_s"):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{name} must be positive")
        if self.admin_tls and not self.tls_cert:
            raise SettingsError("--admin-tls needs --tls-cert and --tls-key")
        if self.admin_require_token and not self.jwt_keys:
            raise SettingsError("--admin-require-token needs --jwt-keys to verify admin tokens")
        from cluster.swim.config import PROFILES

        if self.gossip_profile not in PROFILES:
            raise SettingsError(f"gossip_profile must be one of {', '.join(sorted(PROFILES))}")
        if self.default_policy not in POLICIES:
            raise SettingsError(f"default_policy must be one of {', '.join(POLICIES)}")
        for service, obj in self.services.items():
            try:
                ServicePolicy.from_obj(obj)
            except ValueError as exc:
                raise SettingsError(f"services.{service}: {exc}") from None

    @property
    def auth_enabled(self) -> bool:
        """Clients must prove who they are: by bearer JWT, by client certificate, or either."""
        return bool(self.jwt_keys or self.tls_client_ca)


_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}
#: settings that only the config file can give (structured values)
_FILE_ONLY = {"services", "acl"}


def _coerce(name: str, value: Any, source: str) -> Any:
    """Turn a string (env) or TOML value into the field's type."""
    default = _FIELDS[name].default
    kind = type(default) if default is not dataclasses.MISSING and default is not None else None
    if name == "join":
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
        raise SettingsError(f"{source}: join must be a list of HOST:PORT")
    if isinstance(value, str) and kind is bool:
        lowered = value.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off", ""):
            return False
        raise SettingsError(f"{source}: '{value}' is not a boolean")
    if kind in (int, float) and not isinstance(value, bool):
        try:
            return kind(value)
        except (TypeError, ValueError):
            raise SettingsError(f"{source}: '{value}' is not a number") from None
    if kind is bool and not isinstance(value, bool):
        raise SettingsError(f"{source}: expected true or false")
    return value


def from_file(path: str) -> dict[str, Any]:
    try:
        data = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise SettingsError(f"--config: no such file '{path}'") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"--config {path}: {exc}") from None
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in _FIELDS:
            raise SettingsError(f"--config {path}: unknown setting '{key}'")
        out[name] = _coerce(name, value, f"{path}: {key}")
    return out


def from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in _FIELDS:
        if name in _FILE_ONLY:
            continue
        var = "RSBROKER_" + name.upper()
        if var in environ:
            out[name] = _coerce(name, environ[var], var)
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per setting (except the structured, file-only ones); defaults stay None."""
    parser.add_argument("--config", help="TOML file with settings (keys as the flags, dashes or underscores)")
    for name, f in _FIELDS.items():
        if name in _FILE_ONLY:
            continue
        flag = "--" + name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else None
        if isinstance(default, bool):
            parser.add_argument(flag, dest=name, action="store_const", const=True, default=None)
            parser.add_argument(
                "--no-" + name.replace("_", "-"), dest=name, action="store_const", const=False, default=None
            )
        else:
            text = f.metadata.get("help", "")
            parser.add_argument(flag, dest=name, default=None, help=f"{text} (default: {default})".lstrip())


def load(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Settings:
    """Merge file, environment and flags into validated Settings."""
    environ = os.environ if environ is None else environ
    merged: dict[str, Any] = {}
    config_path = getattr(args, "config", None) or environ.get("RSBROKER_CONFIG")
    if config_path:
        merged.update(from_file(config_path))
    merged.update(from_env(environ))
    for name in _FIELDS:
        value = getattr(args, name, None)
        if value is not None:
            merged[name] = _coerce(name, value, "--" + name.replace("_", "-"))
    settings = Settings(**merged)
    settings.validate()
    return settings
