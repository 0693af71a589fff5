"""The sans-IO Raft state machine, in the shape of etcd-io/raft.

Inputs: ``tick()`` (one logical clock unit), ``step(msg)`` (a message from a peer or a
local request), ``propose``/``propose_conf_change``/``read_index``/``transfer_leadership``.
Output: a ``Ready`` batch. The shell must, in this order:
1. persist ``ready.snapshot``, ``ready.entries`` and ``ready.hard_state`` (fsync),
2. send ``ready.messages`` (they may promise what step 1 made durable),
3. apply ``ready.snapshot`` then ``ready.committed_entries`` to the state machine,
   and serve ``ready.read_states`` once applied reaches their index,
4. call ``advance(ready)``.

This module never touches sockets, files, clocks or global randomness: randomness comes
from the ``random.Random`` passed in, so a seed replays a whole cluster in the simulator.
Membership changes take effect when their entry is applied (as in etcd), one at a time.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, replace
from typing import Any

from .config import RaftConfig
from .log import RaftLog
from .messages import (
    ConfChange,
    ConfChangeOp,
    Entry,
    EntryType,
    HardState,
    Message,
    MsgType,
    ReadState,
    Snapshot,
)
from .progress import Progress, ProgressState

__all__ = ["ProposalDropped", "Raft", "Ready", "Role"]

#: Context of a campaign forced by leadership transfer: voters ignore their leader lease.
CAMPAIGN_TRANSFER = b"transfer"


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


class ProposalDropped(Exception):
    """The core refused a proposal (no leader known, transfer in progress, pending conf change...)."""


@dataclass
class Ready:
    """One batch of work for the shell; see the module docstring for the order."""

    hard_state: HardState | None
    entries: list[Entry]
    snapshot: Snapshot | None
    messages: list[Message]
    committed_entries: list[Entry]
    read_states: list[ReadState]
    #: The leader at the time of the batch: the shell re-proposes pending writes when it changes.
    leader: str | None = None


@dataclass
class _ReadRequest:
    index: int
    frm: str  # requesting node (self for local requests)
    context: bytes
    acks: set[str]


class Raft:
    """One Raft peer. Construct it from what durable storage recovered."""

    def __init__(
        self,
        node_id: str,
        config: RaftConfig,
        rng: random.Random,
        *,
        hard_state: HardState | None = None,
        snapshot: Snapshot | None = None,
        entries: list[Entry] | None = None,
    ) -> None:
        self.id = node_id
        self.cfg = config.validate()
        self.rng = rng
        hs = hard_state or HardState()
        self.term = hs.term
        self.vote = hs.vote
        self.log = RaftLog(snapshot, entries, hs.commit)
        self.voters: set[str] = set(snapshot.voters) if snapshot else set()
        self.learners: set[str] = set(snapshot.learners) if snapshot else set()
        self.role = Role.FOLLOWER
        self.lead: str | None = None
        self.prs: dict[str, Progress] = {}
        self.votes: dict[str, bool] = {}
        self.msgs: list[Message] = []
        self.read_states: list[ReadState] = []
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_timeout = self.cfg.election_tick
        self.lead_transferee: str | None = None
        self.pending_conf_index = 0
        self.uncommitted = 0
        self._bcast_pending = False
        self._reads: dict[bytes, _ReadRequest] = {}
        self._read_queue: list[bytes] = []
        self._pending_reads: list[Message] = []  # ReadIndex before the leader committed in its term
        self._prev_hs = HardState(self.term, self.vote, self.log.committed)
        self._reset_randomized_timeout()

    # ------------------------------------------------------------------ bootstrap

    def bootstrap(self, voters: list[str]) -> None:
        """Start a brand-new cluster: the same call on every initial voter yields identical logs.

        The membership goes into the log as conf-change entries of term 1, committed, so
        nodes that join later learn it by replication like any other entry.
        """
        if self.log.last_index() or self.term:
            raise ProposalDropped("cannot bootstrap: this node already has Raft state")
        ents = [
            Entry(1, i + 1, EntryType.CONF_CHANGE, ConfChange(ConfChangeOp.ADD_VOTER, v).encode())
            for i, v in enumerate(sorted(voters))
        ]
        self.term = 1
        self.log.append(ents)
        self.log.stable = 0
        self.log.commit_to(len(ents))

    # ------------------------------------------------------------------ queries

    @property
    def promotable(self) -> bool:
        return self.id in self.voters

    def quorum(self) -> int:
        return len(self.voters) // 2 + 1

    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    def status(self) -> dict[str, Any]:
        members: dict[str, dict[str, Any]] = {
            n: {"voter": n in self.voters, "match": None} for n in sorted(self.voters | self.learners)
        }
        if self.role is Role.LEADER:
            for n, pr in self.prs.items():
                if n in members:
                    members[n].update(pr.as_dict())
                    members[n]["voter"] = not pr.learner
        return {
            "id": self.id,
            "term": self.term,
            "vote": self.vote,
            "leader": self.lead,
            "role": self.role.value,
            "commit_index": self.log.committed,
            "applied_index": self.log.applied,
            "last_index": self.log.last_index(),
            "snapshot_index": self.log.snap_index,
            "members": members,
            "lead_transferee": self.lead_transferee,
        }

    # ------------------------------------------------------------------ state changes

    def _reset_randomized_timeout(self) -> None:
        self.randomized_timeout = self.cfg.election_tick + self.rng.randrange(self.cfg.election_tick)

    def _reset(self, term: int) -> None:
        if self.term != term:
            self.term = term
            self.vote = None
        self.lead = None
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self._reset_randomized_timeout()
        self.lead_transferee = None
        self.votes = {}
        self.prs = {}
        self._reads.clear()
        self._read_queue.clear()
        self._pending_reads.clear()
        self.pending_conf_index = 0
        self.uncommitted = 0
        self._bcast_pending = False

    def become_follower(self, term: int, lead: str | None) -> None:
        self._reset(term)
        self.role = Role.FOLLOWER
        self.lead = lead

    def _become_pre_candidate(self) -> None:
        # Pre-vote leaves term and vote alone: a failed pre-campaign changes nothing durable.
        self.votes = {}
        self.role = Role.PRE_CANDIDATE
        self.lead = None

    def _become_candidate(self) -> None:
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE

    def _become_leader(self) -> None:
        self._reset(self.term)
        self.role = Role.LEADER
        self.lead = self.id
        last = self.log.last_index()
        for n in sorted(self.voters | self.learners):  # sorted: a seed must replay in any process
            self.prs[n] = Progress(last + 1, self.cfg.max_inflight_msgs, learner=n in self.learners)
        me = self.prs.get(self.id)
        if me is not None:
            me.match = last
            me.become_replicate()
            me.recent_active = True
        # A no-op of the new term lets the leader commit older entries (Figure 8, 5.4.2).
        self._append([Entry(self.term, last + 1)])
        # Conf changes wait until that no-op is applied: a new leader must commit an entry
        # of its term before changing membership (fix for single-server changes, raft-dev 2015).
        self.pending_conf_index = last + 1

    # ------------------------------------------------------------------ tick

    def tick(self) -> None:
        """Advance the logical clock by one tick."""
        self.election_elapsed += 1
        if self.role is Role.LEADER:
            self.heartbeat_elapsed += 1
            if self.election_elapsed >= self.cfg.election_tick:
                self.election_elapsed = 0
                if self.cfg.check_quorum:
                    self.step(Message(MsgType.CHECK_QUORUM, self.id, self.id))
                if self.role is Role.LEADER and self.lead_transferee is not None:
                    self.lead_transferee = None  # transfer did not finish within an election timeout
            if self.role is Role.LEADER and self.heartbeat_elapsed >= self.cfg.heartbeat_tick:
                self.heartbeat_elapsed = 0
                self.step(Message(MsgType.BEAT, self.id, self.id))
        elif self.promotable and self.election_elapsed >= self.randomized_timeout:
            self.election_elapsed = 0
            self.step(Message(MsgType.HUP, self.id, self.id))

    # ------------------------------------------------------------------ local requests

    def propose(self, data: bytes) -> None:
        """Propose an application command; raises ProposalDropped if it cannot go anywhere now."""
        self._propose(Entry(0, 0, EntryType.NORMAL, data))

    def propose_conf_change(self, change: ConfChange) -> None:
        """Propose one membership change; only one may be in flight (leader refuses others)."""
        self._propose(Entry(0, 0, EntryType.CONF_CHANGE, change.encode()))

    def _propose(self, entry: Entry) -> None:
        if self.role is Role.LEADER:
            self._leader_propose([entry])
        elif self.lead is None:
            raise ProposalDropped("no leader known")
        else:
            self._send(Message(MsgType.PROP, self.lead, self.id, entries=[entry]))

    def read_index(self, context: bytes) -> None:
        """Ask for a read index; the answer comes back as a ReadState with this context."""
        self.step(Message(MsgType.READ_INDEX, self.id, self.id, context=context))

    def transfer_leadership(self, transferee: str) -> None:
        """Ask the leader (wherever it is) to hand leadership to ``transferee``."""
        self.step(Message(MsgType.TRANSFER_LEADER, self.id, transferee))

    # ------------------------------------------------------------------ step

    def step(self, m: Message) -> None:
        """Feed one message; its effects appear in the next Ready."""
        if m.term == 0:
            pass  # local message or PROP/READ_INDEX forwarded without a term
        elif m.term > self.term:
            if m.type in (MsgType.VOTE, MsgType.PRE_VOTE):
                force = m.context == CAMPAIGN_TRANSFER
                in_lease = (
                    self.cfg.check_quorum and self.lead is not None and self.election_elapsed < self.cfg.election_tick
                )
                if in_lease and not force:
                    return  # we heard from a leader recently: do not let a partitioned node depose it
            if m.type is MsgType.PRE_VOTE or (m.type is MsgType.PRE_VOTE_RESP and not m.reject):
                pass  # pre-vote never changes terms; a granted pre-vote bumps ours only on winning
            elif m.type in (MsgType.APP, MsgType.HEARTBEAT, MsgType.SNAP):
                self.become_follower(m.term, m.frm)
            else:
                self.become_follower(m.term, None)
        elif m.term < self.term:
            if m.type in (MsgType.HEARTBEAT, MsgType.APP):
                # Reply false with our term (AppendEntries rule 1): a stale leader, e.g. after a
                # partition healed, learns it and steps down.
                self._send(Message(MsgType.APP_RESP, m.frm, self.id, term=self.term))
            elif m.type is MsgType.PRE_VOTE:
                self._send(Message(MsgType.PRE_VOTE_RESP, m.frm, self.id, term=self.term, reject=True))
            return

        if m.type is MsgType.HUP:
            self._hup(transfer=m.context == CAMPAIGN_TRANSFER)
        elif m.type in (MsgType.VOTE, MsgType.PRE_VOTE):
            self._handle_vote_request(m)
        elif self.role is Role.LEADER:
            self._step_leader(m)
        elif self.role is Role.FOLLOWER:
            self._step_follower(m)
        else:
            self._step_candidate(m)

    def _handle_vote_request(self, m: Message) -> None:
        can_vote = (
            self.vote == m.frm
            or (self.vote is None and self.lead is None)
            or (m.type is MsgType.PRE_VOTE and m.term > self.term)
        )
        resp = MsgType.VOTE_RESP if m.type is MsgType.VOTE else MsgType.PRE_VOTE_RESP
        if can_vote and self.log.is_up_to_date(m.index, m.log_term):
            # A grant carries the candidate's term so that a pre-candidate can count it.
            self._send(Message(resp, m.frm, self.id, term=m.term))
            if m.type is MsgType.VOTE:
                self.election_elapsed = 0
                self.vote = m.frm
        else:
            self._send(Message(resp, m.frm, self.id, term=self.term, reject=True))

    def _hup(self, transfer: bool) -> None:
        if self.role is Role.LEADER or not self.promotable:
            return
        if any(e.type is EntryType.CONF_CHANGE for e in self.log.next_committed()):
            return  # apply pending membership changes first: they may remove us
        if self.cfg.pre_vote and not transfer:
            self._campaign(pre=True, transfer=False)
        else:
            self._campaign(pre=False, transfer=transfer)

    def _campaign(self, pre: bool, transfer: bool) -> None:
        if pre:
            self._become_pre_candidate()
            term, kind = self.term + 1, MsgType.PRE_VOTE
        else:
            self._become_candidate()
            term, kind = self.term, MsgType.VOTE
        if self._poll(self.id, True):  # a one-voter cluster wins at once
            if pre:
                self._campaign(pre=False, transfer=False)
            else:
                self._become_leader()
            return
        ctx = CAMPAIGN_TRANSFER if transfer else b""
        for v in sorted(self.voters):
            if v != self.id:
                self._send(
                    Message(
                        kind,
                        v,
                        self.id,
                        term=term,
                        index=self.log.last_index(),
                        log_term=self.log.last_term(),
                        context=ctx,
                    )
                )

    def _poll(self, voter: str, granted: bool) -> bool | None:
        """Record a vote; True if won, False if lost, None while undecided."""
        if voter in self.voters:
            self.votes.setdefault(voter, granted)
        yes = sum(1 for v in self.votes.values() if v)
        if yes >= self.quorum():
            return True
        if len(self.votes) - yes >= len(self.voters) - self.quorum() + 1:
            return False
        return None

    # ------------------------------------------------------------------ candidate

    def _step_candidate(self, m: Message) -> None:
        expected = MsgType.PRE_VOTE_RESP if self.role is Role.PRE_CANDIDATE else MsgType.VOTE_RESP
        if m.type is MsgType.PROP:
            return  # no leader to forward to; the shell times out
        if m.type in (MsgType.APP, MsgType.HEARTBEAT, MsgType.SNAP):
            self.become_follower(m.term, m.frm)  # an established leader of our term exists
            self._step_follower(m)
        elif m.type is expected:
            result = self._poll(m.frm, not m.reject)
            if result is True:
                if self.role is Role.PRE_CANDIDATE:
                    self._campaign(pre=False, transfer=False)
                else:
                    self._become_leader()
                    self._bcast_append()
            elif result is False:
                self.become_follower(self.term, None)

    # ------------------------------------------------------------------ follower

    def _step_follower(self, m: Message) -> None:
        t = m.type
        if t is MsgType.PROP:
            if self.lead is not None:
                self._send(replace(m, to=self.lead))  # a copy: the network may hold the original
        elif t is MsgType.APP:
            self.election_elapsed = 0
            self.lead = m.frm
            self._handle_append(m)
        elif t is MsgType.HEARTBEAT:
            self.election_elapsed = 0
            self.lead = m.frm
            self._handle_heartbeat(m)
        elif t is MsgType.SNAP:
            self.election_elapsed = 0
            self.lead = m.frm
            self._handle_snapshot(m)
        elif t in (MsgType.TRANSFER_LEADER, MsgType.READ_INDEX):
            if self.lead is not None:
                self._send(replace(m, to=self.lead))
        elif t is MsgType.TIMEOUT_NOW:
            self._hup(transfer=True)
        elif t is MsgType.READ_INDEX_RESP:
            self.read_states.append(ReadState(m.index, m.context))

    def _handle_heartbeat(self, m: Message) -> None:
        """Commit what the leader says, unless our log lost what the leader believes we have.

        The heartbeat names the leader's match index for us and its term. Entries up to our
        commit index are the leader's too (Leader Completeness); beyond that, a missing or
        different entry at ``m.index`` means we lost entries we acknowledged (restarted
        with an emptied or truncated data directory). Then we commit nothing (our tail may
        be from another term) and reject with our last index as the hint, so the leader
        forgets its match index and repairs our log (``Progress.lost_entries``).
        """
        if m.index <= self.log.committed or self.log.match_term(m.index, m.log_term):
            self.log.commit_to(min(m.commit, self.log.last_index()))
            self._send(Message(MsgType.HEARTBEAT_RESP, m.frm, self.id, term=self.term, context=m.context))
        else:
            self._send(
                Message(
                    MsgType.HEARTBEAT_RESP,
                    m.frm,
                    self.id,
                    term=self.term,
                    index=m.index,
                    context=m.context,
                    reject=True,
                    reject_hint=self.log.last_index(),
                )
            )

    def _handle_append(self, m: Message) -> None:
        if m.index < self.log.committed:
            self._send(Message(MsgType.APP_RESP, m.frm, self.id, term=self.term, index=self.log.committed))
            return
        last_new = self.log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if last_new is not None:
            self._send(Message(MsgType.APP_RESP, m.frm, self.id, term=self.term, index=last_new))
        else:
            self._send(
                Message(
                    MsgType.APP_RESP,
                    m.frm,
                    self.id,
                    term=self.term,
                    index=m.index,
                    reject=True,
                    reject_hint=min(m.index, self.log.last_index()),
                )
            )

    def _handle_snapshot(self, m: Message) -> None:
        snap = m.snapshot
        if snap is None:
            return
        if snap.index <= self.log.committed:
            self._send(Message(MsgType.APP_RESP, m.frm, self.id, term=self.term, index=self.log.committed))
            return
        if self.log.match_term(snap.index, snap.term):
            self.log.commit_to(snap.index)  # we already have this prefix: fast-forward
        else:
            self.log.restore(snap)
            self.voters, self.learners = set(snap.voters), set(snap.learners)
        # Acknowledge only what is known to match the leader: entries after the snapshot may not.
        self._send(Message(MsgType.APP_RESP, m.frm, self.id, term=self.term, index=self.log.committed))

    # ------------------------------------------------------------------ leader

    def _append(self, entries: list[Entry]) -> None:
        self.log.append(entries)
        self.uncommitted += len(entries)
        me = self.prs.get(self.id)
        if me is not None:
            me.maybe_update(self.log.last_index())
        self._maybe_commit()

    def _leader_propose(self, entries: list[Entry]) -> None:
        if self.lead_transferee is not None:
            raise ProposalDropped(f"leadership is being transferred to {self.lead_transferee}")
        if self.id not in self.prs:
            raise ProposalDropped("this leader was removed from the cluster")
        if self.uncommitted + len(entries) > self.cfg.max_uncommitted_entries:
            raise ProposalDropped("too many uncommitted entries (no quorum?)")
        last = self.log.last_index()
        out: list[Entry] = []
        for i, e in enumerate(entries):
            if e.type is EntryType.CONF_CHANGE:
                self._check_conf_change(e)
                self.pending_conf_index = last + i + 1
            out.append(Entry(self.term, last + i + 1, e.type, e.data))
        self._append(out)
        self._bcast_pending = True  # one AppendEntries per follower per Ready, whatever the proposals

    def _check_conf_change(self, e: Entry) -> None:
        if self.pending_conf_index > self.log.applied:
            raise ProposalDropped("another membership change is still pending; retry when it is applied")
        cc = ConfChange.decode(e.data)
        if cc.op is ConfChangeOp.REMOVE and self.voters == {cc.node_id}:
            raise ProposalDropped("refusing to remove the last voter")
        if cc.op is ConfChangeOp.ADD_LEARNER and cc.node_id in self.voters:
            raise ProposalDropped(f"{cc.node_id} is already a voter")

    def _step_leader(self, m: Message) -> None:
        t = m.type
        if t is MsgType.BEAT:
            self._bcast_heartbeat()
            return
        if t is MsgType.CHECK_QUORUM:
            me_active = {self.id} if self.id in self.voters else set()
            active = me_active | {n for n, pr in self.prs.items() if pr.recent_active and n in self.voters}
            for n, pr in self.prs.items():
                pr.recent_active = n == self.id
            if len(active) < self.quorum():
                self.become_follower(self.term, None)
            return
        if t is MsgType.PROP:
            try:
                self._leader_propose([Entry(0, 0, e.type, e.data) for e in m.entries])
            except ProposalDropped:
                if m.frm == self.id:
                    raise
            return
        if t is MsgType.READ_INDEX:
            self._leader_read_index(m)
            return
        if t is MsgType.TRANSFER_LEADER:
            self._leader_transfer(m.frm)
            return
        peer = self.prs.get(m.frm)
        if peer is None:
            return  # a node that is not (or no longer) a member
        pr = peer
        if t is MsgType.APP_RESP:
            pr.recent_active = True
            self._handle_append_response(m, pr)
        elif t is MsgType.HEARTBEAT_RESP:
            pr.recent_active = True
            if m.reject and 0 < m.index <= pr.match:
                pr.lost_entries(min(m.reject_hint, self.log.last_index()))  # it lost what we counted: repair
            elif pr.state is ProgressState.SNAPSHOT:
                pr.become_probe()  # the snapshot may have been lost: probe, and resend if needed
            elif pr.state is ProgressState.REPLICATE and len(pr.inflight) >= pr.max_inflight:
                pr.inflight.popleft()  # appends may have been lost: let one through to find out
            pr.probe_sent = False
            if pr.match < self.log.last_index():
                self._send_append(m.frm)
            if m.context:
                self._read_ack(m.frm, m.context)

    def _handle_append_response(self, m: Message, pr: Progress) -> None:
        if m.reject:
            if pr.maybe_decrease(m.index, m.reject_hint):
                if pr.state is ProgressState.REPLICATE:
                    pr.become_probe()
                self._send_append(m.frm)
            return
        was_paused = pr.is_paused()
        if pr.maybe_update(m.index):
            if pr.state is ProgressState.PROBE:
                pr.become_replicate()
            elif pr.state is ProgressState.SNAPSHOT and pr.match >= pr.pending_snapshot:
                pr.become_probe()
                pr.become_replicate()
            if self._maybe_commit():
                self._bcast_pending = True  # tell everyone the new commit index, once per Ready
            if not self._bcast_pending:  # else the broadcast in ``ready`` serves this follower too
                if was_paused:
                    self._send_append(m.frm)
                while pr.match < self.log.last_index() and self._send_append(m.frm, allow_empty=False):
                    pass
            if m.frm == self.lead_transferee and pr.match == self.log.last_index():
                self._send(Message(MsgType.TIMEOUT_NOW, m.frm, self.id, term=self.term))
        elif pr.state is ProgressState.PROBE and pr.match < self.log.last_index():
            # e.g. an ack of an old, already known index after a restart; keep probing.
            pr.probe_sent = False
            self._send_append(m.frm)

    def _maybe_commit(self) -> bool:
        """Commit the highest index a quorum of voters has, if it is of the current term (5.4.2)."""
        if self.role is not Role.LEADER or not self.voters:
            return False
        matches = sorted((self.prs[v].match if v in self.prs else 0 for v in self.voters), reverse=True)
        index = matches[self.quorum() - 1]
        if index > self.log.committed and self.log.term(index) == self.term:
            self.uncommitted = max(0, self.uncommitted - (index - self.log.committed))
            self.log.commit_to(index)
            self._on_commit_in_term()
            return True
        return False

    def _on_commit_in_term(self) -> None:
        pending, self._pending_reads = self._pending_reads, []
        for m in pending:
            self._leader_read_index(m)

    def _bcast_append(self) -> None:
        """Send every follower what it lacks: as many batches as its pipeline allows."""
        for n in self.prs:
            if n != self.id and self._send_append(n):
                while self._send_append(n, allow_empty=False):
                    pass

    def _send_append(self, to: str, allow_empty: bool = True) -> bool:
        """Send the next AppendEntries (or a snapshot) to ``to``; False if nothing was sent."""
        pr = self.prs[to]
        if pr.is_paused():
            return False
        prev = pr.next - 1
        prev_term = self.log.term(prev)
        ents = self.log.entries_from(pr.next, self.cfg.max_entries_per_msg, self.cfg.max_bytes_per_msg)
        if prev_term is None or ents is None:
            snap = self.log.snapshot
            if snap is None:
                return False
            self._send(Message(MsgType.SNAP, to, self.id, term=self.term, snapshot=snap))
            pr.become_snapshot(snap.index)
            return True
        if not ents and not allow_empty:
            return False
        self._send(
            Message(
                MsgType.APP,
                to,
                self.id,
                term=self.term,
                index=prev,
                log_term=prev_term,
                entries=ents,
                commit=self.log.committed,
            )
        )
        pr.sent(prev + len(ents), len(ents))
        return True

    def _bcast_heartbeat(self, context: bytes | None = None) -> None:
        ctx = context if context is not None else (self._read_queue[-1] if self._read_queue else b"")
        for n, pr in self.prs.items():
            if n != self.id:
                # Never tell a follower to commit beyond what it is known to have; name that
                # entry, so a follower that lost it can say so (``_handle_heartbeat``).
                # A match index compacted away here cannot be named: claim and commit nothing
                # (that follower needs the snapshot anyway, and commits with it).
                match_term = self.log.term(pr.match)
                known = pr.match if match_term is not None else 0
                commit = min(known, self.log.committed)
                self._send(
                    Message(
                        MsgType.HEARTBEAT,
                        n,
                        self.id,
                        term=self.term,
                        index=known,
                        log_term=match_term or 0,
                        commit=commit,
                        context=ctx,
                    )
                )

    def _leader_read_index(self, m: Message) -> None:
        if self.log.term(self.log.committed) != self.term:
            self._pending_reads.append(m)  # we do not know the commit index until our no-op commits
            return
        index = self.log.committed
        if len(self.voters) == 1 and self.id in self.voters:
            self._release_read(_ReadRequest(index, m.frm, m.context, set()))
            return
        if m.context in self._reads:
            return  # a duplicate of a request already waiting
        self._reads[m.context] = _ReadRequest(index, m.frm, m.context, {self.id})
        self._read_queue.append(m.context)
        self._bcast_heartbeat(m.context)

    def _read_ack(self, frm: str, ctx: bytes) -> None:
        req = self._reads.get(ctx)
        if req is None:
            return
        if frm in self.voters:
            req.acks.add(frm)
        if len(req.acks & self.voters) < self.quorum():
            return
        # A quorum confirmed leadership after every request queued before this one, too.
        upto = self._read_queue.index(ctx) + 1
        done, self._read_queue = self._read_queue[:upto], self._read_queue[upto:]
        for c in done:
            self._release_read(self._reads.pop(c))

    def _release_read(self, req: _ReadRequest) -> None:
        if req.frm == self.id:
            self.read_states.append(ReadState(req.index, req.context))
        else:
            self._send(
                Message(MsgType.READ_INDEX_RESP, req.frm, self.id, term=self.term, index=req.index, context=req.context)
            )

    def _leader_transfer(self, transferee: str) -> None:
        pr = self.prs.get(transferee)
        if pr is None or pr.learner or transferee == self.id:
            return
        if self.lead_transferee == transferee:
            return
        self.lead_transferee = transferee
        self.election_elapsed = 0  # the transfer must finish within one election timeout
        if pr.match == self.log.last_index():
            self._send(Message(MsgType.TIMEOUT_NOW, transferee, self.id, term=self.term))
        else:
            self._send_append(transferee)

    # ------------------------------------------------------------------ membership

    def _apply_conf_change(self, cc: ConfChange) -> None:
        n = cc.node_id
        if cc.op is ConfChangeOp.ADD_LEARNER:
            if n in self.voters:
                return
            self.learners.add(n)
        elif cc.op is ConfChangeOp.ADD_VOTER:
            self.learners.discard(n)
            self.voters.add(n)
        else:
            self.voters.discard(n)
            self.learners.discard(n)
        if self.role is not Role.LEADER:
            return
        if cc.op is ConfChangeOp.REMOVE:
            self.prs.pop(n, None)
            if n == self.lead_transferee:
                self.lead_transferee = None
            if n == self.id:
                self.become_follower(self.term, None)  # a removed leader steps down
                return
        else:
            pr = self.prs.get(n)
            if pr is None:
                pr = self.prs[n] = Progress(self.log.last_index() + 1, self.cfg.max_inflight_msgs)
                pr.recent_active = True  # give a new member one check-quorum round to respond
            pr.learner = n in self.learners
        if self._maybe_commit():
            self._bcast_append()

    # ------------------------------------------------------------------ ready / advance

    def _send(self, m: Message) -> None:
        self.msgs.append(m)

    def has_ready(self) -> bool:
        return bool(
            self._bcast_pending
            or self.msgs
            or self.read_states
            or self.log.pending_snapshot is not None
            or self.log.stable < self.log.last_index()
            or self.hard_state() != self._prev_hs
            or (self.log.committed > self.log.applied)
        )

    def ready(self) -> Ready:
        """Take the pending batch. Call ``advance`` with it after handling it."""
        if self._bcast_pending:
            self._bcast_pending = False
            if self.role is Role.LEADER:
                self._bcast_append()
        hs = self.hard_state()
        rd = Ready(
            hard_state=hs if hs != self._prev_hs else None,
            entries=self.log.unstable(),
            snapshot=self.log.pending_snapshot,
            messages=self.msgs,
            committed_entries=self.log.next_committed(),
            read_states=self.read_states,
            leader=self.lead,
        )
        self.msgs = []
        self.read_states = []
        return rd

    def advance(self, rd: Ready) -> None:
        """The shell persisted, sent and applied ``rd``."""
        if rd.hard_state is not None:
            self._prev_hs = rd.hard_state
        if rd.snapshot is not None:
            if self.log.pending_snapshot is rd.snapshot:
                self.log.pending_snapshot = None
            self.log.applied = max(self.log.applied, rd.snapshot.index)
            self.log.stable = max(self.log.stable, rd.snapshot.index)
        if rd.entries:
            last = rd.entries[-1]
            if self.log.term(last.index) == last.term:
                self.log.stable = max(self.log.stable, last.index)
        for e in rd.committed_entries:
            if e.index <= self.log.applied:
                continue
            self.log.applied = e.index
            if e.type is EntryType.CONF_CHANGE:
                self._apply_conf_change(ConfChange.decode(e.data))

    def compact(self, data: bytes) -> Snapshot:
        """Take a snapshot at the applied index with the state machine's ``data``; drop older entries.

        The shell persists the returned snapshot before deleting any log it covers.
        """
        index = self.log.applied
        term = self.log.term(index)
        if term is None:
            raise ValueError(f"cannot snapshot at {index}: entry not in the log")
        snap = Snapshot(index, term, tuple(sorted(self.voters)), tuple(sorted(self.learners)), data)
        self.log.compact(snap)
        return snap
