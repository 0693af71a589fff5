"""The two halves of a stream: items coming in under a window, items going out under credit.

* :class:`Inbound` — an async iterator over received items. It keeps at most ``window``
  items requested from the peer and asks for more (REQUEST_N, in batches of half the
  window) only as the consumer takes them, so a slow consumer slows the producer end to end.
  Dropping it before the end (``break`` out of ``async for``) or :meth:`Inbound.aclose`
  sends CANCEL. No queue and no task: a deque, and one future only while the consumer
  waits on an empty deque.
* :class:`Outbound` — one task that takes items from an (async) iterable and sends them
  while the peer has credit; it does not ask the source for the next item before it may
  send it. It yields to the event loop every :data:`BURST` items (a source that never
  waits must not starve the connection: a peer may grant 2^31-1 credits at once) and waits
  while the transport's write buffer is full, so TCP back-pressure reaches the source too.
  A CANCEL from the peer cancels the task, which closes the source (an async generator's
  ``finally`` runs).

Both talk to their connection through :class:`StreamOwner`, so they know nothing of frames.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
from typing import Any, AsyncIterable, AsyncIterator, Iterable, Protocol

from broker.client.errors import RSocketError

__all__ = ["Inbound", "Outbound", "StreamOwner", "as_async_iterator"]

log = logging.getLogger("rsbroker.client")

#: items an Outbound sends before it lets the event loop run (reads, flushes, other streams)
BURST = 64


class StreamOwner(Protocol):
    """What a stream half needs of its connection."""

    def send_request_n(self, sid: int, n: int) -> None: ...

    def send_cancel(self, sid: int) -> None: ...

    def send_next(self, sid: int, data: bytes) -> None: ...

    def send_complete(self, sid: int) -> None: ...

    def send_error(self, sid: int, exc: BaseException) -> None: ...

    def half_closed(self, sid: int, half: object) -> None: ...

    @property
    def write_paused(self) -> bool: ...

    async def writable(self) -> None: ...


class Inbound:
    """Items the peer sends on one stream, as an async iterator of bytes."""

    __slots__ = ("_owner", "sid", "_items", "_waiter", "_done", "_error", "_batch", "_taken", "__weakref__")

    def __init__(self, owner: StreamOwner, sid: int, window: int) -> None:
        if window < 1:
            raise ValueError("window must be at least 1")
        self._owner = owner
        self.sid = sid
        self._items: collections.deque[bytes] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._done = False
        self._error: BaseException | None = None
        self._batch = max(1, window // 2)
        self._taken = 0

    @property
    def done(self) -> bool:
        """The stream ended (completed, failed or canceled); buffered items may remain."""
        return self._done

    # -- from the connection --------------------------------------------------------------

    def on_next(self, data: bytes, complete: bool) -> None:
        if self._done:
            return
        self._items.append(data)
        if complete:
            self._finish(None)
        else:
            self._wake()

    def on_complete(self) -> None:
        self._finish(None)

    def on_error(self, exc: BaseException) -> None:
        self._finish(exc)

    def _finish(self, exc: BaseException | None) -> None:
        if not self._done:
            self._done = True
            self._error = exc
            self._owner.half_closed(self.sid, self)
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # -- to the consumer ------------------------------------------------------------------

    def __aiter__(self) -> "Inbound":
        return self

    async def __anext__(self) -> bytes:
        while True:
            if self._items:
                item = self._items.popleft()
                if not self._done:
                    self._taken += 1
                    if self._taken >= self._batch:
                        self._owner.send_request_n(self.sid, self._taken)
                        self._taken = 0
                return item
            if self._done:
                if self._error is not None:
                    raise self._error
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter

    async def aclose(self) -> None:
        """Stop receiving: CANCEL to the peer if the stream has not ended."""
        self.cancel()

    def cancel(self) -> None:
        if not self._done:
            self._done = True
            self._items.clear()
            self._owner.send_cancel(self.sid)
            self._owner.half_closed(self.sid, self)
            self._wake()

    async def __aenter__(self) -> "Inbound":
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cancel()

    def __del__(self) -> None:
        # ``break`` out of ``async for`` drops the iterator: that is the consumer leaving early
        if not self._done:
            try:
                self.cancel()
            except Exception:  # noqa: BLE001 — the loop may be gone at interpreter exit
                pass


def as_async_iterator(source: AsyncIterable[bytes] | Iterable[bytes]) -> AsyncIterator[bytes]:
    if hasattr(source, "__aiter__"):
        return source.__aiter__()  # type: ignore[union-attr]

    async def from_iterable() -> AsyncIterator[bytes]:
        for item in source:  # type: ignore[union-attr]
            yield item

    return from_iterable()


class Outbound:
    """Sends the items of a source on one stream while the peer grants credit."""

    __slots__ = ("_owner", "sid", "_credit", "_waiter", "task", "done")

    def __init__(self, owner: StreamOwner, sid: int, credit: int) -> None:
        self._owner = owner
        self.sid = sid
        self._credit = credit
        self._waiter: asyncio.Future[None] | None = None
        self.task: asyncio.Task[None] | None = None
        self.done = False

    def start(self, source: Any) -> None:
        """``source``: an (async) iterable of bytes, or an awaitable giving one."""
        self.task = asyncio.get_running_loop().create_task(self._run(source))

    def on_request_n(self, n: int) -> None:
        self._credit = min(self._credit + n, 0x7FFFFFFF)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def cancel(self) -> None:
        """The peer sent CANCEL (or the connection ended): stop, close the source."""
        if not self.done:
            self.done = True
            if self.task is not None:
                self.task.cancel()
            self._owner.half_closed(self.sid, self)

    async def _run(self, source: Any) -> None:
        owner, sid = self._owner, self.sid
        iterator: AsyncIterator[bytes] | None = None
        try:
            if inspect.isawaitable(source):
                source = await source
            iterator = as_async_iterator(source)
            burst = BURST
            while True:
                while self._credit <= 0:
                    self._waiter = asyncio.get_running_loop().create_future()
                    await self._waiter
                try:
                    item = await iterator.__anext__()
                except StopAsyncIteration:
                    break
                self._credit -= 1
                owner.send_next(sid, item)
                burst -= 1
                if owner.write_paused:
                    await owner.writable()
                    burst = BURST
                elif not burst:
                    await asyncio.sleep(0)
                    burst = BURST
            if not self.done:
                owner.send_complete(sid)
        except asyncio.CancelledError:
            pass  # CANCEL from the peer: nothing to send
        except Exception as exc:  # noqa: BLE001 — the error is the stream's answer
            if not isinstance(exc, RSocketError):
                log.info("stream %d handler failed: %s", sid, exc, exc_info=exc)
            if not self.done:
                owner.send_error(sid, exc)
        finally:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                try:
                    await aclose()
                except Exception:  # noqa: BLE001 — a generator failing in its cleanup cannot be answered any more
                    log.debug("stream %d source failed while closing", sid, exc_info=True)
            if not self.done:
                self.done = True
                owner.half_closed(sid, self)
