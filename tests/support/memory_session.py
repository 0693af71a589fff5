"""A real relay ``Session`` whose transport is a list: for Hypothesis tests of the relay core.

The session, its stream maps and its broker are the real ones; only the TCP/WS shell is
replaced by ``out``, the frames the shell would write (stream id already rewritten). With
``coalesce``, it queues frames as the TCP shell does (length-prefixed, appended to
``wire_out`` by the hot path) and splits them into ``out`` when flushed or taken.
"""

from __future__ import annotations

from typing import Any

from broker.relay import Broker
from broker.session import Session, State
from tests.support.rawclient import Frame

__all__ = ["MemorySession"]


class MemorySession(Session):
    """A session whose transport is a list of the frames it would write."""

    plain_name = "memory"

    def __init__(self, broker: Broker, port: int, coalesce: bool = False) -> None:
        super().__init__(broker, ("127.0.0.1", port))
        self.out: list[bytes] = []
        if coalesce:
            self.wire_out = bytearray()
            self._queued = False
        broker.add_session(self)

    def forward(self, sid: bytes, buf: Any, off: int, end: int) -> None:
        self.out.append(sid + bytes(buf[off + 4 : end]))

    def send_frame(self, frame: bytes) -> None:
        if self.state is State.CLOSED:
            return
        if self.wire_out is None:
            self.out.append(frame)
        else:  # in order with the frames the hot path queued
            self.wire_out += len(frame).to_bytes(3, "big") + frame

    def flush(self) -> None:
        """Split what is queued in ``wire_out`` (coalescing) into ``out``."""
        wire = self.wire_out
        if wire:
            self.wire_out, self._queued = bytearray(), False
            pos = 0
            while pos < len(wire):
                end = pos + 3 + int.from_bytes(wire[pos : pos + 3], "big")
                self.out.append(bytes(wire[pos + 3 : end]))
                pos = end

    def _close_transport(self) -> None:
        self.connection_closed()

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def feed(self, frame: bytes) -> None:
        """Deliver one frame, as the shells do: nothing once the broker decided to close."""
        if not self.closing:
            self.handle_frame(frame, 0, len(frame))

    def take(self) -> list[Frame]:
        self.flush()
        out, self.out = self.out, []
        return [Frame(f) for f in out]
