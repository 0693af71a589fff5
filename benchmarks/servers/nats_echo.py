"""A nats-py responder: replies to every message on ``bench.echo`` that has a reply subject.

``python -m benchmarks.servers.nats_echo --server HOST:PORT`` (a running nats-server).
Messages without a reply subject are the fire-and-forget load and are dropped after delivery;
because they share the subject (and so the subscription's ordered queue) with requests, a
request's reply proves every message published before it was handled.
"""

from __future__ import annotations

import argparse

import nats
from nats.aio.msg import Msg

from benchmarks.servers.common import announce, run, until_signalled

SUBJECT = "bench.echo"


async def _serve(server: str) -> None:
    nc = await nats.connect(f"nats://{server}", pending_size=8 * 1024 * 1024)

    async def reply(msg: Msg) -> None:
        if msg.reply:
            await nc.publish(msg.reply, msg.data)

    await nc.subscribe(SUBJECT, cb=reply, pending_msgs_limit=1_000_000, pending_bytes_limit=1 << 30)
    await nc.flush()
    announce(address=server)
    try:
        await until_signalled()
    finally:
        await nc.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.servers.nats_echo", description=__doc__)
    parser.add_argument("--server", required=True, help="nats-server client address HOST:PORT")
    args = parser.parse_args(argv)
    run(lambda: _serve(args.server))


if __name__ == "__main__":
    main()
