"""A frame-speaking RSocket responder: the cheapest honest server the suite can put behind a load.

It answers requests itself without a client library: REQUEST_RESPONSE gets one
PAYLOAD(next|complete) echoing the request data; REQUEST_STREAM gets PAYLOAD(next) frames
echoing the request data, as many as the requester's REQUEST_N credit allows; REQUEST_FNF is
counted; REQUEST_CHANNEL is refused with an APPLICATION_ERROR. Metadata is skipped, never
decoded.

Two roles, same code, so that "through the broker" and "direct" differ only by the broker:

* ``serve --listen HOST:PORT``: a TCP server (the suite's ``raw-asyncio`` ceiling);
* ``provide --broker HOST:PORT``: connects to a broker and registers :data:`frames.SERVICE`.
"""

from __future__ import annotations

import argparse
import asyncio
import json

from benchmarks import frames
from benchmarks.servers.common import announce, run, split_address, until_signalled

_PAYLOAD_NEXT_COMPLETE = (frames.PAYLOAD << 10) | frames.FLAG_NEXT | frames.FLAG_COMPLETE
#: frames emitted for one stream per event-loop turn, so an unbounded REQUEST_N cannot starve others.
_STREAM_BURST = 1024


class Responder(frames.FrameProtocol):
    """One connection's worth of answering; ``setup`` is sent first when acting as a provider."""

    def __init__(self, setup: bytes | None = None) -> None:
        super().__init__()
        self._setup = setup
        #: stream id -> [pre-built PAYLOAD(next) frame, outstanding credit]
        self._streams: dict[int, list] = {}
        #: streams whose credit exceeds what one burst sent
        self._backlog: set[int] = set()
        self._pumping = False
        self.fire_and_forget = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self._setup is not None:
            self.out += frames.tcp(self._setup)
            self.flush()

    def frame_received(self, buf: bytearray, start: int, end: int) -> None:
        stream_id, type_flags = frames.HEADER.unpack_from(buf, start)
        frame_type = type_flags >> 10
        if frame_type == frames.REQUEST_RESPONSE:
            data = frames.data_offset(buf, start, type_flags)
            out = self.out
            out += (end - data + 6).to_bytes(3, "big")
            out += frames.HEADER.pack(stream_id, _PAYLOAD_NEXT_COMPLETE)
            out += buf[data:end]
        elif frame_type == frames.REQUEST_FNF:
            self.fire_and_forget += 1
        elif frame_type == frames.REQUEST_STREAM:
            data = frames.data_offset(buf, start, type_flags, fixed=4)
            initial = int.from_bytes(buf[start + 6 : start + 10], "big")
            body = frames.header(stream_id, frames.PAYLOAD, frames.FLAG_NEXT) + bytes(buf[data:end])
            self._streams[stream_id] = [frames.tcp(body), initial]
            self._emit(stream_id)
        elif frame_type == frames.REQUEST_N:
            stream = self._streams.get(stream_id)
            if stream is not None:
                stream[1] += int.from_bytes(buf[start + 6 : start + 10], "big")
                self._emit(stream_id)
        elif frame_type == frames.CANCEL:
            self._streams.pop(stream_id, None)
        elif frame_type == frames.REQUEST_CHANNEL:
            self.out += frames.tcp(frames.error(stream_id, frames.ERROR_APPLICATION, "channel not supported"))
        elif stream_id == 0:
            self.connection_frame(frame_type, type_flags & 0x3FF, buf, start, end)

    def _emit(self, stream_id: int) -> None:
        """Send what the stream's credit allows, a burst at most; the pump sends the rest later."""
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        count = min(stream[1], _STREAM_BURST)
        if count:
            self.out += stream[0] * count
            stream[1] -= count
        if stream[1]:
            self._backlog.add(stream_id)
            if not self._pumping:
                self._pumping = True
                asyncio.get_running_loop().create_task(self._pump())

    async def _pump(self) -> None:
        """Emit bursts for streams with credit left, one round per event-loop turn, while writable."""
        try:
            while self._backlog and self.is_open:
                await self.writable()
                await asyncio.sleep(0)
                waiting, self._backlog = self._backlog, set()
                for stream_id in waiting:
                    self._emit(stream_id)
                self.flush()
        finally:
            self._pumping = False


async def _serve(listen: str) -> None:
    host, port = split_address(listen)
    server = await asyncio.get_running_loop().create_server(Responder, host, port)
    bound = server.sockets[0].getsockname()
    announce(address=f"{bound[0]}:{bound[1]}")
    async with server:
        await until_signalled()


async def _provide(broker: str, instance: str, tags: dict[str, str]) -> None:
    host, port = split_address(broker)
    setup = frames.setup(Responder.keepalive_ms, Responder.lifetime_ms, frames.register_metadata(instance, tags=tags))
    transport, protocol = await asyncio.get_running_loop().create_connection(lambda: Responder(setup), host, port)
    announce(address=broker, instance=instance)
    stop = asyncio.ensure_future(until_signalled())
    await asyncio.wait([stop, protocol.closed], return_when=asyncio.FIRST_COMPLETED)
    stop.cancel()
    transport.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.servers.responder", description=__doc__)
    roles = parser.add_subparsers(dest="role", required=True)
    roles.add_parser("serve").add_argument("--listen", default="127.0.0.1:0")
    provide = roles.add_parser("provide")
    provide.add_argument("--broker", required=True)
    provide.add_argument("--instance", default="responder-1")
    provide.add_argument("--tags", type=json.loads, default={}, help="registration tags as a JSON object")
    args = parser.parse_args(argv)
    if args.role == "serve":
        run(lambda: _serve(args.listen))
    else:
        run(lambda: _provide(args.broker, args.instance, args.tags))


if __name__ == "__main__":
    main()
