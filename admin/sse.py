"""The dashboard's live feed: one sampler per node, server-sent events to every open page.

Once a second the sampler reads this node's relay and cluster state into one snapshot:
nodes with their state, connections, request rate and links; services with providers,
policy, request rate, p50/p99 time to first response and error ratio over the last
``WINDOW_S`` seconds (from the relay's plain histograms, as deltas); recent membership and
leader changes. ``GET /api/v1/events`` streams every snapshot (``event: snapshot``) to each
page; a page that reads too slowly misses snapshots rather than growing a queue. The
per-service part (a walk over every service and provider: 10,000 device services cost a
node 12 % of a core at a sample a second) is sampled only while a page is open.

Other nodes' rates and links come from their ``GET /api/v1/stats``, read for each stream
with its caller's credential (``admin.peers``); a node that does not answer shows no rate.
The stream is an admin route like any other: with authentication on it needs the bearer
header (a page reads it with ``fetch``, never with a token in the URL), and it ends as soon
as that credential would no longer be accepted (expired, revoked), so the page asks again.
The sampler never blocks the relay: it reads counters, it never locks anything.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from admin.guard import credential_refusal
from admin.peers import PeerStats
from broker.metering import LATENCY_BUCKETS_S, OK

if TYPE_CHECKING:
    from rsbroker.node import Node

log = logging.getLogger("rsbroker.admin.sse")

SAMPLE_INTERVAL_S = 1.0
#: rates, quantiles and error ratios are over this many seconds of samples
WINDOW_S = 10.0
#: membership and leader changes kept for the page
EVENTS_KEPT = 30
#: snapshots queued for one page before it misses some (a page reads one a second)
_QUEUE_SIZE = 4


def quantile(q: float, counts: list[int]) -> float | None:
    """Estimate of the ``q`` quantile, seconds, from per-bucket counts (linear within a bucket,
    as Prometheus' histogram_quantile); None without observations."""
    total = sum(counts)
    if total == 0:
        return None
    rank, seen = q * total, 0
    for i, count in enumerate(counts):
        if seen + count >= rank and count:
            lower = LATENCY_BUCKETS_S[i - 1] if i else 0.0
            upper = LATENCY_BUCKETS_S[i] if i < len(LATENCY_BUCKETS_S) else LATENCY_BUCKETS_S[-1]
            return lower + (upper - lower) * (rank - seen) / count
        seen += count
    return LATENCY_BUCKETS_S[-1]


def _service_totals(node: "Node") -> dict[str, tuple[int, int, list[int]]]:
    """service label → (streams ended, not ok, first-response bucket counts), summed over routes."""
    out: dict[str, tuple[int, int, list[int]]] = {}
    broker = node.broker
    if broker is None:
        return out
    for m in broker.meter.meters():
        total, bad, buckets = out.get(m.service, (0, 0, [0] * (len(LATENCY_BUCKETS_S) + 1)))
        ended = sum(m.outcomes)
        for hist in m.first:
            if hist is not None:
                buckets = [a + b for a, b in zip(buckets, hist.counts)]
        out[m.service] = (total + ended, bad + ended - m.outcomes[OK], buckets)
    return out


class Feed:
    """Samples the node once a second and fans the snapshot out to subscribed pages."""

    def __init__(self, node: "Node") -> None:
        self.node = node
        self.subscribers: set[asyncio.Queue[dict[str, Any] | None]] = set()
        self.latest: dict[str, Any] | None = None
        self.events: collections.deque[dict[str, Any]] = collections.deque(maxlen=EVENTS_KEPT)
        #: (when, requests, per-service totals, or None when no page was open to need them)
        self._window: collections.deque[tuple[float, int, dict[str, tuple[int, int, list[int]]] | None]] = collections.deque()
        self._states: dict[str, str] = {}
        self._leader: str | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle (aiohttp signals) ----------------------------------------------------------

    async def start(self, app: web.Application) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._sample_loop())]

    async def stop(self, app: web.Application) -> None:
        """End every open event stream (so the server can shut down) and the samplers."""
        for queue in list(self.subscribers):
            self._offer(queue, None)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- sampling ---------------------------------------------------------------------------

    async def _sample_loop(self) -> None:
        while True:
            try:
                snapshot = self.sample(time.monotonic())
            except Exception:  # a bug here must not end the feed for good
                log.exception("dashboard sample failed")
            else:
                self.latest = snapshot
                for queue in list(self.subscribers):
                    self._offer(queue, snapshot)
            await asyncio.sleep(SAMPLE_INTERVAL_S)

    @staticmethod
    def _offer(queue: asyncio.Queue[dict[str, Any] | None], item: dict[str, Any] | None) -> None:
        if queue.full():
            queue.get_nowait()  # the page is behind: drop its oldest snapshot
        queue.put_nowait(item)

    def sample(self, now: float) -> dict[str, Any]:
        node = self.node
        broker, runtime = node.broker, node.runtime
        requests = broker.stats["requests"] + broker.stats["rejected"] if broker else 0
        watched = bool(self.subscribers)
        self._window.append((now, requests, _service_totals(node) if watched else None))
        while len(self._window) > 2 and now - self._window[0][0] > WINDOW_S:
            self._window.popleft()
        topology = runtime.topology_view() if runtime is not None else {"self": node.settings.node_id, "leader": None, "nodes": []}
        self._note_changes(topology)
        return {
            "self": topology["self"],
            "leader": topology["leader"],
            "time": time.time(),
            "nodes": self._nodes(topology),
            "services": self._services() if watched else [],
            "events": list(self.events),
            "config_index": runtime.raft.status()["applied_index"] if runtime is not None and hasattr(runtime, "raft") else 0,
        }

    def own_rate(self) -> float:
        """Requests per second through this node over the window (0 before two samples)."""
        if not self._window:
            return 0.0
        (t0, r0, _), (t1, r1, _) = self._window[0], self._window[-1]
        return (r1 - r0) / (t1 - t0) if t1 > t0 else 0.0

    def own_links(self) -> dict[str, str]:
        runtime = self.node.runtime
        links = runtime.links if runtime is not None else None
        return {peer: "up" if up else "down" for peer, up in links.peer_states().items()} if links is not None else {}

    def _nodes(self, topology: dict[str, Any]) -> list[dict[str, Any]]:
        """Every node as the topology shows it; rate and links are known here for this node only
        (each stream adds the others', ``admin.peers``)."""
        own = topology["self"]
        return [
            {
                **entry,
                "request_rate": self.own_rate() if entry["node_id"] == own else None,
                "links": self.own_links() if entry["node_id"] == own else {},
            }
            for entry in topology["nodes"]
        ]

    def _services(self) -> list[dict[str, Any]]:
        """Every service with its rates over the window's samples that have per-service totals
        (the last one always has: it is taken only while a page is open)."""
        t0, _, old = next(entry for entry in self._window if entry[2] is not None)
        t1, _, new = self._window[-1]
        assert old is not None and new is not None
        span = t1 - t0
        broker = self.node.broker
        view = broker.services_view() if broker else {}
        out = []
        for service in sorted(set(view) | set(new)):
            total, bad, buckets = new.get(service, (0, 0, [0] * (len(LATENCY_BUCKETS_S) + 1)))
            total0, bad0, buckets0 = old.get(service, (0, 0, [0] * len(buckets)))
            ended, failed = total - total0, bad - bad0
            delta = [a - b for a, b in zip(buckets, buckets0)]
            entry = view.get(service, {})
            out.append(
                {
                    "service": service,
                    "policy": entry.get("policy"),
                    "providers": [f"{p['instance']}@{p['node']}" for p in entry.get("providers", [])],
                    "rate": ended / span if span > 0 else 0.0,
                    "p50_s": quantile(0.5, delta),
                    "p99_s": quantile(0.99, delta),
                    "error_ratio": failed / ended if ended else None,
                }
            )
        return out

    def _note_changes(self, topology: dict[str, Any]) -> None:
        stamp = time.strftime("%H:%M:%S")
        for entry in topology["nodes"]:
            before = self._states.get(entry["node_id"])
            if before != entry["state"]:
                text = f"{entry['node_id']} joined ({entry['state']})" if before is None else f"{entry['node_id']} {before} → {entry['state']}"
                self.events.appendleft({"at": stamp, "kind": "member", "text": text})
                self._states[entry["node_id"]] = entry["state"]
        if topology["leader"] != self._leader:
            self.events.appendleft({"at": stamp, "kind": "leader", "text": f"leader {self._leader or 'none'} → {topology['leader'] or 'none'}"})
            self._leader = topology["leader"]


FEED_KEY: web.AppKey[Feed] = web.AppKey("feed", Feed)


async def events(request: web.Request) -> web.StreamResponse:
    """``text/event-stream`` of snapshots: the latest at once, then one per sample, each with
    the other nodes' stats as this caller may read them; ends when the caller's credential
    is no longer accepted."""
    feed = request.app[FEED_KEY]
    node = feed.node
    recheck = node.settings.admin_token_required
    peers = PeerStats(request.headers.get("Authorization"), node.settings.admin_tls)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(_QUEUE_SIZE)
    feed.subscribers.add(queue)
    # a fresh snapshot at once: the sampler left the services out while no page was open
    feed.latest = feed.sample(time.monotonic())
    queue.put_nowait(feed.latest)
    poller = asyncio.get_running_loop().create_task(peers.run(lambda: feed.latest))
    try:
        while (snapshot := await queue.get()) is not None:
            status, reason = credential_refusal(request, node) if recheck else (0, "")
            if status:  # expired or revoked since the stream began: the page reconnects and is told why
                log.info("admin event stream ended (%d): %s", status, reason)
                break
            await response.write(f"event: snapshot\ndata: {json.dumps(peers.fill(snapshot))}\n\n".encode())
    except (ConnectionResetError, ConnectionError):
        pass  # the page went away
    finally:
        feed.subscribers.discard(queue)
        poller.cancel()
        await asyncio.gather(poller, return_exceptions=True)
    return response


async def stats(request: web.Request) -> web.Response:
    """What other nodes' dashboards show for this node: request rate and link states."""
    feed = request.app[FEED_KEY]
    return web.json_response(
        {"node_id": feed.node.settings.node_id, "request_rate": feed.own_rate(), "links": feed.own_links()}
    )


def sse_routes(app: web.Application, node: "Node") -> None:
    """Add the live feed (and its sampler's lifecycle) to the admin application."""
    feed = app[FEED_KEY] = Feed(node)
    app.on_startup.append(feed.start)
    app.on_shutdown.append(feed.stop)
    app.router.add_get("/api/v1/events", events)
    app.router.add_get("/api/v1/stats", stats)

