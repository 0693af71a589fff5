"""Prometheus families of the cluster side: gossip (SWIM), broker links and Raft.

Read at scrape time from the counters each component keeps anyway (``GossipNode.stats()``,
``Links.opened``/``lost``, ``RaftNode.status()`` and its proposal, leader-change, fsync and
snapshot figures). A node without ``--cluster`` still has a one-voter Raft group, so the
Raft families are always present; gossip and link families are empty there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from admin.families import add_histogram

if TYPE_CHECKING:
    from rsbroker.node import Node

#: member states SWIM knows; every one is exported (0 when empty) so a dashboard sees all
MEMBER_STATES = ("alive", "suspect", "dead", "left")
_DROP_PREFIX = "dropped_"


class ClusterCollector:
    def __init__(self, node: "Node") -> None:
        self._node = node

    def collect(self) -> Iterator[Any]:
        runtime = self._node.runtime
        if runtime is None:
            return
        if runtime.gossip is not None:
            yield from _gossip(runtime.gossip)
        if runtime.links is not None:
            yield from _links(runtime.links)
        if hasattr(runtime, "raft"):
            yield from _raft(runtime.raft)


def _gossip(gossip: Any) -> Iterator[Any]:
    members = GaugeMetricFamily("rsbroker_gossip_members", "Members in this node's view, by SWIM state", labels=["state"])
    by_state = dict.fromkeys(MEMBER_STATES, 0)
    for member in gossip.members():
        by_state[member["state"]] = by_state.get(member["state"], 0) + 1
    for state, count in by_state.items():
        members.add_metric([state], count)
    yield members
    stats = gossip.stats()
    for name, text in (
        ("probes", "Failure-detection probes this node started"),
        ("suspicions", "Members this node marked suspect (its own or others' accusations)"),
        ("refutations", "Times this node refuted a suspicion of itself"),
    ):
        family = CounterMetricFamily(f"rsbroker_gossip_{name}", text)
        family.add_metric([], stats.get(name, 0))
        yield family
    packets = CounterMetricFamily("rsbroker_gossip_packets", "Gossip UDP packets", labels=["direction"])
    nbytes = CounterMetricFamily("rsbroker_gossip_bytes", "Gossip UDP bytes", labels=["direction"])
    for direction, suffix in (("received", "in"), ("sent", "out")):
        packets.add_metric([direction], stats.get(f"packets_{suffix}", 0))
        nbytes.add_metric([direction], stats.get(f"bytes_{suffix}", 0))
    yield packets
    yield nbytes
    drops = CounterMetricFamily("rsbroker_gossip_drops", "Gossip packets or frames dropped, by reason", labels=["reason"])
    for key, count in sorted(stats.items()):
        if key.startswith(_DROP_PREFIX):
            drops.add_metric([key[len(_DROP_PREFIX) :]], count)
    yield drops


def _links(links: Any) -> Iterator[Any]:
    up = GaugeMetricFamily("rsbroker_link_up", "1 when this node's link to the peer is connected", labels=["peer"])
    for peer, is_up in links.peer_states().items():
        up.add_metric([peer], 1 if is_up else 0)
    yield up
    opened = CounterMetricFamily("rsbroker_link_connects", "Times the link to a peer came up (more than 1: reconnects)", labels=["peer"])
    for peer, count in sorted(links.opened.items()):
        opened.add_metric([peer], count)
    yield opened
    lost = CounterMetricFamily("rsbroker_link_losses", "Times the link to a peer went down", labels=["peer"])
    for peer, count in sorted(links.lost.items()):
        lost.add_metric([peer], count)
    yield lost
    frames = CounterMetricFamily("rsbroker_link_frames", "Frames on the outbound link to a peer", labels=["peer", "direction"])
    totals = dict(links.closed_frames)
    for peer, link in links.up.items():
        totals[(peer, "in")] = totals.get((peer, "in"), 0) + link.frames_in
        totals[(peer, "out")] = totals.get((peer, "out"), 0) + link.frames_out
    for (peer, direction), count in sorted(totals.items()):
        frames.add_metric([peer, direction], count)
    yield frames


def _raft(raft: Any) -> Iterator[Any]:
    status = raft.status()
    for name, key, text in (
        ("term", "term", "Current Raft term"),
        ("commit_index", "commit_index", "Highest log index known committed"),
        ("applied_index", "applied_index", "Highest log index applied to the config store"),
    ):
        family = GaugeMetricFamily(f"rsbroker_raft_{name}", text)
        family.add_metric([], status[key])
        yield family
    leader = GaugeMetricFamily("rsbroker_raft_leader", "1, labelled with the leader this node knows ('' when none)", labels=["leader"])
    leader.add_metric([status["leader"] or ""], 1)
    yield leader
    is_leader = GaugeMetricFamily("rsbroker_raft_is_leader", "1 when this node is the Raft leader")
    is_leader.add_metric([], 1 if raft.is_leader else 0)
    yield is_leader
    proposals = CounterMetricFamily("rsbroker_raft_proposals", "Config writes proposed from this node (retries included)")
    proposals.add_metric([], raft.proposals)
    yield proposals
    changes = CounterMetricFamily("rsbroker_raft_leader_changes", "Times this node saw the leader change")
    changes.add_metric([], raft.leader_changes)
    yield changes
    fsync = HistogramMetricFamily("rsbroker_raft_fsync_seconds", "Time to save Raft state and entries durably (write + fsync)")
    add_histogram(fsync, [], raft.fsync_seconds)
    yield fsync
    snapshot = GaugeMetricFamily("rsbroker_raft_snapshot_bytes", "Size of the last snapshot taken or restored")
    snapshot.add_metric([], raft.snapshot_bytes)
    yield snapshot
