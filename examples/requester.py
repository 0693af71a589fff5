"""Call the demo service through the broker with every interaction model.

    python examples/requester.py --tcp 127.0.0.1:7000      (after `rsbroker demo`)
    python examples/requester.py --tcp ws://127.0.0.1:7001/rsocket
"""

from __future__ import annotations

import argparse
import asyncio

from broker.client import RSocketError, connect


async def main(address: str, token: str | None) -> None:
    async with connect(address, token=token) as client:
        reply = await client.request_response("demo.greeter.hello", b"ada")
        print("request-response:", reply.decode())

        items = [item.decode() async for item in client.request_stream("demo.greeter.count", b"5", window=2)]
        print("request-stream:  ", items)

        echoed = client.request_channel("demo.greeter.echo", [b"alpha", b"beta", b"gamma"])
        print("request-channel: ", [item.decode() async for item in echoed])

        await client.fire_and_forget("demo.greeter.log", b"remember me")
        await asyncio.sleep(0.1)
        logged = await client.request_response("demo.greeter.logged", b"")
        print("fire-and-forget: ", logged.decode())

        try:
            await client.request_response("demo.nobody.hello", b"")
        except RSocketError as exc:
            print(f"error:            code 0x{exc.code:x}: {exc.message}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tcp", default="127.0.0.1:7000", help="broker address: HOST:PORT or ws://HOST:PORT/rsocket")
    parser.add_argument("--token", help="bearer JWT when the broker has authentication on")
    args = parser.parse_args()
    asyncio.run(main(args.tcp, args.token))
