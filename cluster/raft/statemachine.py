"""The replicated configuration store: the state machine Raft's committed entries drive.

Commands are msgpack maps ``{"op": "put"|"delete", "key", "value", "origin", "rid"}``;
``origin``/``rid`` let the node that proposed a command find its answer when the entry is
applied. Applying is deterministic and all-or-nothing: a command whose value does not
validate changes nothing and its result carries the reason, on every node alike.

Proposers retry a write whose fate they cannot see (its leader died): the store remembers
the last ``SESSION_WINDOW`` request ids of the last ``MAX_SESSIONS`` origins and applies a
repeated (origin, rid) as a no-op, so a retry never re-applies a write after a later one.
The table is part of the replicated state (and of snapshots), so every node agrees on it.

Watchers (callbacks or async iterators, filtered by key prefix) hear about every change,
including those a snapshot install brings, so the broker can apply config live.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import msgpack

from .validation import ValidationError, Validators

__all__ = ["ApplyResult", "Change", "Command", "ConfigStateMachine", "WatchStream"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Command:
    """One client command as it travels in a log entry."""

    op: str  # "put" | "delete"
    key: str
    value: Any = None
    origin: str = ""
    rid: int = 0

    def encode(self) -> bytes:
        return bytes(
            msgpack.packb({"op": self.op, "key": self.key, "value": self.value, "origin": self.origin, "rid": self.rid})
        )

    @classmethod
    def decode(cls, data: bytes) -> Command:
        raw = msgpack.unpackb(data, raw=False)
        return cls(raw["op"], raw["key"], raw.get("value"), raw.get("origin", ""), raw.get("rid", 0))


#: Request ids remembered per origin, and origins remembered, for deduplication.
SESSION_WINDOW = 1024
MAX_SESSIONS = 256


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What applying one command did: ``error`` is None on success; ``duplicate`` for a retry."""

    index: int
    error: str | None = None
    existed: bool = False
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class Change:
    """A key changed at log ``index``; ``value`` is None when ``deleted``."""

    key: str
    value: Any
    deleted: bool
    index: int


class WatchStream:
    """An async iterator of Changes under a prefix; close() stops it."""

    def __init__(self, unsubscribe: Callable[[], None]) -> None:
        self._queue: asyncio.Queue[Change | None] = asyncio.Queue()
        self._unsubscribe = unsubscribe

    def push(self, change: Change) -> None:
        self._queue.put_nowait(change)

    def close(self) -> None:
        self._unsubscribe()
        self._queue.put_nowait(None)

    def __aiter__(self) -> AsyncIterator[Change]:
        return self

    async def __anext__(self) -> Change:
        item = await self._queue.get()
        if item is None:
            raise StopAsyncIteration
        return item


class ConfigStateMachine:
    """Key -> JSON value, with typed validation, watches, snapshot and restore."""

    def __init__(self, validators: Validators | None = None) -> None:
        self.validators = validators or Validators()
        self._data: dict[str, Any] = {}
        #: origin -> request ids seen, oldest first (dicts keep insertion order).
        self._sessions: dict[str, dict[int, None]] = {}
        self._watchers: list[tuple[str, Callable[[Change], None]]] = []
        self.applied_index = 0

    # -------------------------------------------------------------- reads

    def get(self, key: str) -> Any:
        """The value (a deep copy, so callers cannot mutate the store) or None."""
        value = self._data.get(key)
        return copy.deepcopy(value) if value is not None else None

    def list(self, prefix: str = "") -> dict[str, Any]:
        return {k: copy.deepcopy(v) for k, v in sorted(self._data.items()) if k.startswith(prefix)}

    def __len__(self) -> int:
        return len(self._data)

    # -------------------------------------------------------------- writes

    def validate(self, command: Command) -> None:
        """Raise ValidationError if ``command`` would be refused when applied."""
        if command.op == "put":
            self.validators.check(command.key, command.value)
        elif command.op == "delete":
            self.validators.check_key(command.key)
        else:
            raise ValidationError(f"unknown operation {command.op!r}")

    def apply(self, index: int, data: bytes) -> tuple[Command | None, ApplyResult]:
        """Apply one committed entry's data; never raises for bad input (it is in the log forever)."""
        self.applied_index = index
        try:
            command = Command.decode(data)
        except Exception as exc:  # noqa: BLE001 - a log entry that does not decode is refused, not fatal
            return None, ApplyResult(index, f"undecodable command: {exc}")
        if command.origin and not self._remember(command.origin, command.rid):
            return command, ApplyResult(index, None, command.key in self._data, duplicate=True)
        try:
            self.validate(command)
        except ValidationError as exc:
            return command, ApplyResult(index, str(exc))
        existed = command.key in self._data
        if command.op == "put":
            self._data[command.key] = command.value
            self._notify(Change(command.key, command.value, False, index))
        elif existed:
            del self._data[command.key]
            self._notify(Change(command.key, None, True, index))
        return command, ApplyResult(index, None, existed)

    def _remember(self, origin: str, rid: int) -> bool:
        """Record (origin, rid); False if it was seen before (a retried proposal)."""
        seen = self._sessions.pop(origin, None)
        if seen is None:
            seen = {}
            if len(self._sessions) >= MAX_SESSIONS:
                del self._sessions[next(iter(self._sessions))]  # the least recently active origin
        self._sessions[origin] = seen  # most recently active last
        if rid in seen:
            return False
        seen[rid] = None
        if len(seen) > SESSION_WINDOW:
            del seen[next(iter(seen))]
        return True

    # -------------------------------------------------------------- snapshots

    def snapshot(self) -> bytes:
        sessions = {origin: list(rids) for origin, rids in self._sessions.items()}
        return bytes(msgpack.packb({"index": self.applied_index, "data": self._data, "sessions": sessions}))

    def restore(self, blob: bytes, index: int) -> None:
        """Replace the whole state; watchers hear about every key that differs."""
        state = msgpack.unpackb(blob, raw=False) if blob else {}
        new = state.get("data", {})
        self._sessions = {origin: dict.fromkeys(rids) for origin, rids in state.get("sessions", {}).items()}
        old, self._data = self._data, new
        self.applied_index = index
        for key in sorted(old.keys() - new.keys()):
            self._notify(Change(key, None, True, index))
        for key in sorted(new):
            if old.get(key) != new[key] or key not in old:
                self._notify(Change(key, new[key], False, index))

    # -------------------------------------------------------------- watches

    def watch(self, prefix: str, callback: Callable[[Change], None]) -> Callable[[], None]:
        """Call ``callback(change)`` for every change of a key under ``prefix``; returns unsubscribe."""
        entry = (prefix, callback)
        self._watchers.append(entry)

        def unsubscribe() -> None:
            if entry in self._watchers:
                self._watchers.remove(entry)

        return unsubscribe

    def stream(self, prefix: str = "") -> WatchStream:
        """An async iterator of changes under ``prefix`` (``async for change in sm.stream("acl/")``)."""
        holder: list[Callable[[], None]] = []
        stream = WatchStream(lambda: holder[0]())
        holder.append(self.watch(prefix, stream.push))
        return stream

    def _notify(self, change: Change) -> None:
        for prefix, callback in list(self._watchers):
            if change.key.startswith(prefix):
                try:
                    callback(change)
                except Exception:  # a broken watcher must not make replicas diverge
                    log.exception("config watcher for prefix %r failed on %s", prefix, change.key)
