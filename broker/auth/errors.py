"""The one exception authentication raises.

A rejected client is told *why* (the broker puts the reason into ERROR(REJECTED_SETUP))
and the operator sees the same reason in the log. Both audiences must be able to act on
it, and neither may ever see the token itself: a token in a log line is a credential
leak. Every message is therefore built by this package from claim values and
configuration, never by echoing the raw input.
"""

from __future__ import annotations

__all__ = ["AuthError"]


class AuthError(Exception):
    """Authentication failed; ``reason`` says why in words a person can act on."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
