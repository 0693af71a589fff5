"""Whether an address is this host: the one test both protected modes rely on.

The broker admits anonymous clients, and gossip binds without a cluster key, only on
loopback. A dual-stack listener (``[::]:7000``) sees IPv4 clients as IPv4-mapped IPv6
addresses (``::ffff:127.0.0.1``), which ``ipaddress`` before Python 3.13 does not call
loopback; they are judged by the IPv4 address they carry. Zone ids (``::1%lo``) are ignored.
"""

from __future__ import annotations

import functools
import ipaddress

__all__ = ["is_loopback_host"]


@functools.lru_cache(maxsize=256)
def is_loopback_host(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8, ``::1`` and IPv4-mapped loopback; False for anything else.

    Cached (bounded, least recently used): every SETUP asks, and parsing the address was 4 %
    of a connect's CPU in a storm from one source."""
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]").split("%")[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool((mapped or address).is_loopback)
