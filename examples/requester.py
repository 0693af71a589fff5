"""Call the demo service through the broker with every interaction model.

    python examples/requester.py --tcp 127.0.0.1:7000      (after `rsbroker demo`)
"""

from __future__ import annotations

import argparse
import asyncio

from rsocket.awaitable.awaitable_rsocket import AwaitableRSocket
from rsocket.payload import Payload
from rsocket.streams.stream_from_generator import StreamFromGenerator

from broker.client import connect, route


async def main(host: str, port: int) -> None:
    async with connect(host, port) as raw:
        client = AwaitableRSocket(raw)
        reply = await client.request_response(Payload(b"ada", route("demo.greeter.hello")))
        print("request-response:", reply.data.decode())

        items = await client.request_stream(Payload(b"5", route("demo.greeter.count")))
        print("request-stream:  ", [p.data.decode() for p in items])

        def words():
            for i, word in enumerate([b"alpha", b"beta", b"gamma"]):
                yield Payload(word), i == 2

        echoed = await client.request_channel(Payload(b"start", route("demo.greeter.echo")), StreamFromGenerator(words))
        print("request-channel: ", [p.data.decode() for p in echoed if p.data])

        await client.fire_and_forget(Payload(b"remember me", route("demo.greeter.log")))
        await asyncio.sleep(0.1)
        logged = await client.request_response(Payload(b"", route("demo.greeter.logged")))
        print("fire-and-forget: ", logged.data.decode())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tcp", default="127.0.0.1:7000", help="broker TCP address")
    args = parser.parse_args()
    host, port = args.tcp.rsplit(":", 1)
    asyncio.run(main(host, int(port)))
