"""The relay's security policy: who a connection is and what it may do, from the settings.

``Security`` joins the pieces of ``broker.auth`` to the relay's hooks
(``Broker.authenticator`` and ``Broker.access``) and enforces what must keep holding
after SETUP: a connection whose token expires or is revoked is closed (expiry on the relay's
deadline wheel, revocation by one pass per change of the list). Rules and keys
can be replaced at run time (from the Raft config store) through ``set_rules``,
``set_keys`` and ``set_revoked``; each takes effect for the next decision. Rules from the
store are laid over the config file's rules, never instead of them: a node whose store
holds no rules keeps enforcing its file's.

Authentication is on when ``--jwt-keys`` or ``--tls-client-ca`` is given. Then a SETUP
must carry a valid bearer token or come over TLS with a verified client certificate
(whose subject CN is the principal); access rules default to deny, and role ``admin``
may do everything.

Broker links from other nodes (``cluster.links``) get a :func:`link_principal`: never
admin, whatever the cluster's settings. A proven link may forward requests (the node it
comes from checked them at its own edge) and nothing else; a link whose handshake is not
finished yet may do nothing at all.
"""

from __future__ import annotations

import collections
import logging
import ssl
import time
from typing import TYPE_CHECKING, Any, Mapping

from broker.auth import (
    ANONYMOUS,
    AccessPolicy,
    AccessRule,
    AuthError,
    JwtVerifier,
    Principal,
    rules_from_config,
    server_context,
)
from broker.frames import ErrorCode, FrameError
from broker.logformat import conn_fields
from broker.loopback import is_loopback_host
from broker.settings import Settings, SettingsError

if TYPE_CHECKING:
    from broker.relay import Broker
    from broker.session import Session

log = logging.getLogger("rsbroker.security")


#: Principal source of a broker link that proved the cluster key on its connection.
LINK_SOURCE = "link"
#: Principal source of a broker link whose challenge is not answered yet.
PENDING_LINK_SOURCE = "link-pending"


def link_principal(node: str, *, proven: bool = True) -> Principal:
    """The principal of node ``node``'s broker link: no roles, so never admin."""
    return Principal(name=f"node:{node}", source=LINK_SOURCE if proven else PENDING_LINK_SOURCE)


def is_proven_link(principal: Any) -> bool:
    """Whether ``principal`` is a broker link that finished its handshake."""
    return isinstance(principal, Principal) and principal.source == LINK_SOURCE


def is_loopback(peer: tuple[Any, ...] | None) -> bool:
    """Whether ``peer`` (a socket address) is this host, which protected mode lets in anonymously."""
    if not peer:
        return False
    return is_loopback_host(str(peer[0]))


class Security:
    """Authentication and access decisions for one node."""

    def __init__(self, settings: Settings, clock: Any = time.time) -> None:
        self.settings = settings
        self.clock = clock
        self.verifier: JwtVerifier | None = None
        if settings.jwt_keys:
            self.verifier = JwtVerifier(
                settings.jwt_keys,
                issuer=settings.jwt_issuer,
                audience=settings.jwt_audience,
                leeway=settings.jwt_leeway_s,
                max_ttl=settings.jwt_max_ttl_s,
                cache_size=settings.jwt_cache_size,
                clock=clock,
            )
        try:
            rules = rules_from_config({"acl": settings.acl} if settings.acl is not None else {})
        except ValueError as exc:
            raise SettingsError(f"--config acl: {exc}") from None
        self.enabled = settings.auth_enabled
        #: the config file's rules: the base that rules from the config store are laid over
        self.file_rules: Mapping[str, AccessRule] = rules
        self.access = AccessPolicy(rules, enabled=self.enabled)
        #: work counter (``credential_checks``: principals looked at): instrumented proof that
        #: an idle node checks the connections whose credentials run out, not every connection
        self.stats: collections.Counter[str] = collections.Counter()
        #: the revocation list changed and the connections were not looked through since
        self._revocations_changed = False

    # -- hooks the relay calls ----------------------------------------------------------------

    def authenticate(self, session: "Session", auth_entry: bytes | None) -> Principal:
        """Principal for a SETUP; raise FrameError(REJECTED_SETUP) with an actionable reason."""
        if not self.enabled:
            if not self.settings.allow_anonymous and not is_loopback(session.peer):
                raise FrameError(
                    "anonymous clients are accepted only on loopback addresses: configure --jwt-keys for "
                    "authentication or start the broker with --allow-anonymous",
                    ErrorCode.REJECTED_SETUP,
                )
            return ANONYMOUS
        if auth_entry is None and session.tls_principal is not None:
            return session.tls_principal
        if self.verifier is None:
            raise self._reject(session, "no verified client certificate (this broker requires mTLS)")
        try:
            return self.verifier.verify_setup(auth_entry)  # refuses revoked token ids too
        except AuthError as exc:
            raise self._reject(session, str(exc)) from None

    def _reject(self, session: "Session", reason: str) -> FrameError:
        # The reason never contains the token (broker.auth guarantees it), so it is safe to log.
        log.info("refused SETUP from %s: %s", session.peer_text, reason, extra=conn_fields(session))
        session.broker.stats["auth_failures"] += 1
        return FrameError(f"authentication failed: {reason}", ErrorCode.REJECTED_SETUP)

    def expired_or_revoked(self, principal: Any, now: float) -> str:
        """Why a connection authenticated as ``principal`` must now be closed, or ''."""
        self.stats["credential_checks"] += 1
        if not isinstance(principal, Principal) or principal.source == "anonymous":
            return ""
        # A JWT admitted within the clock-skew leeway must not be cut off by the very next
        # housekeeping pass: the same leeway applies to closing as to admitting.
        grace = self.settings.jwt_leeway_s if principal.source == "jwt" else 0.0
        if self.settings.close_on_token_expiry and principal.expired(now - grace):
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(principal.expires_at or 0))
            return f"token of '{principal.name}' expired at {stamp}; reconnect with a fresh token"
        if self.verifier is not None and self.verifier.is_revoked(principal):
            return f"token of '{principal.name}' has been revoked"
        return ""

    # -- live configuration ---------------------------------------------------------------

    def set_rules(self, rules: Mapping[str, AccessRule]) -> None:
        """Replace the config store's rules; the config file's rules stay in force beneath them.

        A store rule with the same name as a file rule replaces it, so an operator can
        tighten a file rule at run time; an empty store leaves exactly the file's rules.
        """
        self.access.set_rules({**self.file_rules, **rules})

    def set_keys(self, entries: Mapping[str, object]) -> list[str]:
        return self.verifier.set_extra_keys(entries) if self.verifier else []

    def credentials_left(self, principal: Any) -> tuple[str, float | None]:
        """Why a connection authenticated as ``principal`` must be closed now ('' if not), and
        else how many seconds its credentials have left (None: they never expire here).

        The relay checks each connection again when that time is up, on the deadline wheel
        it keeps for keepalives: an idle node does work for the connections whose tokens
        expire, not a pass over every connection (issue 13: 19,000 devices).
        """
        if not self.enabled:
            return "", None
        now = self.clock()
        reason = self.expired_or_revoked(principal, now)
        if reason or not isinstance(principal, Principal) or principal.expires_at is None or not self.settings.close_on_token_expiry:
            return reason, None
        grace = self.settings.jwt_leeway_s if principal.source == "jwt" else 0.0
        return "", principal.expires_at + grace - now

    def set_revoked(self, token_ids: Any) -> None:
        if self.verifier is not None:
            self.verifier.set_revoked(token_ids)
            self._revocations_changed = True

    def enforce(self, broker: "Broker") -> None:
        """Close the connections whose tokens were revoked since the last call (called by
        housekeeping): one pass over the connections per change of the revocation list, none
        while it stays the same. Expiry is not looked for here (see :meth:`credentials_left`)."""
        if not self._revocations_changed:
            return
        self._revocations_changed = False
        now = self.clock()
        for session in list(broker.sessions):
            reason = self.expired_or_revoked(session.principal, now)
            if reason:
                broker.stats["credential_closes"] += 1
                session.fail(ErrorCode.CONNECTION_CLOSE, reason)


def listener_ssl(settings: Settings) -> ssl.SSLContext | None:
    """The server TLS context for the client listeners, or None for plain TCP/WS."""
    if not settings.tls_cert:
        return None
    assert settings.tls_key is not None
    try:
        return server_context(
            settings.tls_cert,
            settings.tls_key,
            client_ca_file=settings.tls_client_ca,
            # With JWT available, a client certificate is one way in, not the only one.
            require_client_cert=not settings.jwt_keys,
        )
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
