"""The one exception type a caller of :mod:`broker.client` catches, and its subclasses.

Every ERROR frame from the broker or the peer becomes an :class:`RSocketError` carrying the
RSocket error code and message, so ``except RSocketError`` catches everything the wire can
say and ``except RejectedError`` (say) catches one case. A connection that is lost without
an ERROR frame (socket closed, keepalive timeout) raises :class:`ConnectionLostError` with
code CONNECTION_ERROR, so the caller handles both the same way.

Handlers of a :class:`~broker.client.Router` may raise these too: the code travels back to
the requester (raise ``RejectedError("busy")`` to answer REJECTED); any other exception
becomes APPLICATION_ERROR with its text.
"""

from __future__ import annotations

import re

from broker.frames import ErrorCode

__all__ = [
    "ApplicationError",
    "CanceledError",
    "ConnectionLostError",
    "InvalidError",
    "PayloadTooLarge",
    "RSocketError",
    "RejectedError",
    "SetupError",
    "error_for",
]


class RSocketError(Exception):
    """An RSocket ERROR: ``code`` (an :class:`~broker.frames.ErrorCode` value) and ``message``."""

    default_code: int = ErrorCode.APPLICATION_ERROR

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = self.default_code if code is None else code

    def __str__(self) -> str:
        try:
            name = ErrorCode(self.code).name
        except ValueError:
            name = f"0x{self.code:x}"
        return f"{name}: {self.message}"


class ApplicationError(RSocketError):
    """The provider's handler failed (APPLICATION_ERROR)."""

    default_code = ErrorCode.APPLICATION_ERROR


class RejectedError(RSocketError):
    """The request was refused before any work was done (REJECTED): e.g. no provider for the
    service, access denied, or a provider that is overloaded. Safe to retry elsewhere."""

    default_code = ErrorCode.REJECTED


class CanceledError(RSocketError):
    """The responder canceled the request (CANCELED)."""

    default_code = ErrorCode.CANCELED


class InvalidError(RSocketError):
    """The request was malformed (INVALID): bad metadata, an unknown route format."""

    default_code = ErrorCode.INVALID


class SetupError(RSocketError):
    """The peer refused the connection's SETUP (INVALID_SETUP, UNSUPPORTED_SETUP,
    REJECTED_SETUP — a bad or missing token, say — or REJECTED_RESUME)."""

    default_code = ErrorCode.REJECTED_SETUP


def retry_after_s(error: BaseException) -> float | None:
    """The wait a broker asked for in a refusal (``... retry after 250 ms``), in seconds, or None.

    A node over its ``max_setups_per_s`` refuses SETUP with such a hint: the refusal is
    about load, not about the client, so the client should come back then.
    """
    match = _RETRY_AFTER.search(str(error))
    return int(match.group(1)) / 1000.0 if match else None


_RETRY_AFTER = re.compile(r"retry after (\d+) ms")


class ConnectionLostError(RSocketError):
    """The connection ended (CONNECTION_ERROR / CONNECTION_CLOSE, a closed socket, or no
    frame from the peer within the keepalive lifetime). Requests in flight on it fail with
    this; they may or may not have been served."""

    default_code = ErrorCode.CONNECTION_ERROR


class PayloadTooLarge(RSocketError):
    """A fragmented payload grew past this connection's ``max_payload_bytes``: the stream
    is canceled (or, for a request this side serves, refused with REJECTED)."""

    default_code = ErrorCode.REJECTED


_BY_CODE: dict[int, type[RSocketError]] = {
    ErrorCode.INVALID_SETUP: SetupError,
    ErrorCode.UNSUPPORTED_SETUP: SetupError,
    ErrorCode.REJECTED_SETUP: SetupError,
    ErrorCode.REJECTED_RESUME: SetupError,
    ErrorCode.CONNECTION_ERROR: ConnectionLostError,
    ErrorCode.CONNECTION_CLOSE: ConnectionLostError,
    ErrorCode.APPLICATION_ERROR: ApplicationError,
    ErrorCode.REJECTED: RejectedError,
    ErrorCode.CANCELED: CanceledError,
    ErrorCode.INVALID: InvalidError,
}


def error_for(code: int, message: str) -> RSocketError:
    """The exception for an ERROR frame's ``code`` (application codes above 0x300 included)."""
    return _BY_CODE.get(code, RSocketError)(message, code)
