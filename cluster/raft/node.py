"""``RaftNode``: the asyncio shell that runs the Raft core for the config store.

It owns the timer (one ``tick`` per ``NodeOptions.tick_interval``), durable storage
(``FileStorage``, writes in a single worker thread so fsync never blocks the event loop),
a ``Transport``, and the ``ConfigStateMachine``. One loop task handles every Ready in
the order the core demands: persist, send, apply, advance. Proposals and messages that
arrive while a Ready is being persisted simply join the next one, which is how writes
batch under load.

Public API (what the broker and the admin API use)::

    node = RaftNode("n1", data_dir, transport)
    await node.start(bootstrap=True)          # first node of a new cluster; later starts: start()
    await node.put("acl/ops", {...})          # from any node; forwarded to the leader
    await node.delete("app/x")
    await node.get("acl/ops")                 # linearizable (ReadIndex); linearizable=False: local
    node.list("acl/")                         # local snapshot of a prefix
    node.watch("acl/", callback) / node.changes("acl/")   # live changes
    await node.add_member("n4")               # leader only: learner, catch up, promote
    await node.remove_member("n2")            # leader only
    await node.transfer_leadership("n3")
    node.status()                             # for GET /api/v1/raft
    await node.stop()

Errors: ``ValidationError`` (bad key or value, nothing applied), ``NotLeader`` (with the
leader's id as a hint), ``Timeout`` (for writes: outcome unknown), ``MembershipError``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import itertools
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broker.metering import Histogram

from .config import ConfigError, RaftConfig
from .core import ProposalDropped, Raft, Ready, Role
from .errors import MembershipError, NotLeader, RaftError, StorageFull, Timeout
from .messages import ConfChange, ConfChangeOp, EntryType, Message
from .statemachine import ApplyResult, Change, Command, ConfigStateMachine, WatchStream
from .storage import FileStorage, Storage
from .transport import Transport
from .validation import ValidationError, Validators

__all__ = ["NodeOptions", "RaftNode"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeOptions:
    #: Seconds per logical tick. With RaftConfig's defaults (election 10 ticks, heartbeat
    #: 2) a dead leader is replaced within 0.3-0.6 s plus one election round on a LAN.
    tick_interval: float = 0.03
    #: Default deadline of put/delete/get/membership calls, in seconds.
    request_timeout: float = 5.0
    #: Applied entries between snapshots; a snapshot lets the log be truncated.
    snapshot_every: int = 2000
    #: A linearizable read re-asks for a read index this often (s) while no answer comes
    #: (the request may have been lost with a leader change); reads are idempotent.
    read_retry: float = 0.5
    #: A write not applied after this long (s) is proposed again (besides on every leader
    #: change); the state machine drops repeats, so retries are safe. Well above a commit
    #: round trip, or a loaded leader gets duplicates.
    write_retry: float = 2.0
    #: Turn fsync off only for tests and benchmarks that say so.
    fsync: bool = True

    def validate(self) -> NodeOptions:
        """Return self if usable, else raise ConfigError naming the setting."""
        for name in ("tick_interval", "request_timeout", "read_retry", "write_retry"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0 seconds")
        if self.snapshot_every < 1:
            raise ConfigError("snapshot_every must be >= 1 applied entries")
        return self


class RaftNode:
    """One member of the Raft group that holds the cluster configuration."""

    def __init__(
        self,
        node_id: str,
        data_dir: str | Path | None,
        transport: Transport,
        *,
        storage: Storage | None = None,
        raft_config: RaftConfig | None = None,
        options: NodeOptions | None = None,
        validators: Validators | None = None,
        seed: int | None = None,
    ) -> None:
        if storage is None:
            if data_dir is None:
                raise ValueError("give a data_dir or a storage")
            storage = FileStorage(data_dir, fsync=(options or NodeOptions()).fsync)
        self.node_id = node_id
        self.transport = transport
        self.storage = storage
        self.raft_config = (raft_config or RaftConfig()).validate()
        self.options = (options or NodeOptions()).validate()
        self.state_machine = ConfigStateMachine(validators)
        self._rng = random.Random(seed if seed is not None else int.from_bytes(os.urandom(8), "big"))
        self._core: Raft | None = None
        self._io = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"raft-io-{node_id}")
        self._wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._running = False
        # Proposals carry (origin, rid). The origin names this run of the node, so that
        # entries an earlier run proposed (re-applied after a restart) never resolve a
        # request of this run, and its request ids form one deduplication session.
        self._origin = f"{node_id}/{os.urandom(6).hex()}"
        self._rids = itertools.count(1)
        self._writes: dict[int, asyncio.Future[ApplyResult]] = {}
        self._reads: dict[bytes, asyncio.Future[int]] = {}
        self._observers: list[asyncio.Future[None]] = []
        self._last_leader: str | None = None
        self._leader_change: asyncio.Future[None] | None = None
        self._failure: RaftError | None = None
        #: for metrics: proposals made here, leader changes seen, storage save (fsync) time,
        #: size of the last snapshot taken or restored (bytes)
        self.proposals = 0
        self.leader_changes = 0
        self.fsync_seconds = Histogram()
        self.snapshot_bytes = 0

    # ------------------------------------------------------------------ lifecycle

    async def start(self, bootstrap: bool = False) -> None:
        """Recover from storage and start ticking.

        ``bootstrap=True`` makes a node with empty storage the single voter of a new
        cluster; it is ignored when the node already has state (a restart).
        A node started without it and without state waits to be added by a leader.
        """
        loop = asyncio.get_running_loop()
        rec = await loop.run_in_executor(self._io, self.storage.load)
        core = Raft(
            self.node_id,
            self.raft_config,
            self._rng,
            hard_state=rec.hard_state,
            snapshot=rec.snapshot,
            entries=rec.entries,
        )
        if rec.snapshot is not None:
            self.state_machine.restore(rec.snapshot.data, rec.snapshot.index)
            self.snapshot_bytes = len(rec.snapshot.data)
        if bootstrap and not rec.hard_state.term and not rec.entries and rec.snapshot is None:
            core.bootstrap([self.node_id])
        self._core = core
        self._running = True
        await self.transport.start(self._on_message)
        self._tasks = [
            loop.create_task(self._ticker(), name=f"raft-tick-{self.node_id}"),
            loop.create_task(self._loop(), name=f"raft-loop-{self.node_id}"),
        ]
        self._wakeup.set()
        # Re-apply what the log says was committed before returning, so that reads right
        # after a restart see at least what this node had applied before it stopped.
        recovered = core.log.committed
        await self._wait_until(lambda: self.core.log.applied >= recovered, self._deadline(None), "replaying the log")

    def bootstrap(self, voters: list[str]) -> bool:
        """Make ``voters`` the first membership of a brand-new cluster, if this node has no Raft
        state yet; every initial voter making the same call yields identical logs. Returns False
        when the node already has state (it learned the membership from a leader instead)."""
        try:
            self.core.bootstrap(voters)
        except ProposalDropped:
            return False
        self._wakeup.set()
        return True

    @property
    def has_state(self) -> bool:
        """Whether this node belongs to a Raft group already (bootstrapped, or heard from a leader)."""
        core = self.core
        return bool(core.term or core.log.last_index() or core.voters or core.learners)

    async def stop(self) -> None:
        """Stop ticking and sending; pending calls fail with RaftError."""
        if not self._running:
            return
        self._running = False
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.transport.close()
        self._fail_pending(RaftError(f"raft node {self.node_id} stopped"))
        await asyncio.get_running_loop().run_in_executor(self._io, self.storage.close)
        self._io.shutdown(wait=True)

    @property
    def background_tasks(self) -> dict[str, asyncio.Task[None]]:
        """The tick and Ready loops, which must run until :meth:`stop` (for supervision)."""
        return dict(zip(("raft tick", "raft loop"), self._tasks))

    @property
    def failure(self) -> RaftError | None:
        """Why the Raft loop stopped (``StorageFull`` for a full disk), or None while it runs."""
        return self._failure

    @property
    def core(self) -> Raft:
        if self._core is None:
            raise RaftError("raft node not started")
        return self._core

    @property
    def leader_id(self) -> str | None:
        return self.core.lead

    @property
    def is_leader(self) -> bool:
        return self.core.role is Role.LEADER

    def status(self) -> dict[str, Any]:
        """Term, leader, role, commit and applied index, members with match index and voter flag."""
        status = self.core.status()
        status["keys"] = len(self.state_machine)
        return status

    # ------------------------------------------------------------------ config API

    async def put(self, key: str, value: Any, *, timeout: float | None = None) -> int:
        """Set ``key`` to ``value`` through the log; returns the log index it was applied at."""
        result = await self._write(Command("put", key, value), timeout)
        return result.index

    async def delete(self, key: str, *, timeout: float | None = None) -> bool:
        """Remove ``key``; returns whether it existed."""
        result = await self._write(Command("delete", key), timeout)
        return result.existed

    async def get(self, key: str, *, linearizable: bool = True, timeout: float | None = None) -> Any:
        """The value of ``key`` or None. Linearizable reads confirm leadership with a quorum first."""
        self.state_machine.validators.check_key(key)
        if linearizable:
            await self.read_barrier(timeout=timeout)
        return self.state_machine.get(key)

    def list(self, prefix: str = "") -> dict[str, Any]:
        """Every key under ``prefix`` as this node has applied it (a possibly stale view)."""
        return self.state_machine.list(prefix)

    def watch(self, prefix: str, callback: Callable[[Change], None]) -> Callable[[], None]:
        """Call ``callback`` on every applied change under ``prefix``; returns an unsubscribe function."""
        return self.state_machine.watch(prefix, callback)

    def changes(self, prefix: str = "") -> WatchStream:
        """Async iterator of applied changes under ``prefix``."""
        return self.state_machine.stream(prefix)

    async def read_barrier(self, *, timeout: float | None = None) -> int:
        """Wait until this node has applied everything committed when the call began (ReadIndex)."""
        deadline = self._deadline(timeout)
        loop = asyncio.get_running_loop()
        while True:
            await self._wait_for_leader(deadline)
            ctx = f"{self._origin}:{next(self._rids)}".encode()  # unique across restarts, too
            fut: asyncio.Future[int] = loop.create_future()
            self._reads[ctx] = fut
            self.core.read_index(ctx)
            self._wakeup.set()
            try:
                index = await asyncio.wait_for(fut, min(self.options.read_retry, self._remaining(deadline)))
                break
            except TimeoutError:
                if self._remaining(deadline) <= 0:
                    raise Timeout("no read index from the leader in time") from None
            finally:
                self._reads.pop(ctx, None)
        await self._wait_until(lambda: self.core.log.applied >= index, deadline, "applying up to the read index")
        return index

    # ------------------------------------------------------------------ membership

    async def add_member(self, node_id: str, *, timeout: float | None = None) -> None:
        """Add ``node_id``: as a learner first, promoted to voter once it caught up (leader only)."""
        deadline = self._deadline(timeout)
        core = self.core
        if node_id in core.voters:
            return
        if node_id not in core.learners:
            await self._conf_change(ConfChange(ConfChangeOp.ADD_LEARNER, node_id), deadline)
        target = self.core.log.committed

        def caught_up() -> bool:
            pr = self.core.prs.get(node_id)
            if self.core.role is not Role.LEADER:
                raise NotLeader(self.core.lead, "adding a member")
            return pr is not None and pr.match >= target

        await self._wait_until(caught_up, deadline, f"{node_id} catching up")
        await self._conf_change(ConfChange(ConfChangeOp.ADD_VOTER, node_id), deadline)

    async def remove_member(self, node_id: str, *, timeout: float | None = None) -> None:
        """Remove ``node_id`` (a dead node, or one leaving); leader only."""
        if node_id not in self.core.voters | self.core.learners:
            return
        await self._conf_change(ConfChange(ConfChangeOp.REMOVE, node_id), self._deadline(timeout))

    async def transfer_leadership(self, to: str | None = None, *, timeout: float | None = None) -> str:
        """Hand leadership to ``to`` (default: the most up-to-date other voter); returns the new leader."""
        deadline = self._deadline(timeout)
        core = self.core
        if core.role is not Role.LEADER:
            raise NotLeader(core.lead, "transferring leadership")
        if to is None:
            others = [(pr.match, n) for n, pr in core.prs.items() if n != self.node_id and not pr.learner]
            if not others:
                raise MembershipError("no other voter to transfer leadership to")
            to = max(others)[1]
        if to not in core.voters:
            raise MembershipError(f"{to} is not a voter")
        # The transferee may ignore the first TIMEOUT_NOW (e.g. it has not applied its own
        # promotion yet) and the core abandons a transfer after an election timeout: retry.
        attempt = self.raft_config.election_tick * self.options.tick_interval * 2
        while True:
            if self.core.role is Role.LEADER and self.core.lead_transferee is None:
                self.core.transfer_leadership(to)
                self._wakeup.set()
            try:
                await self._wait_until(
                    lambda: self.core.lead == to,
                    min(deadline, time.monotonic() + attempt),
                    f"leadership moving to {to}",
                )
                return to
            except Timeout:
                if self._remaining(deadline) <= 0:
                    raise

    async def _conf_change(self, change: ConfChange, deadline: float) -> None:
        def applied() -> bool:
            core = self.core
            if change.op is ConfChangeOp.ADD_LEARNER:
                return change.node_id in core.learners or change.node_id in core.voters
            if change.op is ConfChangeOp.ADD_VOTER:
                return change.node_id in core.voters
            return change.node_id not in core.voters | core.learners

        while True:
            core = self.core
            if core.role is not Role.LEADER:
                raise NotLeader(core.lead, "changing membership")
            try:
                core.propose_conf_change(change)
                break
            except ProposalDropped as exc:
                if "pending" not in str(exc):
                    raise MembershipError(str(exc)) from None
                await self._wait_until(
                    lambda: self.core.pending_conf_index <= self.core.log.applied,
                    deadline,
                    "the previous membership change",
                )
        self._wakeup.set()
        await self._wait_until(applied, deadline, f"{change.op.name.lower()} {change.node_id}")

    # ------------------------------------------------------------------ waiting helpers

    def _deadline(self, timeout: float | None) -> float:
        return time.monotonic() + (self.options.request_timeout if timeout is None else timeout)

    @staticmethod
    def _remaining(deadline: float) -> float:
        return max(0.0, deadline - time.monotonic())

    async def _wait_until(self, predicate: Callable[[], bool], deadline: float, what: str) -> None:
        """Re-check ``predicate`` after every tick and Ready until it holds or the deadline passes."""
        loop = asyncio.get_running_loop()
        while not predicate():
            if self.failure is not None:
                raise self.failure
            remaining = self._remaining(deadline)
            if remaining <= 0 or not self._running:
                raise Timeout(f"timed out waiting for {what}")
            fut: asyncio.Future[None] = loop.create_future()
            self._observers.append(fut)
            try:
                await asyncio.wait_for(fut, remaining)
            except TimeoutError:
                pass

    async def _wait_for_leader(self, deadline: float) -> None:
        if self._failure is not None:  # a dead loop would let every request wait out its deadline
            raise self._failure
        try:
            await self._wait_until(lambda: self.core.lead is not None, deadline, "a leader")
        except Timeout:
            raise NotLeader(None, "this request") from None

    async def _write(self, command: Command, timeout: float | None) -> ApplyResult:
        """Propose ``command`` and wait until this node applies it.

        A forwarded proposal dies silently with the leader it went to, so the same
        (origin, rid) is proposed again whenever the leader changes, and every
        ``write_retry`` seconds; the state machine applies repeats as no-ops.
        """
        self.state_machine.validate(command)  # refuse bad values before they reach the log
        deadline = self._deadline(timeout)
        rid = next(self._rids)
        data = Command(command.op, command.key, command.value, self._origin, rid).encode()
        fut: asyncio.Future[ApplyResult] = asyncio.get_running_loop().create_future()
        self._writes[rid] = fut
        dropped = ""
        try:
            while not fut.done():
                await self._wait_for_leader(deadline)
                leader = self.core.lead
                try:
                    self.proposals += 1
                    self.core.propose(data)
                    self._wakeup.set()
                except ProposalDropped as exc:
                    dropped = f" (last refusal: {exc})"
                if self.core.lead == leader:
                    wait = min(self._remaining(deadline), self.options.write_retry)
                    await asyncio.wait((fut, self._leader_changed()), timeout=wait, return_when=asyncio.FIRST_COMPLETED)
                if not fut.done() and self._remaining(deadline) <= 0:
                    raise Timeout(f"write of {command.key!r} not applied in time; it may still commit{dropped}")
        finally:
            self._writes.pop(rid, None)
        result = fut.result()
        if result.error is not None:
            raise ValidationError(result.error)
        return result

    # ------------------------------------------------------------------ the loop

    def _on_message(self, msg: Message) -> None:
        if not self._running or msg.to != self.node_id:
            return
        try:
            self.core.step(msg)
        except Exception:  # an invariant broke: keep serving the others, leave a trace
            log.exception("raft %s: stepping %s from %s failed", self.node_id, msg.type.name, msg.frm)
        self._wakeup.set()

    async def _ticker(self) -> None:
        interval = self.options.tick_interval
        next_at = time.monotonic()
        while True:
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            self.core.tick()
            self._wakeup.set()

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                core = self.core
                while core.has_ready():
                    rd = core.ready()
                    if rd.entries or rd.hard_state is not None or rd.snapshot is not None:
                        await loop.run_in_executor(self._io, self._timed_save, rd)
                    for m in rd.messages:
                        self.transport.send(m)
                    self._apply(rd)
                    core.advance(rd)
                    await self._maybe_snapshot()
                self._notify_observers()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a storage failure must not leave callers hanging
            if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                self._failure = StorageFull(f"storage full: cannot write the Raft log in {getattr(self.storage, 'dir', 'its storage')}: {exc.strerror}")
                log.error("raft loop of %s stopped: %s", self.node_id, self._failure)
            else:
                log.exception("raft loop of %s failed; the node stops serving", self.node_id)
                self._failure = RaftError(f"raft loop failed: {exc!r}")
            self._fail_pending(self._failure)
            raise self._failure from exc

    def _timed_save(self, rd: Ready) -> None:
        """Save on the I/O thread, timing the write and its fsync for the metrics."""
        started = time.perf_counter()
        self.storage.save(rd.hard_state, rd.entries, rd.snapshot)
        self.fsync_seconds.observe(time.perf_counter() - started)

    def _apply(self, rd: Ready) -> None:
        if rd.snapshot is not None:
            self.state_machine.restore(rd.snapshot.data, rd.snapshot.index)
            self.snapshot_bytes = len(rd.snapshot.data)
        for entry in rd.committed_entries:
            if entry.type is not EntryType.NORMAL or not entry.data:
                continue
            cmd, result = self.state_machine.apply(entry.index, entry.data)
            if cmd is not None and cmd.origin == self._origin:
                fut = self._writes.get(cmd.rid)
                if fut is not None and not fut.done():
                    fut.set_result(result)
        for rs in rd.read_states:
            waiting = self._reads.get(rs.context)
            if waiting is not None and not waiting.done():
                waiting.set_result(rs.index)
        if rd.leader != self._last_leader:
            log.info("raft %s: leader is now %s (term %d)", self.node_id, rd.leader, self.core.term)
            self._last_leader = rd.leader
            self.leader_changes += 1
            if self._leader_change is not None and not self._leader_change.done():
                self._leader_change.set_result(None)
            self._leader_change = None

    def _leader_changed(self) -> asyncio.Future[None]:
        """A future that completes when the next Ready names another leader."""
        if self._leader_change is None:
            self._leader_change = asyncio.get_running_loop().create_future()
        return self._leader_change

    async def _maybe_snapshot(self) -> None:
        core = self.core
        if core.log.applied - core.log.snap_index < self.options.snapshot_every:
            return
        snap = core.compact(self.state_machine.snapshot())
        self.snapshot_bytes = len(snap.data)
        retained = list(core.log.entries)
        await asyncio.get_running_loop().run_in_executor(self._io, self.storage.compact, snap, retained)

    def _notify_observers(self) -> None:
        observers, self._observers = self._observers, []
        for fut in observers:
            if not fut.done():
                fut.set_result(None)

    def _fail_pending(self, exc: RaftError) -> None:
        pending: list[asyncio.Future[Any]] = [*self._writes.values(), *self._reads.values()]
        for fut in pending:
            if not fut.done():
                fut.set_exception(exc)
        self._notify_observers()
