"""Who is on the other end of a connection, as the access rules see it.

A principal comes from a verified JWT (source ``"jwt"``), a verified client certificate
(``"mtls"``) or nowhere at all when authentication is off (``"anonymous"``). Access
rules look only at ``name`` and ``roles``; ``expires_at`` lets the connection owner
close the connection when its credential runs out; ``claims`` keeps the token's claims
for logging and for the relay's own decisions (e.g. ``jti`` for revocation).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["ADMIN_ROLE", "ANONYMOUS", "Principal"]

#: The role that may register and call everything, whatever the rules say.
ADMIN_ROLE = "admin"


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated (or explicitly anonymous) identity.

    Hashable on ``name``, ``roles``, ``expires_at`` and ``source`` so the access policy
    can cache decisions per principal; ``claims`` is excluded from hashing and equality
    because it is a mutable dict and carries no authority of its own.
    """

    name: str
    roles: frozenset[str] = frozenset()
    expires_at: float | None = None
    claims: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    source: str = "anonymous"

    @property
    def is_admin(self) -> bool:
        """Whether the principal holds the role that bypasses access rules."""
        return ADMIN_ROLE in self.roles

    def expired(self, now: float) -> bool:
        """Whether the credential behind this principal has run out at ``now`` (epoch seconds)."""
        return self.expires_at is not None and now >= self.expires_at


#: The principal of every connection when authentication is off.
ANONYMOUS = Principal(name="anonymous", source="anonymous")
