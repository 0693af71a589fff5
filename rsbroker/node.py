"""A broker node: listeners, admin API, and an orderly life from start to drain.

``Node`` wires the pieces together and nothing more: the relay (``broker.relay``), the
transport shells (``broker.transports``), the cluster runtime (``cluster.runtime``) and the
admin API (``admin.app``). It is the composition root: the only module that imports all three
packages, so that ``broker`` needs neither of the others. Its lifecycle:

    start()  → listeners bound, ``rsbroker ready {json}`` printed
    drain()  → listeners closed, new streams refused, open streams given time to end
    stop()   → remaining connections closed with ERROR(CONNECTION_CLOSE)
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import ssl
import time
from typing import Any

from aiohttp import web

from admin.app import admin_app
from broker.relay import Broker
from broker.security import listener_ssl
from broker.settings import Settings, SettingsError, parse_hostport
from broker.supervisor import Supervisor
from broker.transports import TcpSession, serve_websocket
from cluster.runtime import ClusterRuntime
from cluster.swim.config import PROFILES as GOSSIP_PROFILES

log = logging.getLogger("rsbroker.node")
#: Accept queue asked for on the client and admin listeners. The kernel caps it at
#: ``net.core.somaxconn`` (4096 on current Linux), so asking for more lets an operator who
#: raised that limit for device fleets get it: a full queue drops SYNs, and each dropped
#: one costs its client a retransmit after 1 s, 3 s, 7 s ... (issue 13's fail-over storm).
LISTEN_BACKLOG = 65535


def _format(addr: tuple[Any, ...] | None) -> str | None:
    if addr is None:
        return None
    host = addr[0]
    return f"[{host}]:{addr[1]}" if ":" in host else f"{host}:{addr[1]}"


def validate_cluster_settings(settings: Settings) -> None:
    """The settings whose choices the cluster package defines, checked where both are known
    (``broker.settings`` cannot name the gossip profiles without importing ``cluster``)."""
    if settings.gossip_profile not in GOSSIP_PROFILES:
        raise SettingsError(f"gossip_profile must be one of {', '.join(sorted(GOSSIP_PROFILES))}")


class Node:
    """One broker node with its listeners."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.broker: Broker | None = None
        self.started_at = time.time()
        self.addresses: dict[str, str | None] = {"tcp": None, "ws": None, "admin": None, "cluster": None}
        self._tcp_server: asyncio.AbstractServer | None = None
        self._runners: list[web.AppRunner] = []
        self._ws_servers: list[asyncio.Server] = []
        self._stopped = asyncio.Event()
        self.server_ssl: ssl.SSLContext | None = None
        #: the cluster side (gossip, links, Raft config store); set by start()
        self.runtime: ClusterRuntime | None = None
        #: owner of every background loop: a dead one makes /health/live fail
        self.supervisor = Supervisor()

    async def start(self) -> None:
        settings = self.settings
        loop = asyncio.get_running_loop()
        broker = self.broker = Broker(settings, loop)
        self.server_ssl = listener_ssl(settings)
        self.supervisor.watch("relay housekeeping", broker.start())
        if settings.tcp:
            host, port = parse_hostport(settings.tcp, "--tcp")
            self._tcp_server = await loop.create_server(
                lambda: TcpSession(broker), host, port, ssl=self.server_ssl, reuse_address=True, backlog=LISTEN_BACKLOG
            )
            self.addresses["tcp"] = _format(self._tcp_server.sockets[0].getsockname())
        if settings.ws:
            host, port = parse_hostport(settings.ws, "--ws")
            server, runner = await serve_websocket(broker, host, port, self.server_ssl, LISTEN_BACKLOG)
            self._ws_servers.append(server)
            self._runners.append(runner)
            self.addresses["ws"] = _format(server.sockets[0].getsockname())
        if settings.admin:
            admin_ssl = self.server_ssl if settings.admin_tls else None
            self.addresses["admin"] = await self._serve_app(admin_app(self), settings.admin, "--admin", admin_ssl)
        # The cluster side starts last: gossip announces the addresses bound above.
        self.runtime = ClusterRuntime(self)
        await self.runtime.start()

    async def _serve_app(self, app: web.Application, where: str, flag: str, ssl_context: ssl.SSLContext | None) -> str | None:
        host, port = parse_hostport(where, flag)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context, reuse_address=True, backlog=LISTEN_BACKLOG)
        await site.start()
        self._runners.append(runner)
        return _format(runner.addresses[-1])

    def ready_line(self) -> str:
        info = {"node_id": self.settings.node_id, **self.addresses}
        return "rsbroker ready " + json.dumps(info)

    async def drain(self) -> None:
        """Stop accepting, refuse new streams, give open streams ``drain_timeout_s`` to end."""
        log.info("draining: no new connections, open streams get %.1f s", self.settings.drain_timeout_s)
        if self.runtime is not None:
            await self.runtime.leave()
        if self._tcp_server is not None:
            self._tcp_server.close()
        for server in self._ws_servers:
            server.close()
        if self.broker is not None:
            await self.broker.drain(self.settings.drain_timeout_s)

    async def stop(self) -> None:
        self.supervisor.stopping()
        if self.broker is not None:
            await self.broker.stop()
        if self.runtime is not None:
            await self.runtime.stop()
        if self._tcp_server is not None:
            self._tcp_server.close()
        for server in self._ws_servers:
            server.close()
        # give the close frames a moment to leave before tearing the runners down
        await asyncio.sleep(0.05)
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._stopped.set()

    async def run_until_signalled(self) -> None:
        """Serve until SIGTERM/SIGINT, then drain and stop."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await self.drain()
        await self.stop()
