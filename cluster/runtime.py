"""The cluster side of a node: gossip, broker links and the Raft config store, wired to the relay.

``ClusterRuntime`` is glue, deliberately thin. It owns no protocol logic; it connects:

* gossip membership → links (a link to every live node that serves something) and the
  topology pushed to cluster-aware clients;
* the gossiped routing table → remote providers in the relay's registry, and the relay's
  local registrations → this node's entries in the routing table;
* the Raft config store → the relay's live settings (access rules, JWT keys, revoked
  tokens, per-service policies), applied on every node as entries commit
  (``cluster.relay_config``);
* Raft membership ← gossip: the leader adds live members that are not voters (as
  learners, promoted once caught up); removing a dead node is an explicit command, and
  a removed node is added again only once it comes back (``cluster.raft_membership``).

Restarts and bootstrap (see ``Settings.bootstrap_expect``): the node keeps the gossip
address of every member it saw alive in ``<data-dir>/peers.json`` and joins through them
(besides ``--join``) on every start, so a node restarted with its data directory rejoins its
cluster whatever its flags. Only a node without Raft state can start a new cluster: alone
when it has no ``--join`` and no ``--bootstrap-expect``, otherwise together with the other
expected nodes once gossip shows them all and none of them is in a cluster already.

Every background loop runs under the node's :class:`~broker.supervisor.Supervisor`;
:meth:`ClusterRuntime.readiness` says why the node cannot take clients yet, if it cannot.

Without ``--cluster`` the node is a cluster of one: no gossip, no links, but the config
store still runs (a single-voter Raft group), so the admin config API works the same.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from broker import metadata as md
from broker.backoff import Backoff
from broker.frames import metadata_push_frame
from broker.settings import parse_hostport
from broker.supervisor import describe_failure
from cluster.crypto import Keyring, load_keyring
from cluster.links import Links
from cluster.load_gossip import LOAD_GOSSIP_S, local_entries, refreshed
from cluster.remote_routes import RemoteRoutes
from cluster.raft.node import RaftNode
from cluster.raft.transport import InMemoryNetwork, InMemoryTransport, TcpTransport
from cluster.raft.errors import RaftError
from cluster.raft_membership import RaftMembership
from cluster.relay_config import RelayConfig
from cluster.routing_table import RoutesChanged
from cluster.swim.core import MemberChanged

if TYPE_CHECKING:
    from broker.relay import Broker
    from rsbroker.node import Node
    from broker.session import Session

log = logging.getLogger("rsbroker.cluster")
#: the fields of a topology push (``message/x.rsbroker.topology.v0``) per node
CLIENT_TOPOLOGY_FIELDS = ("node_id", "state", "tcp", "ws")

#: Channel byte of Raft streams on the gossip TCP port (see the design's port multiplexing).
RAFT_CHANNEL = 0x02
#: How often the Raft leader reconciles the voter set with gossip membership (seconds).
MEMBERSHIP_SYNC_S = 1.0
#: Wait bounds between attempts to reach --join seeds that did not answer (seconds, full jitter).
JOIN_RETRY_MIN_S = 0.25
JOIN_RETRY_MAX_S = 5.0
#: How often a changed client-connection count is put into this node's gossip metadata (s).
LOAD_ANNOUNCE_S = 2.0
#: Service names listed per node in topology and member views (and topology pushes); the
#: count is always complete. A fleet node serves one service per device.
TOPOLOGY_SERVICES = 100
#: How often a node waiting for --bootstrap-expect peers looks at gossip again (seconds).
BOOTSTRAP_CHECK_S = 0.5
#: Longest a readiness probe waits for the leader to confirm the commit index (seconds).
READY_READ_TIMEOUT_S = 2.0
#: Where the gossip addresses of the members this node saw alive are kept, in --data-dir.
PEERS_FILE = "peers.json"
#: Gossip metadata key saying this node belongs to a Raft group ("1"), so that no node with
#: --bootstrap-expect starts a second cluster beside it.
META_IN_CLUSTER = "raft"


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


class ClusterRuntime:
    """Joins one broker node to its cluster."""

    def __init__(self, node: "Node") -> None:
        self.node = node
        self.settings = node.settings
        assert node.broker is not None, "start the broker before the cluster runtime"
        self.broker: Broker = node.broker
        self.keyring: Keyring | None = load_keyring(self.settings.cluster_key) if self.settings.cluster_key else None
        self.gossip: Any = None  # cluster.swim.node.GossipNode when --cluster is given
        self.links: Links | None = None
        self.remote: RemoteRoutes | None = None
        self.raft: RaftNode
        self.raft_transport: TcpTransport | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._meta: dict[str, str] = {}
        self.leaving = False
        #: the last topology push built, and the member fields it was built from
        self._topology_frame = b""
        self._topology_nodes: tuple[tuple[Any, ...], ...] = ()
        #: provider load figures re-announced (``rsbroker_load_updates_total``)
        self.load_updates = 0
        #: removals from the Raft group, so that membership sync does not undo them
        self._raft_membership = RaftMembership(self.settings.node_id)
        #: set once start() returned: the admin API answers 503 "starting" before that
        self.started = False
        #: the node found its cluster (or had nobody to look for)
        self.joined = False
        self.supervisor = node.supervisor
        self._peers_path: Path | None = None
        self._peers: dict[str, str] = {}

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        settings = self.settings
        data_dir = self._data_dir()
        self._load_peers(data_dir)
        if settings.cluster:
            await self._start_gossip()
            assert self.gossip is not None
            transport: Any = TcpTransport(
                settings.node_id,
                self._raft_address,
                self.keyring,
                max_message=settings.cluster_max_message_bytes,
                read_timeout=settings.cluster_read_timeout_s,
            )
            self.raft_transport = transport
            self.gossip.add_tcp_channel(RAFT_CHANNEL, transport.handle_connection)
            self.gossip.on_host_moved(lambda host: self._host_moved(transport, host))
        else:
            transport = InMemoryTransport(InMemoryNetwork(), settings.node_id)
        self.raft = RaftNode(settings.node_id, data_dir / "raft", transport)
        seeds = self._seeds()
        alone = not seeds and settings.bootstrap_expect <= 1
        await self.raft.start(bootstrap=alone)
        self._supervise(self.raft.background_tasks)
        RelayConfig(self.raft, self.broker).watch()
        if self.gossip is None:
            self.joined = True
        else:
            if self.raft.has_state:  # before the first push-pull: nobody may bootstrap beside us
                self._meta[META_IN_CLUSTER] = "1"
                self.gossip.set_meta(dict(self._meta))
            seeds = [s for s in seeds if s != self.gossip.address]  # one command line lists us too
            self._supervise(self.gossip.background_tasks)
            self._spawn("raft membership sync", self._membership_sync())
            self._spawn("gossip metadata", self._announce_load(), forever=False)  # ends on leave
            self._spawn("provider loads", self._gossip_provider_loads(), forever=False)
            if not self.raft.has_state and not alone:
                self._spawn("bootstrap", self._bootstrap_when_expected(), forever=False)
            if not seeds:
                self.joined = True
            elif await self.gossip.join(seeds):
                self.joined = True
                log.info("joined the cluster through %s", ", ".join(f"{h}:{p}" for h, p in seeds))
            else:
                log.warning("no seed of %s answered yet; retrying in the background",
                            ", ".join(f"{h}:{p}" for h, p in seeds))
                self._spawn("join", self._join_until_answered(seeds), forever=False)
        self.started = True

    def _spawn(self, name: str, coro: Any, forever: bool = True) -> None:
        self._tasks.append(self.supervisor.spawn(name, coro, forever=forever))

    def _supervise(self, tasks: dict[str, asyncio.Task[None]]) -> None:
        for name, task in tasks.items():
            self.supervisor.watch(name, task)

    def _supervise_links(self) -> None:
        if self.links is not None:
            for name, (task, forever) in self.links.background_tasks().items():
                self.supervisor.watch(name, task, forever=forever)

    async def readiness(self) -> str | None:
        """Why this node cannot take clients yet, or None when it can: it has joined, its config
        store has applied the leader's commit index (a ReadIndex round), and it has a link to
        every live member that serves something (a request for any service it knows can be
        forwarded). Members serving nothing are left out so that one unreachable idle node
        cannot make every other node unready."""
        if not self.started:
            return "starting"
        if self.raft.failure is not None:
            return str(self.raft.failure)
        if not self.joined:
            return "not joined: no --join seed or remembered peer answered yet"
        try:
            await self.raft.read_barrier(timeout=READY_READ_TIMEOUT_S)
        except RaftError as exc:
            return f"config store not caught up with the leader: {exc}"
        if self.links is not None and self.gossip is not None:
            own = self.settings.node_id
            missing = sorted(
                m["node_id"] for m in self.gossip.members()
                if m["state"] == "alive" and m["routes"] and m["node_id"] != own and m["node_id"] not in self.links.up
            )  # fmt: skip
            if missing:
                return f"cannot route yet: no link to {', '.join(missing)}"
        return None

    # -- peers, join and bootstrap ----------------------------------------------------------

    def _load_peers(self, data_dir: Path) -> None:
        """The members this node saw alive in an earlier run (its way back into the cluster)."""
        self._peers_path = data_dir / PEERS_FILE
        try:
            peers = json.loads(self._peers_path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("ignoring %s: %s", self._peers_path, exc)
            return
        if isinstance(peers, dict):
            self._peers = {str(k): str(v) for k, v in peers.items() if k != self.settings.node_id}

    def _remember_peer(self, node_id: str, address: str) -> None:
        if self._peers.get(node_id) == address or self._peers_path is None or node_id == self.settings.node_id:
            return
        self._peers[node_id] = address
        tmp = self._peers_path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(self._peers, indent=1, sort_keys=True))
            os.replace(tmp, self._peers_path)
        except OSError as exc:
            log.warning("cannot save the peer list %s: %s", self._peers_path, describe_failure(exc))

    def _seeds(self) -> list[tuple[str, int]]:
        """--join, then every peer remembered from an earlier run (each address once)."""
        seeds: list[tuple[str, int]] = []
        for text in [*self.settings.join, *sorted(self._peers.values())]:
            try:
                seed = parse_hostport(text, "--join")
            except ValueError:
                continue
            if seed not in seeds:
                seeds.append(seed)
        return seeds

    async def _bootstrap_when_expected(self) -> None:
        """Start a new cluster with the ``bootstrap_expect`` smallest node ids once that many
        nodes are alive in gossip and none of them belongs to a cluster; or stop waiting as
        soon as this node hears from a leader (it joined an existing cluster)."""
        expect = self.settings.bootstrap_expect
        while not self.raft.has_state:
            await asyncio.sleep(BOOTSTRAP_CHECK_S)
            alive = [m for m in self.gossip.members() if m["state"] == "alive"]
            if any(m["metadata"].get(META_IN_CLUSTER) == "1" for m in alive):
                continue  # an existing cluster: its leader adds us
            if len(alive) < expect:
                continue
            voters = sorted(m["node_id"] for m in alive)[:expect]
            if self.settings.node_id not in voters:
                return  # the first voters start it; their leader adds us
            if self.raft.bootstrap(voters):
                log.info("bootstrapped a new cluster with voters %s", ", ".join(voters))
            return

    def _data_dir(self) -> Path:
        if self.settings.data_dir:
            path = Path(self.settings.data_dir)
            path.mkdir(parents=True, exist_ok=True)
            return path
        self._tmp = tempfile.TemporaryDirectory(prefix=f"rsbroker-{self.settings.node_id}-")
        log.warning("no --data-dir: the config store lives in %s and is lost when the node stops", self._tmp.name)
        return Path(self._tmp.name)

    async def _start_gossip(self) -> None:
        from cluster.swim.config import profile as gossip_profile
        from cluster.swim.node import GossipNode

        settings = self.settings
        host, port = parse_hostport(settings.cluster or "", "--cluster")
        self._meta = {
            "tcp": settings.advertise or self.node.addresses["tcp"] or "",
            "ws": self.node.addresses["ws"] or "",
            "admin": self.node.addresses["admin"] or "",
            "connections": "0",
        }
        self.gossip = GossipNode(
            settings.node_id,
            (host, port),
            config=gossip_profile(settings.gossip_profile),
            keyring=self.keyring,
            meta=dict(self._meta),
            # other members reach our gossip port on the advertised host (NAT, containers)
            advertise=(parse_hostport(settings.advertise, "--advertise")[0], 0) if settings.advertise else None,
        )  # a keyless cluster off loopback never gets here: Settings.validate refuses it
        self.gossip.on_member_changed(self._member_changed)
        self.gossip.on_routes_changed(self._routes_changed)
        bound = await self.gossip.start()
        self.node.addresses["cluster"] = f"{bound[0]}:{bound[1]}"
        self.links = Links(self.broker, settings.node_id, self.keyring, self._link_ssl())
        self.remote = RemoteRoutes(self.broker.registry, self.links, self.gossip.table)
        self.links.start()
        self._supervise_links()
        self.broker.registry_listeners.append(self._publish_local)
        self.broker.setup_listeners.append(self._greet)

    def _link_ssl(self) -> Any:
        if not self.settings.tls_cert:
            return None
        from broker.auth import client_context

        context = client_context(
            ca_file=self.settings.tls_client_ca,
            cert_file=self.settings.tls_cert,
            key_file=self.settings.tls_key,
            check_hostname=False,
        )
        if not self.settings.tls_client_ca:
            import ssl

            context.verify_mode = ssl.CERT_NONE  # the link proof authenticates the node
        return context

    async def leave(self) -> None:
        """Graceful departure: tell the cluster and our clients before draining."""
        self.leaving = True
        self._push_topology()
        if self.gossip is not None:
            await self.gossip.leave()  # announces, lets it spread, then stops gossiping

    async def stop(self) -> None:
        self.supervisor.stopping()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.links is not None:
            await self.links.stop()
        await self.raft.stop()
        if self.gossip is not None:
            await self.gossip.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def counters(self) -> dict[str, Any]:
        """Cluster-plane counters for ``/metrics``: messages dropped before any state changed
        (by plane and reason) and broker-link handshakes refused."""
        dropped: dict[tuple[str, str], int] = {}
        planes = (("gossip", self.gossip.stats() if self.gossip else {}),
                  ("raft", self.raft_transport.stats if self.raft_transport else {}))
        for plane, stats in planes:
            for name, value in stats.items():
                if name.startswith("dropped_"):
                    dropped[(plane, name[len("dropped_"):])] = value
        failures = self.links.stats["link_auth_failures"] if self.links else 0
        return {"dropped": dropped, "link_auth_failures": failures, "load_updates": self.load_updates}

    # -- gossip → relay ---------------------------------------------------------------------

    def _member(self, node_id: str) -> dict[str, Any] | None:
        if self.gossip is None:
            return None
        for member in self.gossip.members():
            if member["node_id"] == node_id:
                return member
        return None

    def _host_moved(self, transport: TcpTransport, host: str) -> None:
        for member in self.gossip.members():
            if parse_hostport(member["address"], "member")[0] == host:
                log.info("node %s moved to %s: reconnecting Raft", member["node_id"], member["resolved"])
                transport.forget(member["node_id"])

    def _raft_address(self, node_id: str) -> tuple[str, int] | None:
        member = self._member(node_id)
        return parse_hostport(member["address"], f"member {node_id}") if member else None

    def _member_changed(self, change: MemberChanged) -> None:
        if self.gossip is not None:  # each node enforces 1/live of every rate limit
            self.broker.traffic.set_live_nodes(sum(1 for m in self.gossip.members() if m["state"] in ("alive", "suspect")))
        member = change.member
        if self.links is None or self.remote is None or member.node == self.settings.node_id:
            return
        state = member.state.name.lower()
        tcp = member.meta.get("tcp")
        if state == "suspect":
            self.links.suspect.add(member.node)
        else:
            self.links.suspect.discard(member.node)
        if state == "alive":
            self._remember_peer(member.node, f"{member.host}:{member.port}")
        if state in ("alive", "suspect") and tcp:
            self.links.want(member.node, parse_hostport(tcp, f"member {member.node} tcp"))
            self._supervise_links()
        elif state in ("dead", "left"):
            self.links.want(member.node, None, drain=state == "left")
            self.remote.drop(member.node)
        self._push_topology()

    def _routes_changed(self, change: RoutesChanged) -> None:
        """Registry updates for just the services named: O(change). The routing table
        already dropped the entries of dead members, so it is the one truth here."""
        if self.remote is None or change.node == self.settings.node_id:
            return
        for service in change.services:
            self.remote.changed(service)

    def _publish_local(self, services: frozenset[str]) -> None:
        if self.gossip is not None:
            now = self.broker.clock()
            for service in services:
                self.gossip.set_local_service(service, local_entries(self.broker.registry, service, now))

    async def _gossip_provider_loads(self) -> None:
        """Keep the loads in this node's routing entries current, at a bounded rate (see
        cluster.load_gossip); stops once the node leaves, as its entries go with it."""
        node_id = self.settings.node_id
        while not self.leaving:
            await asyncio.sleep(LOAD_GOSSIP_S)
            try:
                for service, entries in refreshed(self.broker.registry, self.gossip.table, node_id, self.broker.clock()):
                    self.gossip.set_local_service(service, entries)
                    self.load_updates += 1
            except Exception:  # a bug here must not stop load gossip for good
                log.exception("provider load gossip pass failed")

    # -- topology -------------------------------------------------------------------------

    def topology_push(self) -> bytes:
        """What a cluster-aware client needs to connect, and no more: any authenticated
        principal may ask for it, so admin addresses and other internals stay out.

        Every SETUP asking for topology gets one, so in a connect storm this runs thousands
        of times a second: it reads only the member list (O(members), never the routes or
        the sessions, which made each SETUP cost O(fleet) — issue 13's fail-over storm spent
        three quarters of a survivor's CPU here) and reuses the frame while the list is
        unchanged."""
        nodes = tuple(self._client_node(m) for m in self._members())
        if nodes != self._topology_nodes:
            body = json.dumps({"self": self.settings.node_id, "nodes": [dict(zip(CLIENT_TOPOLOGY_FIELDS, n)) for n in nodes]})
            self._topology_frame = metadata_push_frame(md.composite_entry(md.TOPOLOGY_MIME, body.encode()))
            self._topology_nodes = nodes
        return self._topology_frame

    def _members(self) -> list[dict[str, Any]]:
        """The gossip member list sorted by node id (just this node before gossip starts)."""
        if self.gossip is None:
            meta = {k: v for k, v in self.node.addresses.items() if k in ("tcp", "ws") and v}
            return [{"node_id": self.settings.node_id, "state": "alive", "meta": meta}]
        return sorted(self.gossip.members(), key=lambda m: m["node_id"])

    def _client_node(self, member: dict[str, Any]) -> tuple[Any, ...]:
        """A member's :data:`CLIENT_TOPOLOGY_FIELDS`, as the topology view shows them."""
        meta = member["meta"] if "meta" in member else member["metadata"]
        return (member["node_id"], self._member_state(member), meta.get("tcp"), meta.get("ws"))

    def _member_state(self, member: dict[str, Any]) -> str:
        """A member's state as this node reports it: its own is 'leaving' once it leaves."""
        if member["node_id"] == self.settings.node_id and self.leaving:
            return "leaving"
        return str(member["state"])

    def _greet(self, session: "Session") -> None:
        if session.wants_topology:
            session.send_frame(self.topology_push())

    def _push_topology(self) -> None:
        frame = self.topology_push()
        for session in list(self.broker.sessions):
            if session.wants_topology and not session.is_link:
                session.send_frame(frame)

    def members_view(self, prefix: str = "", limit: int = TOPOLOGY_SERVICES) -> list[dict[str, Any]]:
        """Every member with the count of services it announces and the first ``limit``
        of their names (sorted, starting with ``prefix``): O(members + its services) at
        most, so a fleet of devices does not make this a megabyte of JSON."""
        if self.gossip is None:
            return [self._self_view(prefix, limit)]
        table = self.gossip.table
        out = []
        for member in self._members():
            total, names = table.service_names(member["node_id"], prefix, limit)
            view = {
                "node_id": member["node_id"],
                "state": member["state"],
                "incarnation": member["incarnation"],
                "address": member["address"],
                "resolved": member.get("resolved"),
                "meta": dict(member["metadata"]),
                "routes": member["routes"],
                "services_total": total,
                "services": names,
            }
            if member["node_id"] == self.settings.node_id:
                # this node's gossip counters (bytes and packets in/out, drops by reason)
                view["gossip"] = self.gossip.stats()
            out.append(view)
        return out

    def _self_view(self, prefix: str, limit: int) -> dict[str, Any]:
        names = [s for s in self.broker.registry.names() if s.startswith(prefix)]
        return {
            "node_id": self.settings.node_id,
            "state": "leaving" if self.leaving else "alive",
            "incarnation": 0,
            "address": self.node.addresses["cluster"],
            "meta": {k: v for k, v in self.node.addresses.items() if k in ("tcp", "ws", "admin") and v},
            "services_total": len(names),
            "services": heapq.nsmallest(limit, names),
        }

    def topology_view(self, prefix: str = "", limit: int = TOPOLOGY_SERVICES) -> dict[str, Any]:
        nodes = []
        own = self.settings.node_id
        for member in self.members_view(prefix, limit):
            node_id = member["node_id"]
            is_self = node_id == own
            nodes.append(
                {
                    "node_id": node_id,
                    "state": self._member_state(member),
                    "tcp": member["meta"].get("tcp"),
                    "ws": member["meta"].get("ws"),
                    "admin": member["meta"].get("admin"),
                    "services_total": member["services_total"],
                    "services": member["services"],
                    "connections": self._client_connections() if is_self else _int(member["meta"].get("connections")),
                    "link": "self" if is_self else self._link_state(node_id),
                }
            )
        return {"self": own, "leader": self.raft.leader_id if hasattr(self, "raft") else None, "nodes": nodes}

    def _client_connections(self) -> int:
        return len([s for s in self.broker.sessions if not s.is_link and not s.outbound])

    def _link_state(self, node_id: str) -> str:
        if self.links is None:
            return "none"
        return "up" if node_id in self.links.up else "down"

    # -- Raft ↔ membership and config ---------------------------------------------------------

    async def _membership_sync(self) -> None:
        """As leader, add (or promote) live gossip members that are not Raft voters.

        Every node records removals (``RaftMembership``), so that no leader re-adds a node
        removed right after it died while gossip still reports it alive.
        """
        membership = self._raft_membership
        while True:
            await asyncio.sleep(MEMBERSHIP_SYNC_S)
            if self.gossip is None:
                continue
            members = self.raft.status()["members"]
            gossip = self.gossip.members()
            membership.observe(members, gossip)
            if not self.raft.is_leader:
                continue
            voters = [n for n, info in members.items() if info["voter"]]
            for node_id in membership.to_add(voters, gossip):
                try:
                    await self.raft.add_member(node_id)
                    log.info("added node %s to the config store's Raft group", node_id)
                except RaftError as exc:  # retried next round; a change may be in progress
                    log.info("could not add node %s to Raft yet: %s", node_id, exc)

    async def _join_until_answered(self, seeds: list[tuple[str, int]]) -> None:
        """Seeds may start after us (a whole cluster booting at once): keep asking."""
        backoff = Backoff(JOIN_RETRY_MIN_S, JOIN_RETRY_MAX_S)
        while not await self.gossip.join(seeds):
            await backoff.wait()
        self.joined = True
        log.info("joined the cluster through %s", ", ".join(f"{h}:{p}" for h, p in seeds))

    async def _announce_load(self) -> None:
        """Keep this node's client connection count in its gossip metadata (for topology views).

        Stops once the node leaves: a metadata change is announced as ``Alive`` with a higher
        incarnation, which would overrule our own leave announcement on every other node
        (they would take us for alive again, then suspect us and declare us dead).
        """
        announced = -1
        while True:
            await asyncio.sleep(LOAD_ANNOUNCE_S)
            if self.leaving:
                return
            count = self._client_connections()
            in_cluster = "1" if self.raft.has_state else "0"
            if (count != announced or self._meta.get(META_IN_CLUSTER) != in_cluster) and self.gossip is not None:
                self._meta["connections"] = str(count)
                self._meta[META_IN_CLUSTER] = in_cluster
                self.gossip.set_meta(dict(self._meta))
                announced = count

    async def remove_member(self, node_id: str) -> None:
        """Remove a (dead) node from the Raft group; runs on the leader."""
        await self.raft.remove_member(node_id)
        self._raft_membership.removed(node_id, self.gossip.members() if self.gossip is not None else [])
