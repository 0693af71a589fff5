"""Authentication and authorisation for the broker: who is connecting, and what may they do.

- ``jwt_auth.JwtVerifier``: bearer JWT from SETUP -> ``Principal`` (or ``AuthError``).
- ``tls``: server/client ``SSLContext`` for TLS and mTLS; client certificate -> ``Principal``.
- ``acl.AccessPolicy``: may this principal register that service / call that route.
- ``tools``: the ``rsbroker token`` and ``rsbroker certs`` commands.

Nothing here touches a socket: the relay asks, this package answers.
"""

from .acl import AccessPolicy, AccessRule, denied_message, parse_rule, rules_from_config, rules_from_store
from .errors import AuthError
from .jwt_auth import JwtVerifier
from .keys import key_from_config
from .metadata import AUTHENTICATION_MIME, bearer_token, encode_bearer, parse_auth_metadata
from .principal import ADMIN_ROLE, ANONYMOUS, Principal
from .tls import client_context, peer_principal, principal_from_peercert, server_context

__all__ = [
    "ADMIN_ROLE",
    "ANONYMOUS",
    "AUTHENTICATION_MIME",
    "AccessPolicy",
    "AccessRule",
    "AuthError",
    "JwtVerifier",
    "Principal",
    "bearer_token",
    "client_context",
    "denied_message",
    "encode_bearer",
    "key_from_config",
    "parse_auth_metadata",
    "parse_rule",
    "peer_principal",
    "principal_from_peercert",
    "rules_from_config",
    "rules_from_store",
    "server_context",
]
