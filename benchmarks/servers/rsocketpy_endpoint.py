"""rsocket-py on the serving side, with :class:`benchmarks.rsocketpy.EchoHandler`.

* ``serve --listen HOST:PORT``: an RSocketServer per TCP connection (the ``rsocket-direct`` row);
* ``provide --broker HOST:PORT``: an RSocketClient that registers :data:`frames.SERVICE` with
  the broker in its SETUP metadata and answers the requests the broker routes to it.
"""

from __future__ import annotations

import argparse
import asyncio

from rsocket.helpers import single_transport_provider
from rsocket.payload import Payload
from rsocket.rsocket_client import RSocketClient
from rsocket.rsocket_server import RSocketServer
from rsocket.transports.tcp import TransportTCP

from benchmarks import frames
from benchmarks.rsocketpy import CONNECTION_SETTINGS, READ_BUFFER_BYTES, EchoHandler, quiet_library_logs
from benchmarks.servers.common import announce, run, split_address, until_signalled


async def _serve(listen: str) -> None:
    def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        RSocketServer(
            TransportTCP(reader, writer, read_buffer_size=READ_BUFFER_BYTES),
            handler_factory=EchoHandler,
            **CONNECTION_SETTINGS,
        )

    host, port = split_address(listen)
    server = await asyncio.start_server(accept, host, port)
    bound = server.sockets[0].getsockname()
    announce(address=f"{bound[0]}:{bound[1]}")
    async with server:
        await until_signalled()


async def _provide(broker: str, instance: str) -> None:
    host, port = split_address(broker)
    reader, writer = await asyncio.open_connection(host, port)
    transport = TransportTCP(reader, writer, read_buffer_size=READ_BUFFER_BYTES)
    client = RSocketClient(
        single_transport_provider(transport),
        handler_factory=EchoHandler,
        setup_payload=Payload(metadata=frames.register_metadata(instance)),
        **CONNECTION_SETTINGS,
    )
    async with client:
        announce(address=broker, instance=instance)
        await until_signalled()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.servers.rsocketpy_endpoint", description=__doc__)
    roles = parser.add_subparsers(dest="role", required=True)
    roles.add_parser("serve").add_argument("--listen", default="127.0.0.1:0")
    provide = roles.add_parser("provide")
    provide.add_argument("--broker", required=True)
    provide.add_argument("--instance", default="rsocketpy-1")
    args = parser.parse_args(argv)
    quiet_library_logs()
    if args.role == "serve":
        run(lambda: _serve(args.listen))
    else:
        run(lambda: _provide(args.broker, args.instance))


if __name__ == "__main__":
    main()
