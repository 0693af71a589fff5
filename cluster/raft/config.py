"""Settings of the Raft core, each with the reason for its default, and their validation.

The core counts time in logical ticks; the shell decides how long a tick is
(``NodeOptions.tick_interval``). Contradictory settings are refused at construction
time by ``RaftConfig.validate`` rather than misbehaving later.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ConfigError", "RaftConfig"]


class ConfigError(ValueError):
    """A Raft setting is out of range or contradicts another one."""


@dataclass(frozen=True)
class RaftConfig:
    #: Ticks a follower waits without hearing from a leader before campaigning. The real
    #: timeout is drawn uniformly from [election_tick, 2 * election_tick) so that
    #: candidates rarely split the vote (paper section 5.2).
    election_tick: int = 10
    #: Ticks between leader heartbeats. Must be well below election_tick so that one or
    #: two lost heartbeats do not trigger an election.
    heartbeat_tick: int = 2
    #: Pre-vote (thesis 9.6): a node that was partitioned away asks first whether it could
    #: win before bumping its term, so it cannot depose a healthy leader on return.
    pre_vote: bool = True
    #: Check-quorum (thesis 6.2): a leader that has not heard from a majority for an
    #: election timeout steps down, and followers that hear from a leader ignore votes
    #: for that long (leader lease), which also makes stale leaders harmless for reads.
    check_quorum: bool = True
    #: Upper bound of entries per AppendEntries; batches amortise per-message overhead.
    max_entries_per_msg: int = 256
    #: Upper bound of entry payload bytes per AppendEntries (at least one entry is sent).
    max_bytes_per_msg: int = 1 << 20
    #: AppendEntries in flight to one follower before the leader waits for acks:
    #: pipelining hides the round trip, the limit bounds memory when a follower is slow.
    max_inflight_msgs: int = 64
    #: Proposals a leader accepts while uncommitted entries pile up; beyond it, proposals
    #: are dropped so that a leader without a quorum does not grow its log without bound.
    max_uncommitted_entries: int = 10_000

    def validate(self) -> RaftConfig:
        """Return self if every setting is usable, else raise ConfigError saying which and why."""
        if self.heartbeat_tick < 1:
            raise ConfigError("heartbeat_tick must be >= 1")
        if self.election_tick <= self.heartbeat_tick:
            raise ConfigError(
                f"election_tick ({self.election_tick}) must be greater than heartbeat_tick "
                f"({self.heartbeat_tick}), or followers campaign between heartbeats"
            )
        if self.max_entries_per_msg < 1:
            raise ConfigError("max_entries_per_msg must be >= 1")
        if self.max_bytes_per_msg < 1:
            raise ConfigError("max_bytes_per_msg must be >= 1")
        if self.max_inflight_msgs < 1:
            raise ConfigError("max_inflight_msgs must be >= 1 or replication never starts")
        if self.max_uncommitted_entries < 1:
            raise ConfigError("max_uncommitted_entries must be >= 1")
        return self
