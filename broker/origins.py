"""Which browser pages may talk to this node: the Host and Origin checks of its HTTP listeners.

A web page cannot choose the ``Host`` and ``Origin`` headers its browser sends, so they tell
who is asking even when the TCP peer is loopback:

* DNS rebinding: a page of ``evil.example`` whose name now resolves to 127.0.0.1 reaches a
  loopback listener, but its requests say ``Host: evil.example``. A listener that answers
  only to its own names (``NodeNames``) is out of its reach.
* Cross-site requests: a page of any site can open ``ws://127.0.0.1:PORT`` or send a write
  to a loopback admin API; its ``Origin`` names the site. Non-browser clients send no
  ``Origin`` at all, so they are never affected.

The node's own names are ``localhost``, the loopback addresses, this host's name, the hosts
of its listeners and advertise address (when not wildcards) and the local address the
request arrived on (a pod IP behind a ``0.0.0.0`` listener), plus an operator's allow-list.
Nothing here touches a socket; the HTTP shells (``broker.transports``, ``admin``) ask.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

from broker.settings import Settings, parse_hostport

__all__ = ["ANY", "NodeNames", "OriginPolicy", "host_of", "normalise_origin", "origin_authority"]

#: in an allow-list: every name / every origin
ANY = "*"
_WILDCARDS = frozenset({"", "0.0.0.0", "::"})
_DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}


def host_of(authority: str) -> str:
    """The host part of ``host[:port]`` / ``[v6]:port``, lower-case, without a trailing dot."""
    text = authority.strip().lower()
    if text.startswith("["):
        host = text[1 : text.find("]")] if "]" in text else text[1:]
    elif text.count(":") == 1:
        host = text.split(":", 1)[0]
    else:
        host = text  # a bare name, or an IPv6 address without brackets
    return host.rstrip(".")


def origin_authority(origin: str) -> tuple[str, str, int] | None:
    """``(scheme, host, port)`` of an ``Origin`` header, or None for ``null`` and the unparsable."""
    try:
        parts = urlsplit(origin.strip().lower())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    return parts.scheme, parts.hostname.rstrip("."), port or _DEFAULT_PORTS[parts.scheme]


def normalise_origin(origin: str) -> str:
    """``HTTPS://App.Example:443/`` → ``https://app.example``: the form allow-lists compare in."""
    parsed = origin_authority(origin)
    if parsed is None:
        return origin.strip().lower()
    scheme, host, port = parsed
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}" + ("" if port == _DEFAULT_PORTS[scheme] else f":{port}")


class NodeNames:
    """The host names and addresses this node answers to, fixed at start, plus an allow-list."""

    def __init__(self, names: Iterable[str], allowed: Iterable[str] = ()) -> None:
        extra = {host_of(name) for name in allowed if name.strip() != ANY}
        self.any = any(name.strip() == ANY for name in allowed)
        self.names = frozenset({host_of(name) for name in names} | extra) - {""}

    @classmethod
    def of(cls, settings: Settings, allowed: Iterable[str] = ()) -> "NodeNames":
        """The names of a node with ``settings``: loopback, host name, listener and advertise hosts."""
        names = {"localhost", "127.0.0.1", "::1", socket.gethostname()}
        for flag in ("tcp", "ws", "admin", "advertise"):
            where = getattr(settings, flag)
            if where:
                host = parse_hostport(where, f"--{flag}")[0]
                if host not in _WILDCARDS:
                    names.add(host)
        return cls(names, allowed)

    def knows(self, host: str, local_address: str | None = None) -> bool:
        """Whether ``host`` (as :func:`host_of` gives it) names this node; ``local_address`` is
        the address the request arrived on, this node's own whatever the listener's bind."""
        if self.any or host in self.names:
            return True
        return local_address is not None and host == host_of(local_address)


class OriginPolicy:
    """Which pages may open the WebSocket listener (``--ws-allowed-origins``).

    Allowed: a request without ``Origin`` (not a browser), a page served from one of the
    node's own names (any scheme or port: this host served it), and the listed origins;
    ``*`` allows every origin. The same rule holds with authentication on, where it keeps a
    foreign page from using a browser's ambient credentials (a client certificate).
    """

    def __init__(self, names: NodeNames, allowed: Iterable[str]) -> None:
        self.names = names
        self.any = any(origin.strip() == ANY for origin in allowed)
        self.allowed = frozenset(normalise_origin(o) for o in allowed if o.strip() != ANY)

    def refusal(self, origin: str | None, local_address: str | None) -> str:
        """Why a request with ``origin`` is refused, or '' when it may go on."""
        if origin is None or self.any or normalise_origin(origin) in self.allowed:
            return ""
        parsed = origin_authority(origin)
        if parsed is not None and self.names.knows(parsed[1], local_address):
            return ""
        return (
            f"origin {origin[:200]!r} is not allowed to open this WebSocket listener: "
            "add it to --ws-allowed-origins ('*' allows every origin)"
        )
