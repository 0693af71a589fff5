"""What each setting does, with its unit, and the topic it is listed under in ``--help``.

One entry per ``Settings`` field (the flag, config-file key and ``RSBROKER_*`` variable
share it). ``add_arguments`` appends the default to every text, so texts here say what
the setting does and in which unit, never the default value itself.
"""

from __future__ import annotations

from broker import limits

#: argparse argument groups, in the order --help prints them
TOPICS = {
    "node": "node",
    "listeners": "listeners (HOST:PORT; port 0 picks a free port)",
    "cluster": "cluster (gossip, broker links, Raft config store)",
    "security": "security (authentication, TLS, admin API protection)",
    "limits": "limits (per connection and per source; refusals are counted in rsbroker_limit_hits_total)",
    "routing": "routing and leases",
    "observability": "logs and metrics",
}

#: setting -> (topic, what it does and its unit)
HELP: dict[str, tuple[str, str]] = {
    "node_id": ("node", "name of this node in the cluster, logs and metrics (no spaces)"),
    "tcp": ("listeners", "RSocket over TCP (or TLS with --tls-cert): address to listen on"),
    "ws": ("listeners", "RSocket over WebSocket at path /rsocket: address to listen on"),
    "admin": ("listeners", "admin HTTP API, /metrics and the dashboard: address to listen on"),
    "advertise": ("listeners", "TCP address other nodes and clients should use to reach this node (NAT, containers)"),
    "cluster": ("cluster", "gossip address (UDP and TCP on one port) of this node; unset = a single node"),
    "join": ("cluster", "gossip addresses of nodes to join, comma-separated HOST:PORT"),
    "data_dir": ("cluster", "directory of the Raft config store; unset = a temporary directory lost on stop"),
    "gossip_profile": ("cluster", "gossip timing profile: lan, failover, wan or local (see cluster/swim/config.py)"),
    "cluster_key": ("cluster", "file with the cluster's shared key(s): gossip and Raft traffic are encrypted"),
    "allow_anonymous": ("security", "accept clients without credentials from any address (otherwise loopback only)"),
    "jwt_keys": ("security", "JWKS or PEM file of the keys that sign client JWTs; turns authentication on"),
    "jwt_issuer": ("security", "required 'iss' claim of client JWTs"),
    "jwt_audience": ("security", "required 'aud' claim of client JWTs"),
    "jwt_leeway_s": ("security", "clock skew tolerated on JWT exp/nbf, seconds"),
    "jwt_cache_size": ("security", "verified JWTs remembered (least recently used out) so the same token's signature is not verified again; its claims, expiry and revocation are still checked at every SETUP, and new keys empty it; 0 turns it off"),
    "close_on_token_expiry": ("security", "close a connection when its JWT expires"),
    "tls_cert": ("security", "PEM certificate chain of the TLS listeners"),
    "tls_key": ("security", "PEM private key of --tls-cert"),
    "tls_client_ca": ("security", "PEM CA that client certificates must chain to (mTLS); turns authentication on"),
    "admin_tls": ("security", "serve the admin API over TLS with --tls-cert"),
    "admin_require_token": ("security", "require a bearer JWT with role admin on the admin API; implied whenever --jwt-keys or --tls-client-ca turn authentication on"),
    "max_frame_size": ("limits", "largest frame accepted, bytes (64 .. 16777215)"),
    "max_streams": ("limits", "concurrent streams a connection may open, count"),
    "max_connections_per_source": ("limits", "open connections from one source IP address, count"),
    "setup_timeout_s": ("limits", "time a new connection has to send SETUP, seconds"),
    "max_pending_bytes": ("limits", "output queued for one connection before its sources are paused, bytes"),
    "drain_timeout_s": ("limits", "time SIGTERM waits for open streams before closing connections, seconds"),
    "lease_ttl_ms": ("routing", "time to live of the LEASE granted to clients that negotiate leases, milliseconds"),
    "lease_requests": ("routing", "requests allowed per LEASE, count"),
    "default_policy": ("routing", "load-balancing policy of services without one: round_robin, least_outstanding, weighted or p2c"),
    "log_level": ("observability", "log level: debug, info, warning or error"),
    "log_format": ("observability", "log line format: text for people, json (one object per line) for log shippers"),
    "metrics_max_routes_per_service": ("observability", "route labels per service in the request metrics; later routes count as 'other'"),
    "metrics_max_services": ("observability", "service labels in the request metrics; later services count as 'other'"),
    "trace_spans_kept": (
        "observability",
        "spans of traced requests (W3C traceparent entry) kept per route for GET /api/v1/traces, count; 0 = tracing off",
    ),
    "otlp_endpoint": (
        "observability",
        "OTLP/HTTP collector URL the hop spans are also exported to (protobuf; /v1/traces is added to a URL "
        "without a path, e.g. http://collector:4318); needs pip install 'rsbroker[otlp]'",
    ),
    "metrics_aggregate_prefixes": (
        "observability",
        "comma-separated service name prefixes counted as one service '<prefix>*' in metrics (e.g. device.)",
    ),
    "jwt_max_ttl_s": ("security", 'refuse JWTs valid for longer than this many seconds (exp - iat, or exp - now without iat), at SETUP and at the admin API'),
    "max_setup_frame_size": ("limits", 'largest frame accepted before SETUP is accepted, bytes (room for a token and a registration)'),
    "max_metadata_entries": ("limits", 'most composite metadata entries read from one SETUP, request or METADATA_PUSH'),
    "max_request_metadata": ("limits", 'largest metadata of a fragmented request held until its route is known, bytes'),
    "max_fragments": ("limits", "most fragments one request's metadata may be split into before its route is known"),
    "max_reassembly_bytes": ("limits", 'bytes of unfinished fragmented requests one connection may have the broker hold'),
    "reassembly_timeout_s": ("limits", 'a fragmented request whose metadata is not complete by then is refused, seconds'),
    "max_services": ("limits", 'most services one registration may list'),
    "max_service_name_bytes": ("limits", f"longest service name, UTF-8 bytes (at most {limits.GOSSIP_MAX_SERVICE_BYTES}: gossip must carry it)"),
    "max_instance_name_bytes": ("limits", f"longest instance name, UTF-8 bytes (at most {limits.GOSSIP_MAX_INSTANCE_BYTES})"),
    "max_tags": ("limits", f"most tags on one registration (at most {limits.GOSSIP_MAX_TAGS})"),
    "max_tag_key_bytes": ("limits", f"longest tag key, UTF-8 bytes (at most {limits.GOSSIP_MAX_TAG_KEY_BYTES})"),
    "max_tag_value_bytes": ("limits", f"longest tag value, UTF-8 bytes (at most {limits.GOSSIP_MAX_TAG_VALUE_BYTES})"),
    "max_retry_frame_size": ("routing", "largest request of an idempotent service kept for a retry, bytes: a larger one is not sent again (rsbroker_retries_refused_total{reason=\"too_large\"}); 0 keeps none"),
    "max_setups_per_s": ("limits", "most SETUPs accepted per second on this node (connect storms); over it a client gets REJECTED_SETUP saying 'retry after N ms'; broker links are exempt; 0 turns the limit off"),
    "admin_allowed_hosts": ("security", "comma-separated extra Host names the admin API answers to (a load balancer's or ingress's name); its own addresses, localhost and the host name always work; '*' turns the Host check off"),
    "ws_allowed_origins": ("security", "comma-separated origins (scheme://host[:port]) whose pages may open the WebSocket listener; clients sending no Origin and pages of this node's own names always may; '*' allows every origin"),
    "bootstrap_expect": (
        "cluster",
        "start a brand-new cluster only once this many nodes see each other, so that one command line "
        "(with --join) serves every node, the first included; 0: a node without --join and without state "
        "starts a cluster alone. Ignored by a node with state",
    ),
    "cluster_max_message_bytes": ("limits", "cluster port: largest Raft message one peer may send, bytes (bounds what an unauthenticated peer can make a node buffer)"),
    "cluster_read_timeout_s": ("limits", "cluster port: how long a Raft message body may take once its header came, seconds"),
}
