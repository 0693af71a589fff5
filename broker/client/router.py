"""Routes to handlers, for a connection that serves requests (a provider).

::

    router = Router()

    @router.response("com.acme.greeter.hello")
    async def hello(data: bytes) -> bytes: ...

    @router.stream("com.acme.greeter.count")          # an async generator of bytes
    async def count(data: bytes, request: Request): ...

    @router.channel("com.acme.greeter.echo")          # takes the inbound async iterator
    async def echo(items: AsyncIterator[bytes]): ...

A handler takes the request's data (for a channel: the inbound items, the first one
included) and, when it declares a second parameter, the :class:`Request` with the route, the
raw composite metadata and who asked (for services whose policy forwards the principal). The route is the first routing tag, as the broker routes on it.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Iterable, TypeVar

from broker import metadata as md
from broker.frames import FrameType

__all__ = ["Handler", "Request", "Router"]

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class Request:
    """What a handler may want besides the data: the route, the request's metadata and, for
    services that opted in, who asked (:attr:`principal`)."""

    route: str
    #: composite metadata as the requester sent it (routing tag included)
    metadata: bytes

    def entry(self, mime: str) -> bytes | None:
        """The content of the first composite-metadata entry of type ``mime``, or None."""
        return md.find_entry(self.metadata, mime)

    @property
    def principal(self) -> str | None:
        """Who asked: the subject the broker authenticated the requester as, or None.

        The broker adds it (``message/x.rsbroker.principal.v0``) only for services whose
        policy has ``"forward_principal": true`` and only for authenticated requesters; it
        refuses any request that carries the entry itself, so the entry cannot be forged
        through the broker. A provider reached directly (no broker) must not trust it.
        """
        entry = md.find_entry(self.metadata, md.PRINCIPAL_MIME)
        return entry.decode("utf-8", "replace") if entry is not None else None


@dataclass(frozen=True, slots=True)
class Handler:
    """A registered handler and whether it takes a :class:`Request` as second argument."""

    fn: Callable[..., Any]
    wants_request: bool

    def call(self, first: Any, request: Request | None) -> Any:
        """Call the handler; ``request`` may be None for a handler that does not take one."""
        return self.fn(first, request) if self.wants_request else self.fn(first)


def _wants_request(fn: Callable[..., Any]) -> bool:
    positional = [
        p
        for p in inspect.signature(fn).parameters.values()
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    if not 1 <= len(positional) <= 2:
        raise TypeError(f"handler {fn.__qualname__} must take (data) or (data, request)")
    return len(positional) == 2


class Router:
    """Handlers by interaction model and route."""

    def __init__(self) -> None:
        self._handlers: dict[tuple[int, str], Handler] = {}

    def _register(self, kind: int, route: str) -> Callable[[F], F]:
        if not route or len(route.encode()) > 255:
            raise ValueError(f"route {route!r} must be 1 to 255 UTF-8 bytes (one routing tag)")

        streaming = kind in (FrameType.REQUEST_STREAM, FrameType.REQUEST_CHANNEL)

        def decorate(fn: F) -> F:
            if not (inspect.iscoroutinefunction(fn) or (streaming and inspect.isasyncgenfunction(fn))):
                kinds = "an async generator or an async def" if streaming else "an async def"
                raise TypeError(f"handler {fn.__qualname__} for {route!r} must be {kinds}")
            if (kind, route) in self._handlers:
                raise ValueError(f"route {route!r} already has a {FrameType(kind).name} handler")
            self._handlers[(kind, route)] = Handler(fn, _wants_request(fn))
            return fn

        return decorate

    def response(self, route: str) -> Callable[[F], F]:
        """``async def (data[, request]) -> bytes``: request-response."""
        return self._register(FrameType.REQUEST_RESPONSE, route)

    def stream(self, route: str) -> Callable[[F], F]:
        """An async generator (or a coroutine returning an async iterable) of bytes: request-stream.
        It is asked for the next item only while the requester has credit left."""
        return self._register(FrameType.REQUEST_STREAM, route)

    def channel(self, route: str) -> Callable[[F], F]:
        """``(items: AsyncIterator[bytes][, request])`` returning an async iterable of bytes."""
        return self._register(FrameType.REQUEST_CHANNEL, route)

    def fire_and_forget(self, route: str) -> Callable[[F], F]:
        """``async def (data[, request]) -> None``; its errors are logged, never answered."""
        return self._register(FrameType.REQUEST_FNF, route)

    def metadata_push(self, route: str) -> Callable[[F], F]:
        """``async def (metadata[, request])`` for a METADATA_PUSH routed to ``route``."""
        return self._register(FrameType.METADATA_PUSH, route)

    def find(self, kind: int, route: str) -> Handler | None:
        return self._handlers.get((kind, route))

    def services(self) -> list[str]:
        """The services this router's routes belong to (``service.method`` → ``service``)."""
        return list(dict.fromkeys(md.service_of(route) for _, route in self._handlers))

    def routes(self) -> Iterable[tuple[str, str]]:
        """``(model, route)`` for each handler, e.g. ``("REQUEST_RESPONSE", "svc.hello")``."""
        return [(FrameType(kind).name, route) for kind, route in self._handlers]
