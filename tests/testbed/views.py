"""What the nodes of a test bed say about each other, read from inside each host.

These are the test bed's twins of :mod:`tests.support.cluster`'s loopback helpers: the same
questions (member states, Raft voters, converged?) asked through :meth:`Host.http`, which
works while a host is cut off from the others.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tests.support.admin import wait_for
from tests.support.cluster import view_agrees
from tests.support.netns import GOSSIP_PORT, Host

#: Bound on a cluster agreeing after a start or a fault heals (busy, shared machine).
CONVERGE_TIMEOUT_S = 90.0


def seeds(*hosts: Host) -> list[str]:
    """``--join`` values by host name, as an operator writes them."""
    return [f"{h.name}:{GOSSIP_PORT}" for h in hosts]


def member_states(host: Host) -> dict[str, str]:
    """``{node: state}`` as ``host`` sees the cluster; empty when it does not answer."""
    status, body = host.http("GET", "/api/v1/members")
    return {m["node_id"]: m["state"] for m in body["members"]} if status == 200 else {}


def members(host: Host) -> dict[str, dict[str, Any]]:
    status, body = host.http("GET", "/api/v1/members")
    return {m["node_id"]: m for m in body["members"]} if status == 200 else {}


def raft(host: Host) -> dict[str, Any]:
    status, body = host.http("GET", "/api/v1/raft")
    return body if status == 200 else {}


def converged(hosts: Iterable[Host]) -> bool:
    """Every given host sees every given host alive, and has a Raft leader with all as voters."""
    group = list(hosts)
    names = {h.name for h in group}
    return all(view_agrees(names, member_states(host), raft(host)) for host in group)


async def wait_converged(hosts: Iterable[Host], timeout: float = CONVERGE_TIMEOUT_S) -> None:
    group = list(hosts)
    await wait_for(lambda: converged(group), timeout=timeout, interval=0.5,
                   message=f"{[h.name for h in group]} to converge")


async def wait_state(observers: Iterable[Host], node: str, state: str, timeout: float = CONVERGE_TIMEOUT_S) -> None:
    """Every observer reports ``node`` in ``state``."""
    group = list(observers)
    await wait_for(lambda: all(member_states(h).get(node) == state for h in group), timeout=timeout,
                   interval=0.3, message=f"{[h.name for h in group]} to see {node} {state}")


def start_cluster(hosts: list[Host], *extra: str) -> None:
    """node1 alone, the others joining it by name: the command lines of the compose file."""
    first, *rest = hosts
    first.start(first.serve_args(*extra))
    for host in rest:
        host.start(host.serve_args(*extra, join=seeds(first)))
