"""Gossip settings: one dataclass, named profiles, a validator.

Every value carries the reason it has that value. The ``lan`` profile is memberlist's
``DefaultLANConfig`` (hashicorp/memberlist config.go), ``wan`` and ``local`` follow its
``DefaultWANConfig`` and ``DefaultLocalConfig``. ``failover`` is ours: the LAN profile
detects a crash in 5-10 s at 50 nodes, and a broker wants its dead providers gone in
about 3 s; it trades a few more packets for that (see the figures in the module
``cluster.swim.sim``).

Durations are seconds (float). This module does no I/O.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

__all__ = ["Config", "PROFILES", "profile"]


@dataclass(frozen=True)
class Config:
    """Tunables of the SWIM core, its shell and the routing-table dissemination."""

    #: Time between two probes of a member by this node. memberlist LAN: 1 s, so that every
    #: member is probed about once a second by someone, whatever the cluster size.
    probe_interval_s: float = 1.0
    #: How long to wait for a direct ack before asking others. memberlist LAN: 500 ms, well
    #: above the 99.9th percentile of LAN round trips.
    probe_timeout_s: float = 0.5
    #: Members asked to probe indirectly when the direct ack is late. memberlist: 3, enough
    #: to route around one bad link without flooding.
    indirect_checks: int = 3
    #: A broadcast is sent retransmit_mult * ceil(log10(N + 1)) times; memberlist: 4, which
    #: reaches every member with high probability even with some loss.
    retransmit_mult: int = 4
    #: Minimum suspicion time = suspicion_mult * max(1, log10(N)) * probe_interval;
    #: memberlist: 4, so a suspect has several gossip rounds to refute.
    suspicion_mult: int = 4
    #: Maximum suspicion time (no confirmations) as a multiple of the minimum; memberlist: 6
    #: (Lifeguard's dynamic suspicion starts high and shrinks with independent confirmations).
    suspicion_max_timeout_mult: int = 6
    #: Lifeguard local health: timeouts are scaled by up to this factor when this node itself
    #: seems slow (missed nacks, having to refute). memberlist: 8.
    awareness_max_multiplier: int = 8
    #: Time between two gossip rounds; memberlist LAN: 200 ms, fast spread at low cost.
    gossip_interval_s: float = 0.2
    #: Members gossiped to per round; memberlist LAN: 3.
    gossip_nodes: int = 3
    #: Keep gossiping to a member this long after it died, so that a falsely declared
    #: member learns of it and refutes. memberlist LAN: 30 s.
    gossip_to_the_dead_s: float = 30.0
    #: Full state exchange over TCP with one random member, scaled up beyond 32 members;
    #: memberlist LAN: 30 s. Repairs anything the gossip missed.
    push_pull_interval_s: float = 30.0
    #: Try a push-pull with one random dead member this often (Serf's reconnect, 30 s): a
    #: member declared dead across a partition is still running, and once the partition
    #: heals this is how the two sides find each other again (gossip alone never would:
    #: nobody gossips about members they believe dead once the news has been spread).
    reconnect_interval_s: float = 30.0
    #: Deadline of one TCP exchange (connect, push, pull); memberlist LAN: 10 s.
    tcp_timeout_s: float = 10.0
    #: A dead member's name may be taken by another address after this long; None means
    #: never (memberlist's default of 0 means the same). A restarted node on the same
    #: address always rejoins, with a higher incarnation.
    dead_node_reclaim_s: float | None = None
    #: Dead and departed members stay listed (state dead/left, for the admin API, and
    #: dead ones as reconnect candidates) this long, then are forgotten. A partition that
    #: lasts longer needs a new join. Serf keeps them 24 h; an hour keeps the list short.
    dead_retention_s: float = 3600.0
    #: Largest UDP datagram we send, sealed; memberlist: 1400 bytes, under a 1500-byte MTU
    #: with room for IP/UDP headers, so nothing is fragmented.
    packet_size: int = 1400
    #: Largest encoded node metadata; memberlist: 512 bytes, so an alive message always
    #: fits a packet with room for piggybacked gossip.
    meta_max_bytes: int = 512
    #: Sealed packets carry a timestamp; packets further than this from our clock are
    #: dropped, and packet ids are remembered twice this long to drop replays.
    max_clock_skew_s: float = 60.0
    #: How long a graceful leave waits for its announcement to go out.
    leave_propagate_s: float = 1.0
    #: Removed routing entries are remembered (as tombstones) this long so that a late
    #: copy of the old entry cannot resurrect it.
    route_tombstone_s: float = 120.0

    def validate(self) -> "Config":
        """Refuse contradictory or meaningless settings at start; return self."""
        positive = [
            "probe_interval_s", "probe_timeout_s", "gossip_interval_s", "push_pull_interval_s", "reconnect_interval_s",
            "tcp_timeout_s", "leave_propagate_s", "max_clock_skew_s",
        ]
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        at_least_one = [
            "retransmit_mult", "suspicion_max_timeout_mult", "awareness_max_multiplier", "gossip_nodes",
        ]
        for name in at_least_one:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.suspicion_mult < 1:
            raise ValueError(f"suspicion_mult must be >= 1, got {self.suspicion_mult}")
        if self.indirect_checks < 0:
            raise ValueError(f"indirect_checks must be >= 0, got {self.indirect_checks}")
        if self.probe_timeout_s >= self.probe_interval_s:
            raise ValueError(
                f"probe_timeout_s ({self.probe_timeout_s}) must be shorter than probe_interval_s "
                f"({self.probe_interval_s}): the indirect probe needs the rest of the interval"
            )
        if self.gossip_interval_s > self.probe_interval_s * self.suspicion_mult:
            raise ValueError("gossip_interval_s longer than the minimum suspicion time: nobody could refute")
        if not 576 <= self.packet_size <= 65000:
            raise ValueError(f"packet_size must be within 576..65000 bytes, got {self.packet_size}")
        if not 0 < self.meta_max_bytes <= self.packet_size // 2:
            raise ValueError("meta_max_bytes must be positive and at most half a packet")
        for name in ("dead_retention_s", "gossip_to_the_dead_s", "route_tombstone_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.dead_node_reclaim_s is not None and self.dead_node_reclaim_s < 0:
            raise ValueError("dead_node_reclaim_s must be None or >= 0")
        return self

    # ---- derived values (memberlist util.go) -------------------------------------------

    def retransmit_limit(self, n: int) -> int:
        """How many times one broadcast is sent in a cluster of n members."""
        return self.retransmit_mult * max(1, math.ceil(math.log10(n + 1)))

    def suspicion_min_s(self, n: int) -> float:
        """Suspicion timeout with all expected confirmations in; grows with log10(n)."""
        return self.suspicion_mult * max(1.0, math.log10(max(1.0, float(n)))) * self.probe_interval_s

    def suspicion_confirmations(self, n: int) -> int:
        """Independent confirmations that shrink a suspicion to its minimum (memberlist: mult - 2)."""
        k = self.suspicion_mult - 2
        return 0 if n - 2 < k or k < 1 else k

    def push_pull_interval_for(self, n: int) -> float:
        """memberlist pushPullScale: beyond 32 members, back off so TCP load stays flat."""
        if n <= 32:
            return self.push_pull_interval_s
        return self.push_pull_interval_s * (math.ceil(math.log2(n) - math.log2(32)) + 1)

    def replace(self, **changes: object) -> "Config":
        """A copy with some values changed, validated."""
        return dataclasses.replace(self, **changes).validate()  # type: ignore[arg-type]


#: Named profiles. Append new names; never change what an existing name means silently.
PROFILES: dict[str, Config] = {
    "lan": Config(),
    # memberlist DefaultWANConfig: long RTTs and lossy links, so probe slowly, suspect longer.
    "wan": Config(
        probe_interval_s=5.0, probe_timeout_s=3.0, suspicion_mult=6, push_pull_interval_s=60.0,
        gossip_interval_s=0.5, gossip_nodes=4, gossip_to_the_dead_s=60.0, tcp_timeout_s=30.0,
        reconnect_interval_s=60.0,
    ),
    # memberlist DefaultLocalConfig: one host or a very fast network; short timeouts.
    "local": Config(
        probe_interval_s=1.0, probe_timeout_s=0.2, indirect_checks=1, retransmit_mult=2,
        suspicion_mult=3, push_pull_interval_s=15.0, gossip_interval_s=0.1,
        gossip_to_the_dead_s=15.0, tcp_timeout_s=1.0, reconnect_interval_s=10.0,
    ),
    # Ours: a LAN broker cluster that must drop a crashed node's providers in ~3 s at 50
    # nodes. Probe four times as often (a crash waits for the next probe by anyone, then a
    # whole interval), gossip faster and wider, one confirmation shrinks the suspicion
    # (Lifeguard) to 3 * log10(N) * 0.25 s; more bytes per second is the price, and a node
    # paused (GC, SIGSTOP) for more than ~1.5 s at small N is declared dead: no detector
    # can tell a 2 s pause from a crash it must report within 3 s.
    "failover": Config(
        probe_interval_s=0.25, probe_timeout_s=0.125, suspicion_mult=3, suspicion_max_timeout_mult=4,
        gossip_interval_s=0.1, gossip_nodes=4, push_pull_interval_s=15.0, tcp_timeout_s=5.0,
        reconnect_interval_s=10.0,
    ),
}


def profile(name: str) -> Config:
    """The named profile, validated; ValueError names the choices on a typo."""
    try:
        return PROFILES[name].validate()
    except KeyError:
        raise ValueError(f"unknown gossip profile {name!r}; choose one of {sorted(PROFILES)}") from None
