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
from urllib.parse import urlsplit

from broker import limits, otlp
from broker.limits import NameLimits
from broker.auth.acl import rules_from_config
from broker.auth.keys import load_key_file
from broker.frames import MAX_FRAME_LENGTH
from broker.loopback import is_loopback_host
from broker.registry import POLICIES, ServicePolicy
from broker.settings_help import HELP, TOPICS
from broker.traffic import limits_from_config


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
    #: how a brand-new cluster starts (Consul's bootstrap-expect): 0 = a node with empty storage
    #: and no --join starts a cluster of its own; N = no node starts one alone, the N nodes with
    #: the smallest ids start it together once gossip shows N live nodes and none already in a
    #: cluster. A node with a data directory never bootstraps: it rejoins the peers it knew.
    bootstrap_expect: int = 0
    allow_anonymous: bool = False
    jwt_keys: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_leeway_s: float = 30.0  # clock skew tolerated on exp/nbf, as most IdPs suggest
    #: a day: a stolen token is worth at most that long, and clients refresh far more often
    jwt_max_ttl_s: float = 86_400.0
    #: verified tokens remembered (LRU) so a fleet's shared or reused token is not verified again
    jwt_cache_size: int = 10_000
    close_on_token_expiry: bool = True
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    cluster_key: str | None = None
    #: gossip timing: lan (memberlist's defaults: no false deaths through a 2 s pause, a crash
    #: found in ~5 s at 3 nodes), failover (crash found in ~3 s, but a pause over ~1.5 s is a
    #: death), wan, local — see cluster/swim/config.py for each value and its reason
    gossip_profile: str = "lan"
    #: cluster port, Raft streams: the largest message one peer may send (a config-store
    #: snapshot fits easily) and how long its body may take once its header came; together
    #: they bound what an unauthenticated peer can make a node buffer, and for how long
    cluster_max_message_bytes: int = 16 << 20
    cluster_read_timeout_s: float = 10.0
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
    # -- client-port limits (issue 11 §5): each is named in its error and in
    #    rsbroker_limit_hits_total{limit=...}; see broker/limits.py
    max_setup_frame_size: int = 64 * 1024
    max_metadata_entries: int = 64
    max_request_metadata: int = 1 << 20
    max_fragments: int = 1024
    max_reassembly_bytes: int = 4 << 20
    reassembly_timeout_s: float = 10.0
    max_services: int = 256
    max_service_name_bytes: int = limits.GOSSIP_MAX_SERVICE_BYTES
    max_instance_name_bytes: int = limits.GOSSIP_MAX_INSTANCE_BYTES
    max_tags: int = limits.GOSSIP_MAX_TAGS
    max_tag_key_bytes: int = limits.GOSSIP_MAX_TAG_KEY_BYTES
    max_tag_value_bytes: int = limits.GOSSIP_MAX_TAG_VALUE_BYTES
    #: SETUPs accepted per second (connect storms); 0 = off
    max_setups_per_s: int = 10_000
    # -- end of client-port limits
    #: SIGTERM waits this long for in-flight streams before closing connections
    drain_timeout_s: float = 30.0
    #: LEASE granted to clients that negotiate leases: time to live and request count
    lease_ttl_ms: int = 30_000
    lease_requests: int = 0x7FFFFFFF
    default_policy: str = "round_robin"
    #: an idempotent request larger than this is not kept for a retry (broker.traffic): a
    #: retry holds a copy of each request in flight until its provider answers
    max_retry_frame_size: int = 64 * 1024
    services: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: rate limits, ``[limits.<name>]``: the base the config store's ``limits/`` are laid over
    limits: dict[str, Any] = field(default_factory=dict)
    acl: Any = None
    log_level: str = "info"
    #: text for people reading a terminal, json (one object per line) for log shippers
    log_format: str = "text"
    #: the admin API on TLS (with the listeners' certificate) and/or behind a bearer JWT with role admin
    admin_tls: bool = False
    #: always in force when authentication is on (see ``admin_token_required``)
    admin_require_token: bool = False
    #: Host names the admin API answers to besides its own (DNS rebinding defence)
    admin_allowed_hosts: list[str] = field(default_factory=list)
    #: browser origins whose pages may open the WebSocket listener
    ws_allowed_origins: list[str] = field(default_factory=list)
    #: route labels per service in the request metrics; later routes share the label 'other'
    metrics_max_routes_per_service: int = 50
    #: service labels in the request metrics; later services share the label 'other'
    metrics_max_services: int = 500
    #: services starting with one of these share one label '<prefix>*' (e.g. device.* for
    #: thousands of one-instance device services)
    metrics_aggregate_prefixes: list[str] = field(default_factory=list)
    #: hop spans of traced requests kept per route for the admin API; 0 turns tracing off
    trace_spans_kept: int = 20
    #: OTLP/HTTP collector URL the hop spans are also exported to (needs the otlp extra)
    otlp_endpoint: str | None = None

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
        if self.jwt_keys:
            try:  # the loader the verifier uses: a refused key stops the start with its reason
                load_key_file(self.jwt_keys)
            except (OSError, ValueError) as exc:
                raise SettingsError(f"--jwt-keys: {exc}") from None
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
        if self.otlp_endpoint:
            self._validate_otlp(self.otlp_endpoint)
        self._validate_client_limits()
        for name in ("setup_timeout_s", "drain_timeout_s", "cluster_max_message_bytes", "cluster_read_timeout_s"):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{name} must be positive")
        if self.cluster and not self.cluster_key and not is_loopback_host(parse_hostport(self.cluster, "--cluster")[0]):
            raise SettingsError(
                f"--cluster {self.cluster} is not a loopback address: give --cluster-key (a keyless cluster is a "
                "loopback development mode; on a network anyone could join, forge Raft messages or pose as a node)"
            )
        if self.cluster and self.auth_enabled and not self.cluster_key:
            raise SettingsError(
                "--cluster with authentication on (--jwt-keys or --tls-client-ca) needs --cluster-key: a keyless "
                "cluster is a loopback development mode, where any local process could pose as a node"
            )
        if self.admin_tls and not self.tls_cert:
            raise SettingsError("--admin-tls needs --tls-cert and --tls-key")
        if self.admin_require_token and not self.jwt_keys:
            raise SettingsError("--admin-require-token needs --jwt-keys to verify admin tokens")
        if self.jwt_max_ttl_s <= 0:
            raise SettingsError("jwt_max_ttl_s must be positive")
        if self.jwt_cache_size < 0:
            raise SettingsError("jwt_cache_size must be 0 (no cache) or positive")
        self._validate_admin_exposure()
        # gossip_profile names a cluster.swim profile: rsbroker.node checks it (broker/ imports no cluster/)
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
        if not isinstance(self.limits, dict):
            raise SettingsError("--config limits: must be a table of [limits.<name>]")
        try:  # the same parser as the config store's limits/ keys
            limits_from_config(self.limits)
        except ValueError as exc:
            raise SettingsError(f"--config limits: {exc}") from None
        try:  # the same parser as the config store's acl/ keys (one validator per value)
            rules_from_config({"acl": self.acl} if self.acl is not None else {})
        except ValueError as exc:
            raise SettingsError(f"--config acl: {exc}") from None

    def _validate_admin_exposure(self) -> None:
        """The admin API holds the keys to the cluster: anonymous only on loopback, auth off.

        With authentication on, the admin API wants a credential with role admin: a bearer
        JWT (verified with ``--jwt-keys``) or, over ``--admin-tls``, a client certificate.
        Off loopback with authentication off there is no credential to ask for, so the node
        refuses to start, as gossip refuses to run keyless off loopback.
        """
        if not self.admin:
            return
        if self.auth_enabled and not self.jwt_keys and not self.admin_tls:
            raise SettingsError(
                "--tls-client-ca turns authentication on, so the admin API needs admin credentials: give "
                "--jwt-keys (bearer tokens with role admin) or --admin-tls (client certificates with role admin)"
            )
        host = parse_hostport(self.admin, "--admin")[0]
        if not self.auth_enabled and not is_loopback_host(host):
            raise SettingsError(
                f"--admin {self.admin} is not a loopback address, and without authentication the admin API "
                "would let anyone who reaches it rewrite keys and access rules: give --jwt-keys (the admin "
                "API then requires a bearer token with role admin) or bind --admin to 127.0.0.1"
            )

    def _validate_otlp(self, endpoint: str) -> None:
        """Refuse an OTLP endpoint that cannot work: not an http(s) URL, tracing off, or the
        otlp extra missing (a node asked to export must not start silently without it)."""
        url = urlsplit(endpoint)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise SettingsError(f"--otlp-endpoint must be an http:// or https:// URL, got '{endpoint}'")
        if not self.trace_spans_kept:
            raise SettingsError("--otlp-endpoint needs tracing on: trace_spans_kept is 0")
        if otlp.missing():
            raise SettingsError(
                f"--otlp-endpoint needs the OpenTelemetry packages, which are not installed: {otlp.INSTALL_HINT}"
            )

    def _validate_client_limits(self) -> None:
        """The issue 11 §5 limits: positive, SETUP within a frame, names within what gossip carries."""
        for name in (
            "max_setup_frame_size", "max_metadata_entries", "max_request_metadata", "max_fragments",
            "max_reassembly_bytes", "reassembly_timeout_s", *_NAME_CEILINGS,
        ):  # fmt: skip
            if getattr(self, name) <= 0:
                raise SettingsError(f"{name} must be positive")
        if self.max_retry_frame_size < 0:
            raise SettingsError("max_retry_frame_size must be 0 (no request is kept for a retry) or positive, bytes")
        if self.max_setups_per_s < 0:
            raise SettingsError("max_setups_per_s must be 0 (no limit) or positive")
        if self.max_setup_frame_size < 64:
            raise SettingsError("max_setup_frame_size must be at least 64 (a SETUP's fixed fields); above max_frame_size it has no effect")
        for name, ceiling in _NAME_CEILINGS.items():
            if ceiling is not None and getattr(self, name) > ceiling:
                raise SettingsError(f"{name} may be at most {ceiling}: gossip packets must always carry a registration")

    @property
    def name_limits(self) -> NameLimits:
        """The registration limits, as the metadata reader takes them."""
        return NameLimits(**{name: getattr(self, name) for name in _NAME_CEILINGS})

    @property
    def auth_enabled(self) -> bool:
        """Clients must prove who they are: by bearer JWT, by client certificate, or either."""
        return bool(self.jwt_keys or self.tls_client_ca)

    @property
    def admin_token_required(self) -> bool:
        """Whether the admin API asks for a credential with role admin (secure by default)."""
        return self.admin_require_token or self.auth_enabled


#: registration limits and the most each may be set to (None: no gossip-imposed ceiling)
_NAME_CEILINGS: dict[str, int | None] = {
    "max_services": None,
    "max_service_name_bytes": limits.GOSSIP_MAX_SERVICE_BYTES,
    "max_instance_name_bytes": limits.GOSSIP_MAX_INSTANCE_BYTES,
    "max_tags": limits.GOSSIP_MAX_TAGS,
    "max_tag_key_bytes": limits.GOSSIP_MAX_TAG_KEY_BYTES,
    "max_tag_value_bytes": limits.GOSSIP_MAX_TAG_VALUE_BYTES,
}
_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}
#: settings that only the config file can give (structured values)
_FILE_ONLY = {"services", "limits", "acl"}
#: list settings: a TOML array, or a comma-separated string from a flag or the environment
_LISTS = {"join", "admin_allowed_hosts", "ws_allowed_origins", "metrics_aggregate_prefixes"}


def _coerce(name: str, value: Any, source: str) -> Any:
    """Turn a string (env) or TOML value into the field's type."""
    default = _FIELDS[name].default
    kind = type(default) if default is not dataclasses.MISSING and default is not None else None
    if name in _LISTS:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
        raise SettingsError(f"{source}: {name} must be a list of strings (or one comma-separated string)")
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
