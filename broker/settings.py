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
from broker.settings_help import HELP, TOPICS


LOG_FORMATS = ("text", "json")


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
    #: text for people reading a terminal, json (one object per line) for log shippers
    log_format: str = "text"
    #: the admin API on TLS (with the listeners' certificate) and/or behind a bearer JWT with role admin
    admin_tls: bool = False
    admin_require_token: bool = False
    #: route labels per service in the request metrics; later routes share the label 'other'
    metrics_max_routes_per_service: int = 50
    #: service labels in the request metrics; later services share the label 'other'
    metrics_max_services: int = 500
    #: services starting with one of these share one label '<prefix>*' (e.g. device.* for
    #: thousands of one-instance device services)
    metrics_aggregate_prefixes: list[str] = field(default_factory=list)
    #: hop spans of traced requests kept per route for the admin API; 0 turns tracing off
    trace_spans_kept: int = 20

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
        for name in (
            "max_streams",
            "max_connections_per_source",
            "max_pending_bytes",
            "lease_ttl_ms",
            "lease_requests",
            "metrics_max_routes_per_service",
            "metrics_max_services",
        ):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{name} must be positive")
        if self.trace_spans_kept < 0:
            raise SettingsError("trace_spans_kept must be 0 (tracing off) or more")
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
        if self.log_format not in LOG_FORMATS:
            raise SettingsError(f"log_format must be one of {', '.join(LOG_FORMATS)}")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise SettingsError("log_level must be one of debug, info, warning, error")
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
#: list-valued settings: comma-separated in flags and environment variables
_LIST_FIELDS = {"join", "metrics_aggregate_prefixes"}


def _coerce(name: str, value: Any, source: str) -> Any:
    """Turn a string (env) or TOML value into the field's type."""
    default = _FIELDS[name].default
    kind = type(default) if default is not dataclasses.MISSING and default is not None else None
    if name in _LIST_FIELDS:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
        raise SettingsError(f"{source}: {name} must be a list of strings (comma-separated in flags and env)")
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
    """One flag per setting (except the structured, file-only ones), grouped by topic in
    ``--help``, each with what it does, its unit, default and environment variable.
    Parsed values stay None so that the file and the environment can supply them."""
    groups = {topic: parser.add_argument_group(title) for topic, title in TOPICS.items()}
    groups["node"].add_argument(
        "--config", help="TOML file with settings (keys as the flags, dashes or underscores); env RSBROKER_CONFIG"
    )
    for name, f in _FIELDS.items():
        if name in _FILE_ONLY:
            continue
        flag = "--" + name.replace("_", "-")
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default  # type: ignore[misc]
        topic, text = HELP.get(name, ("node", name.replace("_", " ")))
        group = groups[topic]
        env = "RSBROKER_" + name.upper()
        if isinstance(default, bool):
            group.add_argument(
                flag, dest=name, action="store_const", const=True, default=None,
                help=f"{text} (default: {'on' if default else 'off'}; env {env}=true)",
            )
            group.add_argument(
                "--no-" + name.replace("_", "-"), dest=name, action="store_const", const=False, default=None,
                help=f"turn {flag} off",
            )
        else:
            shown = ",".join(default) if isinstance(default, list) else default
            shown = "none" if shown in (None, "") else shown
            group.add_argument(flag, dest=name, default=None, metavar=_metavar(name, default), help=f"{text} (default: {shown}; env {env})")


def _metavar(name: str, default: Any) -> str:
    if name in ("tcp", "ws", "admin", "cluster", "advertise"):
        return "HOST:PORT"
    if name == "join":
        return "HOST:PORT,..."
    if name in ("jwt_keys", "tls_cert", "tls_key", "tls_client_ca", "cluster_key"):
        return "FILE"
    if isinstance(default, (int, float)):
        return "N"
    return "LIST" if isinstance(default, list) else "TEXT"


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
