"""Other nodes' request rates and links for one dashboard stream, read with that stream's credential.

A node knows its own request rate and links; the others' come from their
``GET /api/v1/stats``. That is an admin route like any other, so with authentication on it
wants an admin credential, and a node holds none of its own (nor may it keep one a page
showed it). So each open event stream (``admin.sse``) reads the other live nodes itself,
at their gossiped admin addresses, with the ``Authorization`` header its own caller
presented, for as long as that stream lives. The page never calls another node: their Host
and Origin checks and the absence of CORS headers refuse that, as they should.

A node that does not answer, or refuses the credential (a client certificate cannot be
forwarded), shows no rate and no links; the stream goes on without them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import aiohttp

log = logging.getLogger("rsbroker.admin.peers")

POLL_S = 2.0
TIMEOUT_S = 1.0
#: the states in which a node is asked (a dead one would only cost a timeout)
_ASKED = ("alive", "suspect")


def targets(snapshot: dict[str, Any] | None) -> dict[str, str]:
    """``{node_id: admin address}`` of the other live nodes in a feed snapshot."""
    if snapshot is None:
        return {}
    return {
        n["node_id"]: n["admin"]
        for n in snapshot["nodes"]
        if n["node_id"] != snapshot["self"] and n.get("admin") and n["state"] in _ASKED
    }


class PeerStats:
    """The latest ``/api/v1/stats`` answer of each other node, as one caller may read them."""

    def __init__(self, authorization: str | None, tls: bool) -> None:
        #: the caller's own header, forwarded unchanged; None asks anonymously (authentication off)
        self._headers = {"Authorization": authorization} if authorization else {}
        self._scheme = "https" if tls else "http"
        self.answers: dict[str, dict[str, Any]] = {}

    async def run(self, latest: Callable[[], dict[str, Any] | None]) -> None:
        """Poll every ``POLL_S`` the nodes named in ``latest()`` until cancelled."""
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)) as http:
            while True:
                try:
                    asked = targets(latest())
                    answers = await asyncio.gather(*(self._poll(http, admin) for admin in asked.values()))
                    self.answers = {node_id: body for node_id, body in zip(asked, answers) if body is not None}
                except Exception:  # a bug here must not end the page's stream
                    log.exception("reading other nodes' stats failed")
                await asyncio.sleep(POLL_S)

    async def _poll(self, http: aiohttp.ClientSession, admin: str) -> dict[str, Any] | None:
        try:
            async with http.get(f"{self._scheme}://{admin}/api/v1/stats", headers=self._headers) as response:
                return dict(await response.json()) if response.status == 200 else None
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
            return None

    def fill(self, snapshot: dict[str, Any]) -> dict[str, Any]:
        """``snapshot`` (shared by every stream, left untouched) with the other nodes' rates and links."""
        nodes = []
        for node in snapshot["nodes"]:
            peer = self.answers.get(node["node_id"]) if node["node_id"] != snapshot["self"] else None
            if peer is not None and node["state"] in _ASKED:
                node = {**node, "request_rate": peer.get("request_rate"), "links": peer.get("links", {})}
            nodes.append(node)
        return {**snapshot, "nodes": nodes}
