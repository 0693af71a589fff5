"""Run a handler coroutine without a task when it finishes without waiting.

Most request-response handlers compute their answer and return; wrapping each in an
``asyncio.Task`` costs more than the handler. :func:`start` runs the coroutine's first step
at once (what Python 3.12's eager tasks do) and only makes a task for a coroutine that
actually suspends, resuming it where it stopped.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Coroutine, Generator

__all__ = ["start"]

Done = Callable[[Any, BaseException | None], None]


class _Resume:
    """Awaitable that continues a coroutine already stepped once (it yielded ``first``)."""

    __slots__ = ("coro", "first")

    def __init__(self, coro: Coroutine[Any, Any, Any], first: Any) -> None:
        self.coro = coro
        self.first = first

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, value = self.coro, self.first
        while True:
            try:
                sent = yield value
            except BaseException as exc:  # noqa: BLE001 — cancellation and errors go to the handler
                try:
                    value = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    value = coro.send(sent)
                except StopIteration as stop:
                    return stop.value


async def _finish(coro: Coroutine[Any, Any, Any], first: Any) -> Any:
    return await _Resume(coro, first)


def start(coro: Coroutine[Any, Any, Any], done: Done) -> "asyncio.Task[Any] | None":
    """Step ``coro``; call ``done(result, None)`` or ``done(None, exc)`` when it ends.

    Returns None when it ended in the first step, else the task finishing it (cancel the
    task to cancel the handler).
    """
    try:
        first = coro.send(None)
    except StopIteration as stop:
        done(stop.value, None)
        return None
    except Exception as exc:  # noqa: BLE001 — a handler's error is its answer
        done(None, exc)
        return None
    task = asyncio.get_running_loop().create_task(_finish(coro, first))

    def finished(t: "asyncio.Task[Any]") -> None:
        if t.cancelled():
            done(None, asyncio.CancelledError())
        else:
            exc = t.exception()
            done(None if exc else t.result(), exc)

    task.add_done_callback(finished)
    return task
