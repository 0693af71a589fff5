"""The owner of a node's long-lived background tasks: it notices when one dies.

A background loop (gossip's timer, the Raft loop, a link's reconnect loop) that raises ends
silently in asyncio: the node keeps answering its health probe while failure detection, or
every config write, has stopped for good. Each such task is handed to :meth:`Supervisor.watch`
(or started with :meth:`Supervisor.spawn`); when one ends other than by cancellation the cause
is logged once, recorded in :attr:`Supervisor.failures`, and ``/health/live`` answers 503 so
that an orchestrator restarts the node. A loop that returns is a failure too: these loops
only end when cancelled.

A full disk is named as such (``storage full: ...``) everywhere the cause is shown, because
the remedy (free space, a bigger volume) differs from that of a bug.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import Coroutine
from typing import Any

__all__ = ["Supervisor", "describe_failure", "is_storage_full"]

log = logging.getLogger("rsbroker.supervisor")


def is_storage_full(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or what caused it) is a full disk (ENOSPC, EDQUOT)."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if str(exc).startswith("storage full"):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def describe_failure(exc: BaseException | None) -> str:
    """One line for an operator: ``storage full: ...`` for a full disk, else the exception."""
    if exc is None:
        return "the task returned, but it should run until the node stops"
    if is_storage_full(exc):
        return str(exc) if str(exc).startswith("storage full") else f"storage full: {exc}"
    return f"{type(exc).__name__}: {exc}"


class Supervisor:
    """Watches named tasks; a task that dies makes the node unhealthy."""

    def __init__(self) -> None:
        #: task name → one-line cause, for ``/health/live`` and metrics
        self.failures: dict[str, str] = {}
        self._stopping = False
        self._watched: set[asyncio.Task[Any]] = set()

    @property
    def healthy(self) -> bool:
        return not self.failures

    @property
    def storage_full(self) -> bool:
        return any(cause.startswith("storage full") for cause in self.failures.values())

    def spawn(self, name: str, coro: Coroutine[Any, Any, Any], *, forever: bool = True) -> asyncio.Task[Any]:
        """Start ``coro`` as a supervised task."""
        return self.watch(name, asyncio.get_running_loop().create_task(coro, name=name), forever=forever)

    def watch(self, name: str, task: asyncio.Task[Any], *, forever: bool = True) -> asyncio.Task[Any]:
        """Supervise ``task`` (watching the same task twice is harmless). ``forever=False`` for a
        task that may end by itself once its job is done (only an exception is a failure)."""
        if task not in self._watched:
            self._watched.add(task)
            task.add_done_callback(lambda done: self._ended(name, done, forever))
        return task

    def fail(self, name: str, cause: str, exc: BaseException | None = None) -> None:
        """Record that ``name`` failed (logged once per name, with the traceback if any)."""
        if name in self.failures:
            return
        self.failures[name] = cause
        log.error("background task %r failed: %s; the node reports itself not live", name, cause, exc_info=exc)

    def stopping(self) -> None:
        """The node is shutting down: tasks ending now are no failure."""
        self._stopping = True

    def _ended(self, name: str, task: asyncio.Task[Any], forever: bool) -> None:
        self._watched.discard(task)
        if self._stopping or task.cancelled():
            return
        exc = task.exception()
        if exc is None and not forever:
            return
        self.fail(name, describe_failure(exc), exc)
